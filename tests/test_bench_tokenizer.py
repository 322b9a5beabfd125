"""Tests for bench/tokenizer.py: the contenders of a row take turns and get the same untimed runs, and a run
on a small text prints its table with the CPU named.

A ratio between two contenders timed one after the other carries the machine's drift between them; and a
contender whose only timing is its first, cold run (as HF's training once was) is handed a slower figure.
"""

from __future__ import annotations

from src.engine.perf import cpu_description
from tests.conftest import load_bench


def test_contenders_take_turns_and_the_fastest_round_counts():
    bench = load_bench("tokenizer")
    calls, seconds = [], iter([3.0, 2.0, 1.0, 0.5, 9.0, 9.0, 9.0, 0.1, 9.0])

    def contender(name):
        return lambda: (calls.append(name), next(seconds))[1]

    best = bench.best_in_turns({"a": contender("a"), "b": contender("b"), "c": contender("c")}, rounds=3)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # each round starts one further along
    assert best == {"a": 0.1, "b": 0.5, "c": 1.0}  # each its fastest round


def test_training_gives_ours_and_hf_the_same_untimed_and_timed_runs(monkeypatch, tiny_text):
    bench = load_bench("tokenizer")
    runs = []
    train, trainer = bench.BPETokenizer.train, bench.hf_trainer
    monkeypatch.setattr(bench.BPETokenizer, "train", staticmethod(lambda *a: (runs.append("ours"), train(*a))[1]))
    monkeypatch.setattr(bench, "hf_trainer", lambda *a, **k: (runs.append("HF"), trainer(*a, **k))[1])
    rows = bench.train_rows(tiny_text)
    assert len(rows) == 3
    # vocab 512: one untimed run each, then 3 rounds; 4096 and 32768: one untimed run each, then 1 round
    assert runs.count("ours") == runs.count("HF") == (1 + 3) + 2 * (1 + 1)
    assert runs[:2] == ["ours", "HF"]  # the untimed runs come first, for both


def test_a_small_text_gives_the_table_with_the_cpu_named(run_cli, text_file):
    result = run_cli("bench/tokenizer.py", "--data", text_file, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"CPU: {cpu_description()}" in result.stdout
    assert "identical ids from all three on the whole text: yes" in result.stdout
    assert result.stdout.count("| encode, MB/s") == 2 and result.stdout.count("| train vocab") == 3


def test_a_missing_text_is_one_line(run_cli, tmp_path):
    result = run_cli("bench/tokenizer.py", "--data", tmp_path / "missing.txt", timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("error: benchmark text not found") and "Traceback" not in result.stderr
