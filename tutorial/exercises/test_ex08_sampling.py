"""Tests for exercise 8: `pytest tutorial/exercises/test_ex08_sampling.py`. The answer keys are the project's
`top_p_filter` (src/sampling.py) and `KVCache` (src/model.py)."""

import math

import pytest
import torch

from src.model import GPT, KVCache
from src.sampling import top_p_filter

EXERCISE = "ex08_sampling"


def kept(logits: torch.Tensor) -> list[list[int]]:
    """The ids a filter kept, row by row."""
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in logits]


def assert_same_as_the_project(out: torch.Tensor, logits: torch.Tensor, p: float) -> None:
    """`out` keeps the tokens the project's top_p_filter keeps, with the same logits. A token whose mass before
    it is within 1e-5 of p may go either way: adding up floats in another order rounds differently."""
    expected = top_p_filter(logits, p)
    assert out.shape == expected.shape and out.dtype == torch.float32
    differ = torch.isfinite(out) != torch.isfinite(expected)  # (B, V)
    probs = torch.softmax(logits.float(), dim=-1)
    mass_before = (probs.unsqueeze(-1) < probs.unsqueeze(-2)).float().mul(probs.unsqueeze(-2)).sum(-1)  # (B, V)
    assert ((mass_before - p).abs()[differ] < 1e-5).all(), f"p = {p}: kept {kept(out)}, expected {kept(expected)}"
    both = torch.isfinite(out) & torch.isfinite(expected)
    assert torch.equal(out[both], expected[both]), "the kept logits must not change"


# --- top-p ------------------------------------------------------------------------------------------------------


def test_the_example_of_the_docstring(exercise):
    logits = torch.tensor([[0.1, 0.4, 0.2, 0.3]]).log()
    out = exercise.top_p_filter(logits, 0.8)
    assert kept(out) == [[1, 2, 3]]
    assert torch.equal(out[0, 1:], logits[0, 1:]) and out[0, 0] == -math.inf


def test_the_token_that_crosses_p_is_kept(exercise):
    # 0.5 + 0.41 = 0.91 >= 0.9 only with the second token included: it must be kept, the third dropped.
    logits = torch.tensor([[0.5, 0.41, 0.09]]).log()
    assert kept(exercise.top_p_filter(logits, 0.9)) == [[0, 1]]


def test_reaching_p_exactly_is_enough(exercise):
    # Four equal scores: probabilities exactly 0.25 each, and 0.25 + 0.25 is exactly 0.5 (no rounding). The
    # smallest set holding at least 0.5 is two tokens; among equal ones the lower ids count as likelier.
    assert kept(exercise.top_p_filter(torch.zeros(1, 4), 0.5)) == [[0, 1]]


def test_the_likeliest_token_is_always_kept(exercise):
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 2.5, 2.4]])
    assert kept(exercise.top_p_filter(logits, 1e-6)) == [[1], [1]]


def test_p_1_keeps_every_token(exercise):
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 4
    assert torch.equal(exercise.top_p_filter(logits, 1.0), logits)


def test_the_same_as_the_project_on_random_rows(exercise):
    generator = torch.Generator().manual_seed(1)
    for p in (0.05, 0.3, 0.5, 0.75, 0.9, 0.95, 0.999):
        logits = torch.randn(16, 100, generator=generator) * 3  # 16 rows, each filtered on its own
        assert_same_as_the_project(exercise.top_p_filter(logits, p), logits, p)


def test_the_input_is_not_changed(exercise):
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(2))
    before = logits.clone()
    exercise.top_p_filter(logits, 0.5)
    assert torch.equal(logits, before)


def test_half_precision_logits_come_back_in_float32(exercise):
    logits = (torch.randn(2, 40, generator=torch.Generator().manual_seed(3)) * 2).to(torch.bfloat16)
    assert_same_as_the_project(exercise.top_p_filter(logits, 0.8), logits, 0.8)


# --- the KV cache's append --------------------------------------------------------------------------------------


def test_append_returns_everything_stored_so_far(exercise):
    B, nh, block_size, hs = 2, 3, 10, 4
    cache_k, cache_v = torch.zeros(B, nh, block_size, hs), torch.zeros(B, nh, block_size, hs)
    old_k, old_v = torch.randn(B, nh, 4, hs), torch.randn(B, nh, 4, hs)
    cache_k[:, :, :4], cache_v[:, :, :4] = old_k, old_v  # 4 tokens already cached
    k, v = torch.randn(B, nh, 3, hs), torch.randn(B, nh, 3, hs)  # 3 new ones
    keys, values = exercise.append(cache_k, cache_v, 4, k, v)
    assert keys.shape == values.shape == (B, nh, 7, hs)
    assert torch.equal(keys, torch.cat([old_k, k], dim=2)) and torch.equal(values, torch.cat([old_v, v], dim=2))


def test_append_writes_into_the_cache_itself(exercise):
    cache_k, cache_v = torch.zeros(1, 2, 8, 3), torch.zeros(1, 2, 8, 3)
    k, v = torch.ones(1, 2, 1, 3), 2 * torch.ones(1, 2, 1, 3)
    exercise.append(cache_k, cache_v, 5, k, v)
    assert torch.equal(cache_k[:, :, 5:6], k) and torch.equal(cache_v[:, :, 5:6], v)  # kept for the next token
    assert cache_k[:, :, :5].abs().sum() == 0 and cache_k[:, :, 6:].abs().sum() == 0  # nothing else touched


def test_append_as_the_project_does_token_by_token(exercise):
    config = GPT(vocab_size=11, block_size=12, n_layer=2, d_model=16, n_head=2).config
    theirs = KVCache(config, batch_size=2, device="cpu")
    cache_k, cache_v = torch.zeros_like(theirs.k[0]), torch.zeros_like(theirs.v[0])
    generator = torch.Generator().manual_seed(4)
    pos = 0
    for T in (5, 1, 1, 3, 1):  # a prompt of 5 tokens, then one at a time (and a chunk of 3)
        k, v = torch.randn(2, 2, T, 8, generator=generator), torch.randn(2, 2, T, 8, generator=generator)
        expected = theirs.append(0, k, v)
        theirs.pos += T
        got = exercise.append(cache_k, cache_v, pos, k, v)
        pos += T
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1]), f"after {pos} tokens"


def test_the_model_with_your_append_gives_the_logits_of_the_model_without_a_cache(exercise):
    torch.manual_seed(5)
    model = GPT(vocab_size=13, block_size=16, n_layer=2, d_model=32, n_head=4).eval()
    idx = torch.randint(13, (2, 16))
    with torch.no_grad():
        full, _ = model(idx)  # (B, T, V): every position at once, no cache
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(KVCache, "append", lambda cache, layer, k, v: exercise.append(
                cache.k[layer], cache.v[layer], cache.pos, k, v))
            cache = model.new_kv_cache(batch_size=2)
            steps = [model(idx[:, :6], cache=cache)[0]]  # the prompt: positions 0..5
            steps += [model(idx[:, t : t + 1], cache=cache)[0] for t in range(6, 16)]  # then one token at a time
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)
