"""Tests for bench/generate.py: the rows and the memory read take turns, the bytes a token reads are counted
right, and bad flags get one line.

The table divides every row by HF's row and by the memory bandwidth: those ratios only mean something if the
divisors were measured in the same minutes as the rows (taking turns), and if "MB read per token" counts the
tied wte/lm_head matrix once and the position table not at all.
"""

from __future__ import annotations

import time

import pytest
import torch

from src.model import GPT, GPTConfig
from tests.conftest import load_bench

TINY = GPTConfig(vocab_size=40, block_size=64, n_layer=1, n_head=2, d_model=32)  # 64: the 50 greedy tokens fit


@pytest.fixture(scope="module")
def bench():
    return load_bench("generate")


def recording(bench, monkeypatch) -> list[set]:
    """Make the memory read small (1 MiB, not 1 GiB) and note which contenders each `interleaved_seconds`
    call timed together."""
    groups, timer, read = [], bench.interleaved_seconds, bench.memory_read
    monkeypatch.setattr(bench, "memory_read", lambda: read(2**-10))
    monkeypatch.setattr(bench, "interleaved_seconds", lambda runs, repeats: (groups.append(set(runs)),
                                                                             timer(runs, repeats))[1])
    return groups


def test_contenders_take_turns_in_an_order_that_rotates(bench):
    calls = []
    runs = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = bench.interleaved_seconds(runs, repeats=4)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert {name: len(t) for name, t in times.items()} == {"a": 4, "b": 4, "c": 4}


def test_a_token_reads_the_tied_lm_head_once_and_no_position_table(bench):
    model = GPT(TINY)
    weights = sum(p.numel() for p in model.parameters())  # the tied matrix once
    assert bench.weight_bytes(model) == 4 * (weights - model.transformer.wpe.weight.numel())
    assert bench.weight_bytes(model.to(torch.bfloat16)) == 2 * (weights - model.transformer.wpe.weight.numel())


def test_the_memory_read_takes_turns_with_the_rows(bench, monkeypatch):
    pytest.importorskip("transformers")
    groups = recording(bench, monkeypatch)
    monkeypatch.setitem(bench.SHAPES, "tiny", ("tiny", TINY))
    rows = bench.measure("tiny", 3, 2, only=["ours bfloat16, PyTorch product"])
    variants = {"ours bfloat16, PyTorch product", "HF float32 (transformers)"}
    assert groups == [variants | {bench.MEMORY_READ}]  # one alternation: the rows and the bandwidth together
    assert {row["variant"] for row in rows} == variants
    assert len({row["bandwidth"] for row in rows}) == 1 and rows[0]["bandwidth"] > 0
    assert rows[-1]["vs HF"] == 1.0 and rows[-1]["variant"].startswith("HF")  # HF last, the divisor


@pytest.mark.slow
def test_levers_take_turns_with_the_memory_read(bench, monkeypatch, capsys):
    """Small matrices (the last one stands for lm_head): every lever checked, then all timed together."""
    groups = recording(bench, monkeypatch)
    start = time.perf_counter()
    bench.matrix_levers(2, [(64, 32), (32, 64), (96, 32)])
    assert time.perf_counter() - start < 120
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "GB/s" not in line]
    assert len(groups) == 1 and len(groups[0]) == len(rows) + 1 and bench.MEMORY_READ in groups[0]
    assert all(row.endswith("% |") for row in rows)


@pytest.mark.parametrize("flag", ["--threads", "--repeats", "--tokens"])
def test_a_flag_below_one_is_one_line(run_cli, flag):
    result = run_cli("bench/generate.py", flag, "0", timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: argument {flag}: must be >= 1") and result.stderr.count("\n") == 1
