"""Tests for bench/int8_quality.py's `compare`: the numbers the README gives for what int8 costs.

Oracle: the same quantities computed independently, over the whole window at once without a cache: the mean
next-token cross-entropy of each model, and the mean KL divergence KL(first || other) of the next-token
distributions from `torch.distributions`. A model compared with itself has a KL of exactly 0.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

from src.engine.quantize import quantize_int8
from src.model import GPT, GPTConfig
from tests.conftest import spread

BENCH = Path(__file__).resolve().parent.parent / "bench" / "int8_quality.py"


def load_bench():
    """bench/int8_quality.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_int8_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@torch.inference_mode()
def test_compare_gives_each_models_loss_and_its_kl_from_the_first():
    model = spread(GPT(GPTConfig(vocab_size=30, block_size=12, n_layer=2, n_head=2, d_model=32)))  # int8 shows
    int8 = quantize_int8(copy.deepcopy(model))
    windows = torch.randint(0, 30, (3, 13), generator=torch.Generator().manual_seed(1))  # (N, T + 1)
    rows = load_bench().compare({"float32": model, "again": model, "int8": int8}, windows)

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
