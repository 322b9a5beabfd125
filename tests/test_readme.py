"""The README's code must work as written: the Python snippets run verbatim, the Quick start is two commands,
the file table is the reading path, in order; bench/README.md's ablation means are the means of their seeds, and
every figure the README's benchmark summary quotes is one of bench/README.md's."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def section(readme: str, heading: str) -> str:
    """The text under `## heading`, up to the next heading of level 1 or 2."""
    match = re.search(rf"^##\s+{re.escape(heading)}\s*$(.*?)(?=^#{{1,2}}\s|\Z)", readme, flags=re.M | re.S)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)


@pytest.fixture(scope="module")
def readme(repo_root) -> str:
    return (repo_root / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def bench_readme(repo_root) -> str:
    return (repo_root / "bench" / "README.md").read_text(encoding="utf-8")


def test_use_it_from_python_snippet_runs_verbatim(readme, repo_root):
    blocks = code_blocks(section(readme, "Use it from Python"), "python")
    assert len(blocks) == 2
    proc = subprocess.run(
        [sys.executable, "-c", blocks[0]], cwd=repo_root, capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stdout.strip()) >= 50  # the prompt plus 100 generated characters
    if "Your prompt here" in blocks[0]:
        assert proc.stdout.startswith("Your prompt here")


def test_quick_start_is_two_bash_blocks_and_the_second_runs_pytest(readme):
    quick_start = section(readme, "Quick start")
    blocks = code_blocks(quick_start, "bash")
    assert len(blocks) == 2
    assert quick_start.count("```bash") == 2
    train_cmds = [c.strip() for c in blocks[0].strip().split("&&")]
    assert "python src/train.py" in train_cmds
    assert any(c.startswith("python src/sample.py") for c in train_cmds)
    test_cmds = [c.strip() for c in blocks[1].strip().split("&&")]
    assert test_cmds[-1] == "python -m pytest"
    assert "pip install -r requirements-dev.txt" in test_cmds


def test_the_load_pretrained_snippet_decodes_with_the_checkpoints_own_tokenizer(readme, repo_root, tmp_path,
                                                                               run_cli, tiny_text):
    """Run the README's second snippet verbatim in a folder whose `out/` holds a BPE run: the text it prints
    decodes with that run's BPE vocabulary (the module-level char `decode` would fail or print other text)."""
    snippet = code_blocks(section(readme, "Use it from Python"), "python")[1]
    assert 'load_pretrained("out")' in snippet
    data = tmp_path / "plays.txt"
    data.write_text(("ROMEO:\n" + tiny_text[:400] + "\n\n") * 8, encoding="utf-8")
    proc = run_cli("src/train.py", "--data", data, "--out-dir", tmp_path / "out", "--cache-dir", tmp_path / "cache",
                   "--tokenizer", "bpe", "--vocab-size", "300", "--n-layer", "1", "--d-model", "32",
                   "--block-size", "16", "--batch-size", "4", "--max-iters", "2", "--eval-iters", "1",
                   "--sample-tokens", "0", "--peak-flops", "1e12", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(repo_root)}
    ran = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("ROMEO:")
    # The ids were BPE ids (up to 299): the module-level char `decode` (71 characters) could not have
    # printed them, so a snippet that used it would have failed above.
    from src.engine.checkpoint import load_pretrained

    model, tokenizer = load_pretrained(tmp_path / "out")
    assert tokenizer.kind == "bpe" and model.config.vocab_size == 300


def test_the_file_table_is_the_reading_path_in_order(readme, repo_root):
    table = section(readme, "What each file teaches")
    listed = re.findall(r"^\| `src/(\w+)\.py` \|", table, flags=re.M)
    on_disk = sorted(p.stem for p in (repo_root / "src").glob("*.py") if p.stem != "__init__")
    assert sorted(listed) == on_disk
    assert listed == ["tokenizer", "bpe", "dataloader", "bigram", "model", "sampling", "generate", "train", "sample",
                      "pictures", "playground", "prepare", "evaluate"]


def test_the_learn_section_counts_the_tutorials_chapters(readme, repo_root):
    learn = section(readme, "Learn")
    chapters = sorted((repo_root / "tutorial").glob("[0-9][0-9]-*.md"))
    words = {12: "twelve", 13: "thirteen", 14: "fourteen"}
    assert f"{words[len(chapters)]} chapters" in learn
    assert "tutorial/README.md" in learn and "tutorial/debugging.md" in learn


def seed_tables(readme: str) -> list[list[list[str]]]:
    """Every table whose header has columns "seed 1 | seed 2 | ... | mean": the ablations. Rows as cells."""
    tables, rows = [], None
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells and "mean" in cells and any(re.fullmatch(r"seed \d+", c) for c in cells):
            rows = [cells]
            tables.append(rows)
        elif cells and rows is not None:
            rows.append(cells)
        else:
            rows = None
    return tables


def test_every_ablation_mean_is_the_mean_of_its_seeds(readme, bench_readme):
    """The ablation tables' means are typed by hand from the benchmark's per-seed losses: each must be their
    mean to the 4 decimals shown, or a row (and what the text concludes from it) is wrong."""
    tables = seed_tables(readme) + seed_tables(bench_readme)
    assert len(seed_tables(bench_readme)) >= 10, "bench/README.md's ablation tables were not found"
    for header, _separator, *rows in tables:
        seeds = [i for i, c in enumerate(header) if re.fullmatch(r"seed \d+", c)]
        mean = header.index("mean")
        for row in rows:
            values = [float(row[i]) for i in seeds]
            stated = float(row[mean].strip("*"))
            assert abs(sum(values) / len(values) - stated) <= 0.00006, f"ablation row {row}: mean {stated}"


def figures(text: str) -> set[str]:
    """The numbers a text states (1.4793, 2,033, 2.28x, 99%), as written."""
    return set(re.findall(r"(?<![\w.])\d(?:[\d,]*\d)?(?:\.\d+)?(?:x|%)?(?![\w])", text))


def test_the_benchmark_summary_quotes_bench_readme(readme, bench_readme):
    """The README keeps the headline figures and bench/README.md the tables they come from: a figure in the
    summary that bench/README.md does not state was mistyped, or outlived the table it came from."""
    summary = section(readme, "Benchmarks")
    assert "bench/README.md" in summary
    stated = figures(bench_readme)
    missing = sorted(f for f in figures(summary) if f not in stated)
    assert not missing, f"README's benchmark figures not in bench/README.md: {missing}"
    assert len(figures(summary)) >= 30
