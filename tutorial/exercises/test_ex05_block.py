"""Tests for exercise 5: `pytest tutorial/exercises/test_ex05_block.py`. The answer keys are the project's
`Block`, `CausalSelfAttention` and `MLP` (src/model.py), and PyTorch's `F.layer_norm`."""

import contextlib

import pytest
import torch
from torch.nn import functional as F

import src.model
from src.model import Block, GPTConfig

EXERCISE = "ex05_block"


@contextlib.contextmanager
def no_shortcuts():
    """Switch off PyTorch's LayerNorm and fused attention, and the project's modules, while your code runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("write it yourself from the weights: this function is the answer key")

    with pytest.MonkeyPatch.context() as patch:
        for owner, name in [(F, "layer_norm"), (torch, "layer_norm"), (torch.nn.LayerNorm, "forward"),
                            (F, "scaled_dot_product_attention"), (src.model, "explicit_attention"),
                            (src.model.Block, "forward"), (src.model.CausalSelfAttention, "forward"),
                            (src.model.MLP, "forward")]:
            patch.setattr(owner, name, forbidden)
        yield


def random_block(C=16, n_head=4, seed=0):
    """A project Block with every weight random (LayerNorms too), and its weights as a dict."""
    torch.manual_seed(seed)
    block = Block(GPTConfig(d_model=C, n_head=n_head, block_size=32))
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.normal_(1.0 if name.startswith("ln_") and name.endswith("weight") else 0.0, 0.3)
    return block, {name: t.detach().clone() for name, t in block.state_dict().items()}


def test_layer_norm_matches_pytorch(exercise):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 8, generator=generator) * 4 + 2  # C = 8: dividing by 7 instead of 8 shows
    weight, bias = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    expected = F.layer_norm(x, (8,), weight, bias, eps=1e-5)
    with no_shortcuts():
        out = exercise.layer_norm(x, weight, bias)
    assert out.shape == x.shape and torch.allclose(out, expected, atol=1e-5)


def test_layer_norm_of_a_nearly_constant_vector(exercise):
    x = torch.tensor([[3.0, 3.001, 2.999, 3.0], [7.0, 7.0, 7.0, 7.0]])  # eps matters here; the second row: 0/0?
    weight, bias = torch.ones(4), torch.zeros(4)
    expected = F.layer_norm(x, (4,), weight, bias, eps=1e-5)
    with no_shortcuts():
        out = exercise.layer_norm(x, weight, bias)
    assert torch.isfinite(out).all(), "a constant vector has variance 0: where does eps go?"
    assert torch.allclose(out, expected, atol=1e-4), "eps is added to the variance, inside the square root"


@pytest.mark.parametrize("n_head", [1, 2, 4])
def test_attention_matches_the_projects(exercise, n_head):
    block, params = random_block(C=16, n_head=n_head, seed=n_head)
    x = torch.randn(3, 7, 16)
    with torch.no_grad():
        expected = block.attn(x)
    with no_shortcuts():
        out = exercise.attention(x, params, n_head)
    assert out.shape == (3, 7, 16) and torch.allclose(out, expected, atol=1e-5)


def test_no_position_sees_a_later_token(exercise):
    _, params = random_block(C=12, n_head=3, seed=5)
    x = torch.randn(2, 6, 12)
    x_changed = x.clone()
    x_changed[:, -1] = 10.0  # a different last token
    with no_shortcuts():
        before, after = exercise.attention(x, params, 3), exercise.attention(x_changed, params, 3)
    assert torch.allclose(before[:, :-1], after[:, :-1], atol=1e-6), (
        "an earlier position changed with the last token: are the heads split with a direct view(B, nh, T, hs)?")


def test_mlp_matches_the_projects(exercise):
    block, params = random_block(seed=6)
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        expected = block.mlp(x)
    with no_shortcuts():
        out = exercise.mlp(x, params)
    assert out.shape == (2, 5, 16) and torch.allclose(out, expected, atol=1e-5)


def test_mlp_uses_gpt2s_tanh_gelu(exercise):
    block, params = random_block(C=8, seed=7)
    x = torch.randn(4, 3, 8) * 3  # hidden values of a few units, where the two GELUs differ most
    hidden = F.linear(x, params["mlp.c_fc.weight"], params["mlp.c_fc.bias"])
    with_tanh = F.linear(F.gelu(hidden, approximate="tanh"), params["mlp.c_proj.weight"], params["mlp.c_proj.bias"])
    with no_shortcuts():
        out = exercise.mlp(x, params)
    assert torch.allclose(out, with_tanh, atol=1e-5), "GPT-2's GELU is F.gelu(..., approximate='tanh')"


@pytest.mark.parametrize(("C", "n_head"), [(16, 4), (24, 2), (8, 1)])
def test_the_block_matches_the_projects(exercise, C, n_head):
    block, params = random_block(C=C, n_head=n_head, seed=C)
    x = torch.randn(2, 9, C) * 2
    with torch.no_grad():
        expected = block(x)
    with no_shortcuts():
        out = exercise.block_forward(x, params, n_head)
    assert out.shape == x.shape and torch.allclose(out, expected, atol=1e-4)


def test_with_layernorms_at_zero_the_block_adds_one_vector_to_the_stream(exercise):
    """Pre-LayerNorm: x + attn(ln_1(x)), then + mlp(ln_2(...)). With both LayerNorms' weights and biases at 0,
    the parts read zeros, so each adds a constant vector to the stream; the stream itself goes through."""
    block, params = random_block(C=16, n_head=4, seed=8)
    for name in ["ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias"]:
        params[name] = torch.zeros(16)
    block.load_state_dict(params)
    x = torch.randn(2, 5, 16) * 3
    with torch.no_grad():
        expected = block(x)
    with no_shortcuts():
        out = exercise.block_forward(x, params, 4)
    added = out - x  # (2, 5, 16)
    assert torch.allclose(added, added[0, 0].expand_as(added), atol=1e-5), (
        "the stream must go through unchanged plus what each part adds: x = x + part(ln(x))")
    assert torch.allclose(out, expected, atol=1e-5)
