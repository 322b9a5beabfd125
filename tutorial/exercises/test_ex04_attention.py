"""Tests for exercise 4: `pytest tutorial/exercises/test_ex04_attention.py`. The answer keys are PyTorch's
`F.scaled_dot_product_attention(..., is_causal=True)` and the project's `explicit_attention` (src/model.py)."""

import contextlib
import math

import pytest
import torch
from torch.nn import functional as F

import src.model
from src.model import explicit_attention

EXERCISE = "ex04_attention"


@contextlib.contextmanager
def no_shortcuts():
    """Switch off PyTorch's fused attention and the project's written-out one while your code runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("write it yourself with @, masked_fill and softmax: this function is the answer key")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(F, "scaled_dot_product_attention", forbidden)
        patch.setattr(src.model, "explicit_attention", forbidden)
        yield


def random_qkv(*shape, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=generator) * scale for _ in range(3)]


@pytest.mark.parametrize("shape", [(2, 7, 8), (3, 4, 5, 16), (1, 1, 4)], ids=["B,T,hs", "B,nh,T,hs", "T=1"])
def test_matches_pytorchs_fused_attention(exercise, shape):
    q, k, v = random_qkv(*shape)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with no_shortcuts():
        out, weights = exercise.causal_attention(q, k, v)
    assert out.shape == shape and weights.shape == (*shape[:-1], shape[-2])
    assert torch.allclose(out, expected, atol=1e-5)


def test_the_weights_match_the_projects_explicit_attention(exercise):
    q, k, v = random_qkv(2, 3, 9, 4, seed=1)
    expected_out, expected_weights = explicit_attention(q, k, v)
    with no_shortcuts():
        out, weights = exercise.causal_attention(q, k, v)
    assert torch.allclose(weights, expected_weights, atol=1e-6) and torch.allclose(out, expected_out, atol=1e-5)


def test_every_row_of_weights_sums_to_1_and_the_future_gets_exactly_0(exercise):
    q, k, v = random_qkv(4, 10, 8, seed=2)
    with no_shortcuts():
        _, weights = exercise.causal_attention(q, k, v)
    assert torch.allclose(weights.sum(dim=-1), torch.ones(4, 10), atol=1e-6), "softmax over the last axis (dim=-1)"
    assert (weights.triu(diagonal=1) == 0).all(), "weights above the diagonal (the future) must be exactly 0"


def test_the_first_position_sees_only_itself(exercise):
    q, k, v = random_qkv(3, 6, 4, seed=3)
    with no_shortcuts():
        out, weights = exercise.causal_attention(q, k, v)
    assert torch.isfinite(weights).all(), "nan: is the diagonal masked too? Position t may look at itself"
    assert torch.equal(weights[:, 0, 0], torch.ones(3)) and torch.allclose(out[:, 0], v[:, 0])


def test_changing_the_last_position_changes_no_earlier_output(exercise):
    q, k, v = random_qkv(2, 8, 4, seed=4)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[:, -1], k2[:, -1], v2[:, -1] = 5.0, -3.0, 7.0  # a different last character
    with no_shortcuts():
        before, _ = exercise.causal_attention(q, k, v)
        after, _ = exercise.causal_attention(q2, k2, v2)
    assert torch.equal(before[:, :-1], after[:, :-1]), "an earlier position sees the last one: the future leaks in"
    assert not torch.equal(before[:, -1], after[:, -1])


@pytest.mark.parametrize("hs", [4, 64])
def test_the_scores_are_divided_by_the_square_root_of_the_head_size(exercise, hs):
    q, k, v = random_qkv(1, 5, hs, seed=5)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (1, 5, 5)
    expected = F.softmax(scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf")), dim=-1)
    with no_shortcuts():
        _, weights = exercise.causal_attention(q, k, v)
    assert torch.allclose(weights, expected, atol=1e-6)


def test_huge_scores_stay_finite(exercise):
    q, k, v = random_qkv(2, 6, 8, scale=100.0, seed=6)  # scores in the thousands: exp() would overflow
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with no_shortcuts():
        out, weights = exercise.causal_attention(q, k, v)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert torch.allclose(out, expected, atol=1e-3, rtol=1e-4)


def test_the_gradient_flows_to_q_k_and_v(exercise):
    q, k, v = (t.requires_grad_() for t in random_qkv(2, 5, 4, seed=7))
    q_ref, k_ref, v_ref = (t.detach().clone().requires_grad_() for t in (q, k, v))
    F.scaled_dot_product_attention(q_ref, k_ref, v_ref, is_causal=True).pow(2).sum().backward()
    with no_shortcuts():
        out, _ = exercise.causal_attention(q, k, v)
    out.pow(2).sum().backward()
    for mine, theirs in [(q, q_ref), (k, k_ref), (v, v_ref)]:
        assert mine.grad is not None and torch.allclose(mine.grad, theirs.grad, atol=1e-5)
