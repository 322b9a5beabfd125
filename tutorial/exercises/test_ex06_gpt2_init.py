"""Tests for exercise 6: `pytest tutorial/exercises/test_ex06_gpt2_init.py`. The answer key is the project's
`GPT._init_weights` (src/model.py): N(0, 0.02), residual projections N(0, 0.02 / sqrt(2 * n_layer)), zero
biases, LayerNorms at 1 and 0, the tied table kept tied."""

import contextlib
import math

import pytest
import torch
import torch.nn as nn

from src.model import GPT

EXERCISE = "ex06_gpt2_init"
NONSENSE = 3.0


@contextlib.contextmanager
def no_shortcuts():
    """Switch off the project's own initialisation while your code runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("write it yourself: GPT._init_weights is the answer key")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GPT, "_init_weights", forbidden)
        yield


def initialised(exercise, n_layer=2, d_model=64, vocab_size=71, seed=0):
    """A GPT whose every number is NONSENSE, then passed through your init_gpt2."""
    model = GPT(vocab_size=vocab_size, block_size=32, n_layer=n_layer, d_model=d_model)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(NONSENSE)
    torch.manual_seed(seed)
    with no_shortcuts():
        assert exercise.init_gpt2(model) is None, "init_gpt2 changes the model in place and returns nothing"
    return model


def assert_normal(tensor, std, name):
    """Mean about 0 and standard deviation about `std`, allowing for the randomness of a finite sample."""
    n = tensor.numel()
    assert abs(tensor.mean().item()) < 5 * std / math.sqrt(n), f"{name}: mean {tensor.mean():.2e}, expected 0"
    assert abs(tensor.std().item() / std - 1) < 5 / math.sqrt(2 * n), f"{name}: std {tensor.std():.5f}, not {std:.5f}"


def test_every_parameter_is_set(exercise):
    model = initialised(exercise)
    for name, p in model.named_parameters():
        assert not (p == NONSENSE).all(), f"{name} was left as it was"


def test_linear_and_embedding_weights_start_at_std_0_02(exercise):
    model = initialised(exercise, n_layer=2, d_model=64)
    checked = 0
    for name, p in model.named_parameters():
        if name.endswith("weight") and p.dim() == 2 and "c_proj" not in name:  # wte, wpe, c_attn, c_fc
            assert_normal(p, 0.02, name)
            checked += 1
    assert checked == 2 + 2 * 2  # wte and wpe, then c_attn and c_fc in each of 2 blocks


@pytest.mark.parametrize("n_layer", [1, 3, 8])
def test_residual_projections_are_scaled_by_1_over_sqrt_2_n_layer(exercise, n_layer):
    model = initialised(exercise, n_layer=n_layer, d_model=64)
    std = 0.02 / math.sqrt(2 * n_layer)
    for i, block in enumerate(model.transformer.h):
        assert_normal(block.attn.c_proj.weight, std, f"h.{i}.attn.c_proj.weight")
        assert_normal(block.mlp.c_proj.weight, std, f"h.{i}.mlp.c_proj.weight")
    assert_normal(model.transformer.h[0].mlp.c_fc.weight, 0.02, "h.0.mlp.c_fc.weight (not a residual projection)")


def test_biases_are_zero_and_layernorms_start_at_one_and_zero(exercise):
    model = initialised(exercise)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.bias is not None:
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), f"{name}.bias"
        if isinstance(module, nn.LayerNorm):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), f"{name}.weight"
            assert torch.equal(module.bias, torch.zeros_like(module.bias)), f"{name}.bias"


def test_the_tied_table_stays_one_tensor(exercise):
    model = initialised(exercise)
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head.weight must stay transformer.wte.weight"
    assert_normal(model.lm_head.weight, 0.02, "lm_head.weight = wte.weight")


def test_the_weights_are_random_not_equal(exercise):
    model = initialised(exercise)
    weight = model.transformer.h[0].attn.c_attn.weight
    assert weight.unique().numel() > weight.numel() // 2, "draw the weights at random: equal weights learn alike"


def test_the_loss_at_the_start_is_close_to_ln_v(exercise):
    model = initialised(exercise, n_layer=4, d_model=128)
    generator = torch.Generator().manual_seed(0)
    idx, targets = torch.randint(71, (8, 32), generator=generator), torch.randint(71, (8, 32), generator=generator)
    with torch.no_grad():
        _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(71)) < 0.15, f"loss {loss.item():.2f} at the start, ln V = {math.log(71):.2f}"
