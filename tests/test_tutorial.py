"""The tutorial (tutorial/): every chapter's two files say the same thing, every chapter runs from top to bottom
in a real Jupyter kernel (CI's quick profile), every exercise's tests fail on the untouched stub and pass on the
worked solution, and tutorial/README.md lists every chapter.

A chapter runs with TUTORIAL_PROFILE=fast, OMP_NUM_THREADS=2 and the session's temporary GPT_SCRATCH_CACHE
(conftest.py), so nothing is written into the repository. Each notebook's cells hold their own asserts on the
numbers the text quotes: running it is the test.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import jupytext  # requirements-dev.txt: jupytext, nbformat, nbclient, ipykernel
import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = REPO_ROOT / "tutorial"
EXERCISES = TUTORIAL / "exercises"
CHAPTERS = sorted(TUTORIAL.glob("[0-9][0-9]-*.md"))
EXERCISE_TESTS = sorted(EXERCISES.glob("test_ex[0-9][0-9]_*.py"))


def load_runner():
    """tutorial/run_chapters.py, the same code a learner or maintainer runs to time the chapters."""
    spec = importlib.util.spec_from_file_location("run_chapters", TUTORIAL / "run_chapters.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cells(notebook) -> list[tuple[str, str]]:
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_there_are_chapters_and_each_is_a_pair():
    assert [p.stem for p in CHAPTERS][:4] == ["00-setup", "01-text-to-numbers", "02-batches", "03-bigram-and-the-loss"]
    notebooks = sorted(p.stem for p in TUTORIAL.glob("*.ipynb"))
    assert notebooks == [p.stem for p in CHAPTERS], "every NN-name.md has its NN-name.ipynb and nothing else"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_notebook_is_in_sync_with_its_markdown_and_has_no_outputs(chapter):
    notebook = chapter.with_suffix(".ipynb")
    fix = f"regenerate it: jupytext --update --set-kernel python3 --to ipynb tutorial/{chapter.name}"
    assert cells(jupytext.read(chapter)) == cells(jupytext.read(notebook)), f"{notebook.name} is out of date: {fix}"
    raw = nbformat.read(notebook, as_version=4)
    assert raw.metadata.get("kernelspec", {}).get("name") == "python3", f"{notebook.name} names no kernel: {fix}"
    for index, cell in enumerate(raw.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{notebook.name} cell {index} ran: {fix}"


def test_every_chapter_starts_with_the_same_setup_cell():
    first_code = {p.stem: next(c.source for c in jupytext.read(p).cells if c.cell_type == "code") for p in CHAPTERS}
    setup = first_code[CHAPTERS[0].stem]
    assert all(source == setup for source in first_code.values()), "copy 00-setup's set-up cell into every chapter"
    assert 'REPO_URL = "' in setup and '"google.colab" in sys.modules' in setup and "TUTORIAL_PROFILE" in setup


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_has_a_goal_a_what_goes_wrong_box_and_an_exercise(chapter):
    text = chapter.read_text(encoding="utf-8")
    assert text.startswith(f"# Chapter {int(chapter.name[:2])} · ")
    assert "**Goal:**" in text
    assert re.search(r"^> \*\*What goes wrong\*\*", text, re.MULTILINE)
    assert "\n## Exercise\n" in text


def test_the_readme_lists_every_chapter_with_its_times_and_colab_link():
    readme = (TUTORIAL / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if re.match(r"\| \[\d\d-", line)]
    listed = [re.match(r"\| \[(\d\d-[\w-]+)\]\(\1\.md\)", row).group(1) for row in rows]
    assert listed == [p.stem for p in CHAPTERS]
    for stem, row in zip(listed, rows, strict=True):
        columns = row.split("|")[1:-1]
        assert re.fullmatch(r" (\d+ min )?\d+ s ", columns[2]) and re.fullmatch(r" (\d+ min )?\d+ s ", columns[3]), row
        assert f"colab.research.google.com/github/your-name/gpt2-from-scratch/blob/main/tutorial/{stem}.ipynb" in row
    assert "2-core AMD EPYC" in readme and "torch 2.13" in readme


def test_the_kernel_is_this_python(tmp_path):
    """Chapters run in ipykernel's "python3" kernel, which must be this very Python (this venv, its packages)."""
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    NotebookClient(nb, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = nb.cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_the_chapter_runs_in_the_fast_profile(chapter):
    cache = os.environ.get("GPT_SCRATCH_CACHE", "")
    assert cache and not Path(cache).resolve().is_relative_to(REPO_ROOT), "caches must not go into the repo"
    runner = load_runner()
    try:
        seconds = runner.run_chapter(chapter, profile="fast", timeout=300, threads=2)
    except runner.ChapterFailed as err:
        pytest.fail(str(err), pytrace=False)
    print(f"{chapter.stem}: {seconds:.1f} s")


# --- exercises: every test fails on the stub and passes on the solution -----------------------------------------

RESULT = re.compile(r"^(PASSED|FAILED|ERROR) (tutorial/exercises/test_ex\w+\.py)::(\S+)", re.MULTILINE)


def run_exercise_tests(solutions: bool) -> dict[str, dict[str, str]]:
    """Run every exercise's tests in one pytest process: {test file: {test name: PASSED/FAILED/ERROR}}."""
    env = dict(os.environ)
    env.pop("EXERCISE_SOLUTIONS", None)
    if solutions:
        env["EXERCISE_SOLUTIONS"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    files = [str(p.relative_to(REPO_ROOT)) for p in EXERCISE_TESTS]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-n", "0", *files],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    results: dict[str, dict[str, str]] = {}
    for outcome, file, name in RESULT.findall(proc.stdout):
        results.setdefault(Path(file).name, {})[name] = outcome
    assert results, proc.stdout[-3000:] + proc.stderr[-3000:]
    return results


@pytest.fixture(scope="module")
def exercise_results() -> dict[bool, dict[str, dict[str, str]]]:
    return {False: run_exercise_tests(solutions=False), True: run_exercise_tests(solutions=True)}


def test_every_exercise_has_a_stub_tests_and_a_solution():
    assert EXERCISE_TESTS, "no exercises found"
    for test_file in EXERCISE_TESTS:
        name = test_file.stem.removeprefix("test_")
        assert (EXERCISES / f"{name}.py").exists() and (EXERCISES / "solutions" / f"{name}.py").exists(), name
        assert f'EXERCISE = "{name}"' in test_file.read_text(encoding="utf-8"), test_file.name
        chapter = [p for p in CHAPTERS if p.name[:2] == name[2:4]]
        assert chapter and f"exercises/{name}.py" in chapter[0].read_text(encoding="utf-8"), f"no chapter links {name}"
    linked = (EXERCISES / "README.md").read_text(encoding="utf-8")
    assert all(p.name in linked for p in EXERCISE_TESTS), "exercises/README.md lists every exercise"


@pytest.mark.slow
@pytest.mark.parametrize("test_file", EXERCISE_TESTS, ids=lambda p: p.stem)
def test_the_exercise_tests_fail_on_the_stub_and_pass_on_the_solution(exercise_results, test_file):
    on_stub = exercise_results[False].get(test_file.name, {})
    on_solution = exercise_results[True].get(test_file.name, {})
    assert on_solution, f"{test_file.name}: no test ran"
    assert set(on_solution.values()) == {"PASSED"}, f"the solution fails: {on_solution}"
    assert on_stub.keys() == on_solution.keys() and set(on_stub.values()) == {"FAILED"}, (
        f"every test must fail on the untouched stub: {on_stub}")
