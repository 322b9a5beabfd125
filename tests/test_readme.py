"""The README's code must work as written: the Python snippet runs verbatim, the Quick start is two commands."""

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


def test_use_it_from_python_snippet_runs_verbatim(readme, repo_root):
    blocks = code_blocks(section(readme, "Use it from Python"), "python")
    assert len(blocks) == 1
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
