"""Tests for src/engine/decode.py: the compiled one-token step against `GPT.forward` with a KV cache (the
oracle: the model's own decoding), the cache lengths it reads, how often it compiles, and its fallback."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code

from src.engine.decode import MIN_LENGTH, CompiledDecoding, cache_length, decode_step
from src.engine.matvec import stream_weights
from src.model import GPT, GPTConfig
from tests.conftest import assert_prompts_losses_and_full_contexts_go_to_the_model


def spread_model(block_size: int) -> GPT:
    """A small GPT with spread weights: clearly separated logits, so greedy text does not hinge on rounding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=block_size, n_layer=2, n_head=2, d_model=32)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model


@pytest.fixture
def model() -> GPT:
    return spread_model(100)  # a context that is no power of two


@pytest.fixture(autouse=True)
def fresh_compiler():
    torch._dynamo.reset()  # each test counts its own compilations
    yield
    torch._dynamo.reset()


def test_the_cache_length_holds_every_key_written_and_at_most_twice_that():
    assert [cache_length(pos, 1024) for pos in (0, 1, 63, 64, 127, 128, 600, 1023)] == \
        [MIN_LENGTH, 64, 64, 128, 128, 256, 1024, 1024]
    assert cache_length(99, 100) == 100  # capped at the context
    for pos in range(1024):
        assert pos + 1 <= cache_length(pos, 1024) <= max(MIN_LENGTH, 2 * (pos + 1))


@torch.inference_mode()
def test_each_step_gives_the_logits_and_cache_of_the_models_own_forward(model):
    """Eager `decode_step` against `GPT.forward` with a cache, token by token, across the boundary between
    two cache lengths (positions 63 -> 64): the same logits, and the same keys and values written."""
    ids = torch.randint(0, 20, (2, 70), generator=torch.Generator().manual_seed(1))  # batch of 2
    ours, theirs = model.new_kv_cache(2), model.new_kv_cache(2)
    model(ids[:, :5], cache=ours)
    model(ids[:, :5], cache=theirs)  # a 5-token prompt, through the model in both
    for pos in range(5, 70):
        token = ids[:, pos : pos + 1]
        logits = decode_step(model, token, torch.tensor(pos), cache_length(pos, 100), ours.k, ours.v)  # (2, V)
        ours.pos += 1
        expected, _ = model(token, cache=theirs)  # (2, 1, V)
        torch.testing.assert_close(logits, expected[:, -1], atol=1e-5, rtol=1e-5)
    for layer in range(2):
        torch.testing.assert_close(ours.k[layer][:, :, :70], theirs.k[layer][:, :, :70], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.v[layer][:, :, :70], theirs.v[layer][:, :, :70], atol=1e-5, rtol=1e-5)


@pytest.mark.slow  # compiles (about 20 s)
def test_compiled_decoding_gives_the_models_greedy_text_and_compiles_at_most_three_times():
    """320 new tokens after a 3-token prompt, with a context of 300: through cache lengths 64, 128, 256 and
    300, then past the context, where the cache slides (the model re-reads the last 300 tokens). Compiled
    three times: for the first length, with the length as a symbol, and for the whole cache; a second,
    shorter text runs those programs and compiles nothing. With streamed weights, as `sample.py --fast` runs
    it (the step around plain `nn.Linear` layers is checked eagerly above, and compiled in the batch test)."""
    model = spread_model(300)
    compiled = CompiledDecoding(stream_weights(copy.deepcopy(model)))
    before = counters["stats"]["unique_graphs"]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not be compiled")  # the step must really run
        for prompt, n in ((torch.tensor([[1, 2, 3]]), 320), (torch.tensor([[4, 5]]), 40)):
            assert torch.equal(compiled.generate(prompt, n, temperature=0), model.generate(prompt, n, temperature=0))
            if n == 320:
                graphs = counters["stats"]["unique_graphs"] - before
    assert 1 <= graphs <= 4  # the step's three, and the streaming kernel, compiled on its own
    assert counters["stats"]["unique_graphs"] - before == graphs  # the second text: nothing new


@pytest.mark.slow  # compiles
def test_sampled_text_of_a_batch_equals_the_models(model):
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    expected = model.generate(prompt, 30, temperature=0.8, seed=7)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not be compiled")
        out = CompiledDecoding(copy.deepcopy(model)).generate(prompt, 30, temperature=0.8, seed=7)
    assert torch.equal(out, expected)


@pytest.mark.slow  # compiles
@torch.inference_mode()
def test_the_compiled_product_loop_reads_a_weight_row_and_a_stored_input():
    """The oracle is the program torch.compile writes. Left to itself, it folds ln_f into lm_head's loop and
    redoes the LayerNorm for every one of the vocabulary's rows: 6 loads per step of that loop (the weights,
    x, its mean and spread, the gain, the bias) instead of 3 (the weights, the stored normalized x times the
    gain, the bias).
    Checked by compiling without CompiledDecoding's option: 6 loads, and this test failed."""
    torch.manual_seed(0)
    model = stream_weights(GPT(GPTConfig(vocab_size=1237, block_size=64, n_layer=1, n_head=2, d_model=32)).eval(),
                           "bfloat16")
    compiled, cache = CompiledDecoding(model), model.new_kv_cache(1)
    token = torch.zeros(1, 1, dtype=torch.long)
    model(token, cache=cache)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not be compiled")  # the step must really compile
        _, sources = run_and_get_code(compiled, token, cache=cache)
    code = "\n".join(sources)
    assert "<static_cast<int64_t>(1237L)" in code, "no loop over lm_head's rows in the captured C++"
    start = code.index("<static_cast<int64_t>(1237L)")  # the loop over lm_head's 1,237 rows
    loop = code[start : code.index("[static_cast<int64_t>(x0)] =", start)]
    assert loop.count("loadu(") == 3


def test_without_a_compiler_it_warns_once_and_decodes_with_the_model(model):
    compiled = CompiledDecoding(copy.deepcopy(model))

    def broken(*args):
        raise BackendCompilerFailed("inductor", RuntimeError("no C++ compiler"), None)

    compiled.step = broken
    prompt = torch.tensor([[1, 2, 3]])
    with pytest.warns(UserWarning, match="could not be compiled") as caught:
        out = compiled.generate(prompt, 20, temperature=0)
    assert len(caught) == 1
    assert torch.equal(out, model.generate(prompt, 20, temperature=0))


def test_a_prompt_a_loss_and_a_full_context_go_to_the_model(model):
    assert_prompts_losses_and_full_contexts_go_to_the_model(CompiledDecoding(model), model)
