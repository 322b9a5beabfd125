"""Tests for src/engine/decode_step.py: GPT's one-token step in C (decode_step.c).

Oracles: the same model in float64 (for int8 and bfloat16 weights, a float64 model holding the weights as
rounded), and the model's own generation (`GPT.generate`), greedy and sampled, past the cache sliding. Both
versions of dot.h's sums are checked: the AVX2 one this machine compiles, and the plain loops, compiled here
on purpose. Breaking the C step on purpose (the key written one position late, the softmax's sum over pos
keys instead of pos + 1, the variance without its eps, GELU left out, every text of a batch written into the
first row, one of dot.h's four sums or its last n % 32 weights left out, bfloat16 halves shifted 15
places instead of 16, in either version) fails these tests.
"""

from __future__ import annotations

import copy

import pytest
import torch

from src.bigram import BigramLanguageModel
from src.engine import decode_step
from src.engine.decode_step import PLAIN, CDecoding
from src.engine.matvec import stream_weights
from src.engine.quantize import quantize_int8
from src.model import GPT, GPTConfig
from tests.conftest import assert_prompts_losses_and_full_contexts_go_to_the_model, assert_unavailable_with_one_warning

# 3 heads of 12 (not a whole vector), a width of 36 (not whole blocks of 32 numbers), a context of 40
CONFIG = dict(vocab_size=70, block_size=40, n_layer=2, n_head=3, d_model=36)


def spread_model(seed: int = 0) -> GPT:
    """A small GPT with spread weights and biases: clearly separated logits, so that greedy text does not
    hinge on rounding, and biases and LayerNorm gains that are not 0 and 1."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**CONFIG)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") else 0.0,
                      0.3 if p.dim() == 2 else 0.1)
    return model


def float64_twin(model: GPT) -> GPT:
    """The model in float64, an int8 model's weights dequantized (W = Wq * scale): the oracle."""
    twin = GPT(GPTConfig(**CONFIG)).double().eval()
    twin.lm_head.weight = torch.nn.Parameter(twin.lm_head.weight.clone())  # untied: int8 gives lm_head its own
    state = {}
    for name, value in model.state_dict().items():
        if name.endswith("weight_int8"):
            scale = model.state_dict()[name.removesuffix("weight_int8") + "scale"]
            state[name.removesuffix("_int8")] = value.double() * scale.double()[:, None]
        elif not name.endswith(("scale", "scale_bf16")):
            state[name] = value.double()
    state.setdefault("lm_head.weight", state["transformer.wte.weight"])  # float32: tied, the same weights
    twin.load_state_dict(state)
    return twin


@pytest.fixture(scope="module", params=[(), PLAIN], ids=["this machine's version", "plain loops"])
def flags(request):
    if not decode_step.available():
        pytest.fail("the C decoding step does not compile here: " + decode_step.KERNEL.failed[0])
    return request.param


@pytest.fixture(params=["float32", "int8"])
def model(request) -> GPT:
    model = spread_model()
    return quantize_int8(model) if request.param == "int8" else model


def test_the_two_versions_are_the_ones_compiled():
    assert decode_step.version(PLAIN) == "plain"
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert decode_step.version() == "avx2"


@torch.inference_mode()
def test_each_step_gives_the_logits_and_cache_of_the_float64_model(flags, model):
    """Token by token from a 4-token prompt to the end of the context: the logits of the model in float64, as
    close as the float32 model's own, and the keys and values the model itself writes."""
    ids = torch.randint(0, 70, (1, 40), generator=torch.Generator().manual_seed(1))
    stepped, twin = CDecoding(model, flags), float64_twin(model)
    ours, theirs, exact = model.new_kv_cache(1), model.new_kv_cache(1), twin.new_kv_cache(1)
    for m, cache in ((model, ours), (model, theirs), (twin, exact)):
        m(ids[:, :4], cache=cache)
    for pos in range(4, 40):
        token = ids[:, pos : pos + 1]
        logits, loss = stepped(token, cache=ours)  # (1, 1, V)
        assert loss is None and ours.pos == pos + 1
        expected = twin(token, cache=exact)[0].float()
        torch.testing.assert_close(logits, expected, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(model(token, cache=theirs)[0], expected, atol=2e-5, rtol=1e-5)  # the yardstick
    for layer in range(2):
        torch.testing.assert_close(ours.k[layer], theirs.k[layer], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.v[layer], theirs.v[layer], atol=1e-5, rtol=1e-5)


def test_greedy_and_sampled_text_are_the_models_past_the_cache_sliding(flags, model):
    """100 new tokens with a context of 40: the C step for the first ones, then the model re-reading the last
    40 tokens at every step; the C step must really have run (no one-token step of the model in the first 40)."""
    stepped = CDecoding(copy.deepcopy(model), flags)
    one_token_calls = []
    stepped.model.register_forward_pre_hook(
        lambda m, args, kwargs: one_token_calls.append(kwargs["cache"].pos) if args[0].shape[1] == 1 else None,
        with_kwargs=True)
    prompt = torch.tensor([[1, 2, 3]])
    assert torch.equal(stepped.generate(prompt, 100, temperature=0), model.generate(prompt, 100, temperature=0))
    assert one_token_calls == []  # every step before the slide was the C step's
    assert torch.equal(stepped.generate(prompt, 60, temperature=0.9, top_k=20, seed=5),
                       model.generate(prompt, 60, temperature=0.9, top_k=20, seed=5))


def test_a_batch_of_texts_is_stepped_together_and_gives_each_texts_own_text(flags, model):
    """Three prompts of one length, sampled with a seed per row: the same texts as the model's, and each
    row the same as when it is generated alone."""
    stepped = CDecoding(copy.deepcopy(model), flags)
    prompts = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    batch = stepped.generate(prompts, 30, temperature=0.9, seed=[11, 12, 13])
    assert torch.equal(batch, model.generate(prompts, 30, temperature=0.9, seed=[11, 12, 13]))
    assert torch.equal(batch[1:2], stepped.generate(prompts[1:2], 30, temperature=0.9, seed=[12]))


@torch.inference_mode()
def test_the_result_does_not_depend_on_the_number_of_threads(model):
    threads = torch.get_num_threads()
    ids = torch.randint(0, 70, (1, 30), generator=torch.Generator().manual_seed(2))
    results = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            stepped, cache = CDecoding(model), model.new_kv_cache(1)
            model(ids[:, :1], cache=cache)
            results.append(torch.cat([stepped(ids[:, p : p + 1], cache=cache)[0] for p in range(1, 30)]))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0], results[1])


def test_a_prompt_a_loss_and_a_full_context_go_to_the_model():
    model = spread_model()
    assert_prompts_losses_and_full_contexts_go_to_the_model(CDecoding(model), model)


def test_a_token_outside_the_vocabulary_is_refused():
    model = spread_model()
    cache = model.new_kv_cache(1)
    model(torch.tensor([[1]]), cache=cache)
    with pytest.raises(IndexError, match="outside the vocabulary"):
        CDecoding(model)(torch.tensor([[70]]), cache=cache)


@torch.inference_mode()
def test_bfloat16_weights_give_the_logits_of_the_model_with_its_weights_rounded(flags):
    """engine/matvec.py's bfloat16 weights (a model the C step can read, though sample.py has no flag for it):
    the logits of the float64 model holding the rounded weights, token by token, and that model's greedy text."""
    streamed = stream_weights(spread_model(), "bfloat16")
    twin = float64_twin(streamed)  # bfloat16 values are exact in float64
    stepped = CDecoding(streamed, flags)
    ids = torch.randint(0, 70, (1, 40), generator=torch.Generator().manual_seed(3))
    ours, exact = streamed.new_kv_cache(1), twin.new_kv_cache(1)
    streamed(ids[:, :4], cache=ours)
    twin(ids[:, :4], cache=exact)
    for pos in range(4, 40):
        token = ids[:, pos : pos + 1]
        torch.testing.assert_close(stepped(token, cache=ours)[0], twin(token, cache=exact)[0].float(),
                                   atol=2e-5, rtol=1e-5)
    prompt = torch.tensor([[1, 2, 3]])
    assert torch.equal(stepped.generate(prompt, 60, temperature=0), twin.float().generate(prompt, 60, temperature=0))


def test_weights_it_would_misread_are_refused():
    """A weight that is not contiguous (a transposed view) would be read in the wrong order: refused at the
    first step, naming the tensor."""
    model = spread_model()
    attn = model.transformer.h[1].attn
    attn.c_proj.weight = torch.nn.Parameter(attn.c_proj.weight.detach().t().contiguous().t())  # same values
    with pytest.raises(ValueError, match=r"h\.1\.attn\.c_proj\.weight is torch\.float32 \(36, 36\).*not contiguous"):
        CDecoding(model).generate(torch.tensor([[1, 2]]), 2)


def test_logits_are_float32_on_the_cpu_whatever_the_defaults():
    """The C step writes float32: its buffer must be float32 even where torch's default dtype is not."""
    model = spread_model()
    prompt = torch.tensor([[1, 2, 3]])
    expected = model.generate(prompt, 20, temperature=0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cache = model.new_kv_cache(1)
        model(prompt, cache=cache)
        logits, _ = CDecoding(model)(torch.tensor([[4]]), cache=cache)
        assert logits.dtype == torch.float32 and logits.shape == (1, 1, 70)
        assert torch.equal(CDecoding(model).generate(prompt, 20, temperature=0), expected)
    finally:
        torch.set_default_dtype(before)


def test_weights_that_move_after_the_first_step_are_read_again():
    """The C code holds the weights' addresses: when the model's tensors are replaced (a dtype round trip, a
    new `.data`), the next step must read the new ones, never the freed memory of the old."""
    model, fresh = spread_model(), spread_model(seed=1)
    stepped, prompt = CDecoding(model), torch.tensor([[1, 2, 3]])
    assert torch.equal(stepped.generate(prompt, 10, temperature=0), model.generate(prompt, 10, temperature=0))
    model.to(torch.bfloat16).float()  # every tensor replaced by a copy: the old storage is freed
    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), fresh.parameters(), strict=True):
            mine.data = theirs.data.clone()  # new storage again, and other values
    assert torch.equal(stepped.generate(prompt, 30, temperature=0), fresh.generate(prompt, 30, temperature=0))


def test_a_cache_of_another_shape_is_refused():
    """C writes each key and value at (B, n_head, block_size, head size): a cache laid out otherwise would be
    written out of bounds."""
    model, other = spread_model(), GPT(GPTConfig(**{**CONFIG, "block_size": 20}))
    cache = other.new_kv_cache(1)
    model(torch.tensor([[1]]), cache=cache)
    with pytest.raises(ValueError, match=r"a cache of another model"):
        CDecoding(model)(torch.tensor([[2]]), cache=cache)


def test_a_model_without_a_cache_decodes_as_it_always_does():
    """The bigram has no KV cache, so no one-token step: the wrapper changes nothing (as `sample.py --fast`
    on a bigram checkpoint)."""
    torch.manual_seed(0)
    bigram = BigramLanguageModel(vocab_size=70)
    prompt = torch.tensor([[1, 2]])
    assert torch.equal(CDecoding(bigram).generate(prompt, 20, seed=3), bigram.generate(prompt, 20, seed=3))


def test_streamed_float32_weights_give_the_models_text():
    model = spread_model()
    prompt = torch.tensor([[1, 2, 3]])
    assert torch.equal(CDecoding(stream_weights(copy.deepcopy(model))).generate(prompt, 30, temperature=0),
                       model.generate(prompt, 30, temperature=0))


def test_without_a_compiler_it_is_unavailable_with_one_warning(monkeypatch):
    assert decode_step.KERNEL.fallback == "the model's own steps"
    assert_unavailable_with_one_warning(monkeypatch, decode_step)
