"""Tests for configure_optimizer and lr_at (src/train.py): who gets weight decay, and the LR schedule as a table."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from src.bigram import BigramLanguageModel
from src.model import GPT
from src.train import configure_optimizer, lr_at


def test_every_parameter_is_in_exactly_one_group(tiny_config):
    model = GPT(tiny_config(n_layer=2))
    optimizer = configure_optimizer(model, lr=1e-3, weight_decay=0.1, device=torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.AdamW)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    in_groups = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert len(in_groups) == len(set(in_groups))  # nothing twice (the tied matrix included)
    assert set(in_groups) == {id(p) for p in model.parameters()}  # nothing missing
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == model.num_params()

    decayed = {id(p) for p in decay["params"]}
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            assert id(p) in decayed, name
        else:
            assert id(p) not in decayed, name
            assert name.endswith(".bias") or ".ln_" in name, name
    assert id(model.transformer.wte.weight) in decayed
    assert sum(p is model.lm_head.weight for p in decay["params"]) == 1


def test_groups_for_the_bigram_model():
    model = BigramLanguageModel(vocab_size=11)
    optimizer = configure_optimizer(model, lr=1e-2, weight_decay=0.0, device=torch.device("cpu"))
    decay, no_decay = optimizer.param_groups
    assert [p.shape for p in decay["params"]] == [(11, 11)]
    assert no_decay["params"] == []


def test_weight_decay_only_shrinks_matrices(tiny_config):
    """With zero gradients, AdamW's step is pure decay: matrices shrink by lr * wd, vectors stay."""
    model = GPT(tiny_config(n_layer=1))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    optimizer = configure_optimizer(model, lr=0.1, weight_decay=0.5, device=torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        expected = 1.0 - 0.1 * 0.5 if p.dim() >= 2 else 1.0
        assert torch.allclose(p, torch.full_like(p, expected)), name


LR, MIN_LR, WARMUP, DECAY = 1.0, 0.1, 10, 100


def schedule(step, warmup=WARMUP, decay=DECAY, cooldown=None):
    return lr_at(step, LR, MIN_LR, warmup, decay, cooldown)


def test_lr_table():
    assert schedule(0) == pytest.approx(LR / WARMUP) and schedule(0) > 0  # step 0 already learns
    assert schedule(WARMUP - 1) == pytest.approx(LR)  # peak at the end of warmup
    assert schedule(WARMUP) == pytest.approx(LR)  # the cosine starts at the peak
    assert max(schedule(s) for s in range(200)) == pytest.approx(LR)
    assert schedule((WARMUP + DECAY) // 2) == pytest.approx(MIN_LR + 0.5 * (LR - MIN_LR))  # cosine midpoint
    assert schedule(DECAY) == pytest.approx(MIN_LR)
    assert schedule(DECAY - 1) > MIN_LR
    for s in (DECAY + 1, DECAY + 50, 10**6):
        assert schedule(s) == pytest.approx(MIN_LR)
    assert min(schedule(s) for s in range(200)) == pytest.approx(MIN_LR)  # never below min_lr


def test_lr_warmup_increases_and_decay_decreases():
    warm = [schedule(s) for s in range(WARMUP)]
    assert all(a < b for a, b in pairwise(warm))
    decay = [schedule(s) for s in range(WARMUP, DECAY + 1)]
    assert all(a > b for a, b in pairwise(decay))


def test_lr_without_warmup_and_with_nothing_to_decay():
    assert schedule(0, warmup=0) == pytest.approx(LR)  # warmup 0: start at the peak
    assert all(MIN_LR <= schedule(s, warmup=0) <= LR for s in range(150))
    # decay as long as the warmup: no division by zero, warmup then min_lr
    values = [schedule(s, warmup=10, decay=10) for s in range(30)]
    assert all(math.isfinite(v) for v in values)
    assert values[9] == pytest.approx(LR)
    assert values[10:] == [pytest.approx(MIN_LR)] * 20
    assert schedule(0, warmup=0, decay=0) == pytest.approx(MIN_LR)


def test_a_cooldown_holds_the_peak_then_falls_in_a_straight_line():
    # 90 steps after warmup; a cooldown of 0.4 is their last 36: the peak until step 64, min_lr at step 100
    values = [schedule(s, cooldown=0.4) for s in range(120)]
    assert values[:WARMUP] == [schedule(s) for s in range(WARMUP)]  # the same warmup as the cosine
    assert values[WARMUP:65] == [pytest.approx(LR)] * (65 - WARMUP)
    assert values[82] == pytest.approx(MIN_LR + 0.5 * (LR - MIN_LR))  # half-way through the cooldown
    steps = list(pairwise(values[64:101]))
    assert all(a - b == pytest.approx((LR - MIN_LR) / 36) for a, b in steps)  # a straight line
    assert values[100:] == [pytest.approx(MIN_LR)] * 20
    # a cooldown of 1: a linear decay from the end of warmup, half-way at the cosine's midpoint
    assert schedule(WARMUP, cooldown=1.0) == pytest.approx(LR)
    assert schedule(55, cooldown=1.0) == pytest.approx(MIN_LR + 0.5 * (LR - MIN_LR))
    assert schedule(28, cooldown=1.0) == pytest.approx(MIN_LR + 0.8 * (LR - MIN_LR))
