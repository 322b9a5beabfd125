"""Tests for src/generate.py and the KV cache in src/model.py: the cache must not change a single token.

The oracle is the model without a cache, which recomputes the whole (cropped) context at every step:
cached and uncached generation must give the same tokens (greedy and sampled with one seed) and the same
logits at every step, for prompts of length 1, block_size - 1 and block_size, and for generations that
run past block_size (where the cached loop has to slide its window and prefill again).

At GPT-2's init (std 0.02) a random model's logits are nearly equal, so greedy choices could hinge on
differences of 1e-6 between two correct computations. `spread` re-draws the 2-D weights with a larger
std, as bench/generate.py does: 0.3 here, because logits scale with std * sqrt(d_model) and this toy model
is 32 wide (bench's 0.1 is for 768). That separates the logits clearly and gives a varied greedy text.
"""

from __future__ import annotations

import copy

import pytest
import torch

import src.generate as gen
import src.model as model_module
from src.bigram import BigramLanguageModel
from src.generate import generate, generate_tokens
from src.model import GPT, GPTConfig, causal_mask
from tests.conftest import spread

V, BS = 48, 16  # vocabulary size and block_size of the test model


def make_gpt(seed: int = 0, **overrides) -> GPT:
    sizes = dict(vocab_size=V, block_size=BS, n_layer=2, n_head=2, d_model=32)
    sizes.update(overrides)
    torch.manual_seed(seed)
    return spread(GPT(GPTConfig(**sizes)), seed)


@pytest.fixture(scope="module")
def gpt() -> GPT:
    return make_gpt()


def prompt(T: int, B: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.randint(V, (B, T), generator=torch.Generator().manual_seed(seed))  # (B, T)


def record_logits(monkeypatch) -> list[torch.Tensor]:
    """Make generate_tokens record the (B, V) logits it samples from at every step."""
    seen = []
    real = gen.sample_next_token

    def recording(logits, *args, **kwargs):
        seen.append(logits.clone())
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(gen, "sample_next_token", recording)
    return seen


# --- cached == uncached ---------------------------------------------------------------------------------------

PROMPT_LENGTHS = [1, 5, BS - 1, BS, BS + 3]  # BS + 3: a prompt longer than the context is cropped


@pytest.mark.parametrize("T", PROMPT_LENGTHS)
def test_greedy_cached_equals_uncached_past_block_size(gpt, T):
    idx = prompt(T, B=2)
    n = BS + 10  # runs past block_size: the cache slides and prefills again
    cached = generate(gpt, idx, n, temperature=0, use_cache=True)
    uncached = generate(gpt, idx, n, temperature=0, use_cache=False)
    assert cached.shape == (2, T + n)
    assert torch.equal(cached, uncached)
    assert len(set(cached[0, T:].tolist())) > 2  # a varied continuation, not one token repeated


@pytest.mark.parametrize("T", PROMPT_LENGTHS)
def test_sampled_cached_equals_uncached_with_the_same_seed(gpt, T):
    idx = prompt(T, B=3)
    n = BS + 6
    options = dict(temperature=1.0, top_k=20, top_p=0.95, seed=11)
    cached = generate(gpt, idx, n, use_cache=True, **options)
    uncached = generate(gpt, idx, n, use_cache=False, **options)
    assert torch.equal(cached, uncached)
    other_seed = generate(gpt, idx, n, use_cache=True, **{**options, "seed": 12})
    assert not torch.equal(cached, other_seed)  # the sampling is really random


@pytest.mark.parametrize("T", [1, BS - 1, BS])
def test_per_step_logits_of_the_cache_match_a_full_recompute(gpt, monkeypatch, T):
    idx = prompt(T, B=2)
    n = BS + 5
    seen = record_logits(monkeypatch)
    list(generate_tokens(gpt, idx, n, temperature=0, use_cache=True))
    cached = seen[:]
    seen.clear()
    list(generate_tokens(gpt, idx, n, temperature=0, use_cache=False))
    assert len(cached) == len(seen) == n
    for step, (a, b) in enumerate(zip(cached, seen, strict=True)):
        assert a.shape == (2, V)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    # and the uncached logits are what model(context) gives, computed independently here
    out = generate(gpt, idx, n, temperature=0, use_cache=False)
    for step in range(n):
        context = out[:, : T + step][:, -BS:]
        with torch.no_grad():
            expected = gpt(context)[0][:, -1, :]
        torch.testing.assert_close(seen[step], expected, rtol=1e-5, atol=1e-5)


def test_repetition_penalty_gives_the_same_tokens_with_and_without_cache(gpt):
    idx = prompt(4, B=2)
    options = dict(temperature=0.7, seed=3, repetition_penalty=1.3)
    assert torch.equal(generate(gpt, idx, BS + 4, use_cache=True, **options),
                       generate(gpt, idx, BS + 4, use_cache=False, **options))


# --- calls do not leak into each other ----------------------------------------------------------------------------


def test_consecutive_generate_calls_equal_fresh_calls():
    model = make_gpt(seed=5)
    fresh = copy.deepcopy(model)
    a, b = prompt(3, seed=2), prompt(BS - 2, seed=3)
    first = generate(model, a, 12, temperature=0.9, seed=1)
    second = generate(model, b, 12, temperature=0.9, seed=1)  # a different prompt length right after
    third = generate(model, a, 12, temperature=0.9, seed=1)
    assert torch.equal(first, third)
    assert torch.equal(first, generate(copy.deepcopy(fresh), a, 12, temperature=0.9, seed=1))
    assert torch.equal(second, generate(copy.deepcopy(fresh), b, 12, temperature=0.9, seed=1))


def test_stopping_early_restores_training_mode_and_a_new_call_starts_fresh(gpt):
    model = make_gpt(seed=6, dropout=0.1)
    model.train()
    tokens = generate_tokens(model, prompt(2), 50, temperature=0)
    next(tokens)
    assert not model.training  # generation runs in eval mode (dropout off)
    tokens.close()  # what a caller does when it stops early (a stop string)
    assert model.training
    assert torch.equal(generate(model, prompt(2), 8, temperature=0), generate(model, prompt(2), 8, temperature=0))


# --- batches and seeds ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
def test_each_row_of_a_batch_equals_that_sample_alone_with_seed_plus_i(gpt, use_cache):
    idx = prompt(5, B=4, seed=9)  # four different prompts
    batch = generate(gpt, idx, BS + 3, temperature=1.0, seed=100, use_cache=use_cache)
    for i in range(4):
        alone = generate(gpt, idx[i : i + 1], BS + 3, temperature=1.0, seed=100 + i, use_cache=use_cache)
        assert torch.equal(batch[i : i + 1], alone), f"row {i}"
    assert not torch.equal(batch[0, 5:], batch[1, 5:])


def test_a_list_of_seeds_gives_each_row_its_own(gpt):
    idx = prompt(3, B=1).repeat(3, 1)  # the same prompt three times
    batch = generate(gpt, idx, 10, temperature=1.0, seed=[7, 3, 7])
    assert torch.equal(batch[0], batch[2])  # same seed, same text
    assert not torch.equal(batch[0], batch[1])
    assert torch.equal(batch[1:2], generate(gpt, idx[:1], 10, temperature=1.0, seed=3))


def test_temperature_zero_is_deterministic_whatever_the_seed(gpt):
    idx = prompt(4, B=2)
    runs = [generate(gpt, idx, 20, temperature=0, seed=s) for s in (None, 1, 2, 999)]
    for run in runs[1:]:
        assert torch.equal(run, runs[0])
    # and it is the argmax of the uncached logits, step by step
    out = idx
    for _ in range(20):
        with torch.no_grad():
            logits = gpt(out[:, -BS:])[0][:, -1, :]
        out = torch.cat([out, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(runs[0], out)


def test_generate_takes_a_list_or_a_tensor(gpt):
    ids = [1, 2, 3]
    out = generate(gpt, ids, 5, temperature=0)
    assert isinstance(out, list) and len(out) == 8 and out[:3] == ids
    assert all(isinstance(i, int) and 0 <= i < V for i in out)
    tensor = generate(gpt, torch.tensor([ids, [4, 5, 6]]), 5, temperature=0)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 8) and tensor.dtype == torch.long
    assert tensor[0].tolist() == out  # the list form is the one-row tensor form
    assert generate(gpt, ids, 0) == ids
    steps = list(generate_tokens(gpt, torch.tensor([ids]), 4, temperature=0))
    assert len(steps) == 4 and all(s.shape == (1, 1) for s in steps)
    with pytest.raises(ValueError):
        generate(gpt, [], 3)
    with pytest.raises(ValueError):
        generate(gpt, ids, -1)


# --- the causal mask with a cache --------------------------------------------------------------------------------


def manual_mask(T: int, start: int) -> torch.Tensor:
    """Query i sits at position start + i and may see keys 0..start+i."""
    return torch.tensor([[j <= start + i for j in range(start + T)] for i in range(T)])


def test_causal_mask_without_cache_is_sdpa_is_causal():
    assert causal_mask(5, 0, torch.device("cpu")) == {"is_causal": True}
    assert causal_mask(1, 0, torch.device("cpu")) == {"is_causal": False}  # one token sees itself


def test_causal_mask_for_one_new_token_after_a_cache_is_no_mask():
    assert causal_mask(1, 7, torch.device("cpu")) == {}


@pytest.mark.parametrize("T, start", [(2, 1), (3, 5), (4, 4), (6, 10)])
def test_causal_mask_for_a_chunk_after_a_cache_is_aligned_bottom_right(T, start):
    mask = causal_mask(T, start, torch.device("cpu"))["attn_mask"]
    assert mask.dtype == torch.bool and mask.shape == (T, start + T)
    assert torch.equal(mask, manual_mask(T, start))
    assert mask[-1].all()  # the last query sees every key
    top_left = torch.ones(T, start + T, dtype=torch.bool).tril()  # what `is_causal=True` would do
    assert not torch.equal(mask, top_left)


@pytest.mark.parametrize("chunks", [[5, 7], [1, 3, 8], [4, 1, 1, 6], [11, 1]])
def test_chunks_fed_after_a_cache_give_the_logits_of_a_full_forward(gpt, chunks):
    idx = prompt(sum(chunks), B=2, seed=4)  # (2, 12)
    with torch.no_grad():
        full, _ = gpt(idx)  # (2, 12, V)
        cache = gpt.new_kv_cache(2)
        pieces, start = [], 0
        for size in chunks:
            logits, _ = gpt(idx[:, start : start + size], cache=cache)  # cache.pos > 0 and T > 1: shifted mask
            pieces.append(logits)
            start += size
        assert cache.pos == start
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_a_top_left_mask_after_a_cache_would_be_caught(gpt, monkeypatch):
    """The chunk test above fails if the mask is aligned like `is_causal` (the classic bug)."""
    real = model_module.causal_mask

    def top_left(T, start, device):
        if start > 0 and T > 1:
            return {"attn_mask": torch.ones(T, start + T, dtype=torch.bool, device=device).tril()}
        return real(T, start, device)

    monkeypatch.setattr(model_module, "causal_mask", top_left)
    idx = prompt(9, B=1, seed=4)
    with torch.no_grad():
        full, _ = gpt(idx)
        cache = gpt.new_kv_cache(1)
        gpt(idx[:, :4], cache=cache)
        chunk, _ = gpt(idx[:, 4:], cache=cache)
    assert (chunk - full[:, 4:]).abs().max() > 1e-3


def test_last_only_returns_the_last_position_of_a_full_forward(gpt):
    idx = prompt(7, B=2)
    with torch.no_grad():
        full, _ = gpt(idx)
        last, _ = gpt(idx, cache=gpt.new_kv_cache(2), last_only=True)
    assert last.shape == (2, 1, V)
    torch.testing.assert_close(last[:, 0], full[:, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="a loss needs the logits of every position"):
        gpt(idx, targets=idx, last_only=True)  # one position's logits cannot be scored against T targets


def test_the_cache_refuses_to_overflow_the_context(gpt):
    cache = gpt.new_kv_cache(1)
    with torch.no_grad():
        gpt(prompt(BS), cache=cache)
        with pytest.raises(ValueError, match="block_size"):
            gpt(prompt(1), cache=cache)  # position BS does not exist: generate must slide instead


# --- the bigram model and the repetition penalty -----------------------------------------------------------------


def test_bigram_generates_without_a_cache():
    torch.manual_seed(0)
    model = BigramLanguageModel(vocab_size=V)
    with torch.no_grad():
        model.token_embedding_table.weight.normal_(0, 2.0)
    assert model.new_kv_cache(1) is None  # it looks at one token: nothing to keep between steps
    out = generate(model, [3], 30, temperature=0)  # use_cache=True (the default) has no cache to use: no error
    assert len(out) == 31
    table = model.token_embedding_table.weight
    for a, b in zip(out, out[1:], strict=False):
        assert b == table[a].argmax().item()  # the bigram rule, step by step
    sampled = generate(model, torch.tensor([[3], [4]]), 20, temperature=1.0, seed=5)
    assert sampled.shape == (2, 21)
    assert torch.equal(sampled, generate(model, torch.tensor([[3], [4]]), 20, temperature=1.0, seed=5, use_cache=False))


def looping_bigram(n: int = 6) -> BigramLanguageModel:
    """Greedy decoding repeats its token forever: row v scores v at 3, v + 1 at 2, the rest at 0."""
    model = BigramLanguageModel(vocab_size=n)
    with torch.no_grad():
        table = model.token_embedding_table.weight
        for v in range(n):
            table[v, v] = 3.0
            table[v, (v + 1) % n] = 2.0
    return model


def test_repetition_penalty_breaks_a_loop():
    model = looping_bigram()
    assert generate(model, [0], 5, temperature=0) == [0] * 6  # penalty 1: stuck on token 0
    # penalty 2: a seen token's logit 3 becomes 1.5 < 2, so the model moves on to the next token
    assert generate(model, [0], 5, temperature=0, repetition_penalty=2.0) == [0, 1, 2, 3, 4, 5]
    # penalty < 1 rewards repetition: still stuck
    assert generate(model, [0], 5, temperature=0, repetition_penalty=0.5) == [0] * 6


def test_repetition_penalty_changes_what_a_repeating_gpt_says(gpt):
    idx = prompt(3, seed=8)
    plain = generate(gpt, idx, 40, temperature=0)[0, 3:].tolist()
    assert len(set(plain)) < len(plain)  # greedy decoding repeats tokens
    penalised = generate(gpt, idx, 40, temperature=0, repetition_penalty=3.0)[0, 3:].tolist()
    assert penalised != plain
    assert len(set(penalised)) > len(set(plain))  # more distinct tokens


def test_bad_sampling_settings_are_user_errors(gpt):
    from src.engine.errors import UserError

    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=1.5), dict(repetition_penalty=0)):
        with pytest.raises(UserError):
            generate(gpt, [1, 2], 3, **bad)
