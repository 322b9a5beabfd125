"""Tests for bench/int8_quality.py's `compare`: the numbers the README gives for what int8 costs.

Oracle: the same quantities computed independently, over the whole window at once without a cache: the mean
next-token cross-entropy of each model, and the mean KL divergence KL(first || other) of the next-token
distributions from `torch.distributions`. A model compared with itself has a KL of exactly 0.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from src.engine.errors import UserError
from src.engine.perf import cpu_description
from src.engine.quantize import quantize_int8
from src.model import GPT, GPTConfig
from tests.conftest import load_bench, spread

BENCH = Path(__file__).resolve().parent.parent / "bench" / "int8_quality.py"


@torch.inference_mode()
def test_compare_gives_each_models_loss_and_its_kl_from_the_first():
    model = spread(GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, d_model=32)))  # int8 shows
    int8 = quantize_int8(copy.deepcopy(model))
    windows = torch.randint(0, 30, (3, 13), generator=torch.Generator().manual_seed(1))  # (N, T + 1)
    rows = load_bench("int8_quality").compare({"float32": model, "again": model, "int8": int8}, windows)

    def logits_of(m):
        return torch.cat([m(w[None, :-1])[0][0] for w in windows])  # (N * T, V), the whole window at once

    targets = windows[:, 1:].reshape(-1)
    reference = torch.distributions.Categorical(logits=logits_of(model))
    for name, m in (("float32", model), ("int8", int8)):
        logits = logits_of(m)
        assert abs(rows[name]["loss"] - F.cross_entropy(logits, targets).item()) < 1e-5
        kl = torch.distributions.kl_divergence(reference, torch.distributions.Categorical(logits=logits)).mean()
        assert abs(rows[name]["kl"] - kl.item()) < 1e-6 + 1e-3 * kl.item()
    assert rows["float32"]["kl"] == 0 and rows["again"]["kl"] == 0
    assert rows["int8"]["kl"] > 0  # the rounding does change the distributions a little


def test_a_run_on_a_trained_checkpoint_names_the_machine(run_cli, trained_run, tmp_path):
    """It reports ms/token, so it says whose milliseconds they are."""
    out_dir, data, _ = trained_run
    result = run_cli(BENCH, "--out-dir", out_dir, "--data", data, "--windows", "2", "--cache-dir", tmp_path,
                     timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"CPU: {cpu_description()}" in result.stdout
    assert "| int8 |" in result.stdout and "| float32 |" in result.stdout


def test_bad_input_is_one_line(run_cli, tmp_path):
    missing = run_cli(BENCH, "--out-dir", tmp_path / "nonexistent", timeout=60)
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
    no_windows = run_cli(BENCH, "--windows", "0", timeout=60)
    assert no_windows.returncode == 2
    assert no_windows.stderr.startswith("error: argument --windows: must be >= 1")
    assert "Traceback" not in no_windows.stderr


def test_a_validation_text_shorter_than_a_window_is_a_user_error():
    bench = load_bench("int8_quality")
    windows = bench.validation_windows(torch.arange(40), block_size=12, wanted=16)
    assert windows.shape == (3, 13)  # (40 - 1) // 12 = 3 windows of 12 inputs and the next token
    assert windows[:, 0].tolist() == [0, 12, 24] and torch.equal(windows[0], torch.arange(13))
    with pytest.raises(UserError, match="fewer than one window"):
        bench.validation_windows(torch.arange(12), block_size=12, wanted=16)
