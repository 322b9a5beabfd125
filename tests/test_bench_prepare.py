"""Tests for bench/prepare.py: the 1-worker and N-worker runs take turns, bad flags get one line, and a small
run prints its table with the machine named.

The speed-up of N workers over 1 is the benchmark's headline; timed one configuration after another, a quiet
or a busy minute of this shared machine would land on one side of that ratio only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from src.engine.perf import cpu_description
from tests.conftest import load_bench


def test_configurations_take_turns_and_the_fastest_run_of_each_counts(monkeypatch, tmp_path):
    bench = load_bench("prepare")
    calls, seconds = [], iter([5.0, 4.0, 3.0, 2.0, 1.0, 6.0, 7.0, 8.0, 0.5, 9.0, 9.0, 9.0])

    def fake_run(corpus, tokenizer, workers, work):
        calls.append((tokenizer.name, workers))
        return {"seconds": next(seconds), "sha": "same"}

    monkeypatch.setattr(bench, "run_prepare", fake_run)
    tokenizers = {"BPE": Path("bpe.json"), "char": Path("char.json")}
    rows = bench.time_in_turns(tokenizers, [1, 2], tmp_path, tmp_path, repeats=3)

    configurations = [("bpe.json", 1), ("bpe.json", 2), ("char.json", 1), ("char.json", 2)]
    rounds = [calls[i : i + 4] for i in range(0, 12, 4)]
    assert all(sorted(r) == configurations for r in rounds)  # every round runs every configuration once
    assert [r[0] for r in rounds] == configurations[:3]  # starting one further along each round
    best = {(row["tokenizer"], row["workers"]): row["seconds"] for row in rows}
    assert best == {("BPE", 1): 5.0, ("BPE", 2): 1.0, ("char", 1): 0.5, ("char", 2): 2.0}  # each its fastest
    assert [(row["tokenizer"], row["workers"]) for row in rows] == [("BPE", 1), ("BPE", 2), ("char", 1), ("char", 2)]


@pytest.mark.parametrize("flags, flag", [(["--repeats", "0"], "--repeats"), (["--workers", "0"], "--workers"),
                                         (["--mb", "-1"], "--mb")])
def test_a_bad_flag_is_one_line(run_cli, flags, flag):
    result = run_cli("bench/prepare.py", *flags, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: argument {flag}: must be") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_a_file_that_is_not_a_tokenizer_is_one_line(run_cli, tmp_path):
    result = run_cli("bench/prepare.py", "--tokenizer-json", tmp_path / "missing.json", timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: --tokenizer-json") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_small_run_prints_the_table_and_names_the_machine(run_cli):
    """3 MB: prepare.py keeps 1M tokens for validation, so a smaller corpus is refused."""
    result = run_cli("bench/prepare.py", "--mb", "3", "--vocab-size", "260", "--repeats", "1", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert cpu_description() in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith(("| BPE 260 |", "| char |"))]
    assert len(rows) == 4 + 2  # 1 and 2 workers per tokenizer; then the estimate's row per tokenizer
    assert all(row.endswith("| yes |") for row in rows[:4])  # the same output with 2 workers as with 1
