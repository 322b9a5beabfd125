"""Tests for src/engine/quantize.py: int8 weights with one scale per row, for faster CPU generation.

Oracles: a float64 computation with the dequantized weights (Wq * scale) for what each layer must
return, and the float32 model for how close the quantized model stays. The fast one-row kernel (ours, in
C: tests/test_int8_matvec.py) is also checked to be the one actually used while decoding, so a silent
fall-back to a slower path would fail; PyTorch's kernel, used where ours cannot be compiled, is checked too.
These tests expect a C compiler (as `torch.compile` does): without one, ours is not the kernel in use.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

import src.engine.quantize as quantize
from src.engine import int8_matvec
from src.engine.checkpoint import save_checkpoint
from src.engine.decode import CompiledDecoding
from src.engine.quantize import Int8Linear, is_quantized, quantize_int8, quantize_rows
from src.model import GPT, GPTConfig
from src.tokenizer import CharTokenizer


def dequantized(layer: Int8Linear) -> torch.Tensor:
    return layer.weight_int8.double() * layer.scale.double()[:, None]  # (out, in)


def reference(layer: Int8Linear, x: torch.Tensor) -> torch.Tensor:
    """What the layer computes, in float64 with the dequantized weight."""
    bias = None if layer.bias is None else layer.bias.double()
    return F.linear(x.double(), dequantized(layer), bias)


# --- quantize_rows ----------------------------------------------------------------------------------


def test_rows_round_to_within_half_a_step_of_their_own_scale():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 96, generator=g) * torch.logspace(-3, 1, 64)[:, None]  # rows of very different size
    q, scale = quantize_rows(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape and scale.shape == (64,)
    assert q.abs().max() == 127 and q.min() >= -127  # the largest |w| of a row maps to +-127, never -128
    assert torch.allclose(scale.double(), weight.double().abs().amax(dim=1) / 127)
    error = (q.double() * scale.double()[:, None] - weight.double()).abs()  # (64, 96)
    assert (error <= scale.double()[:, None] / 2 * (1 + 1e-6)).all()  # each weight: half a step of its row
    # A per-row scale keeps the small rows precise: one scale for the whole matrix would round them to 0.
    assert (q[0] != 0).sum() > 48


def test_an_all_zero_row_stays_zero_without_dividing_by_zero():
    weight = torch.zeros(3, 8)
    weight[1] = torch.linspace(-1, 1, 8)
    q, scale = quantize_rows(weight)
    assert torch.isfinite(scale).all() and (q[0] == 0).all() and (q[2] == 0).all()
    assert torch.allclose(q[1].float() * scale[1], weight[1], atol=1 / 254)


# --- Int8Linear -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["ours", "PyTorch's"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 48), (1, 48), (3, 7, 48), (2, 1, 48), (2, 20, 48)], ids=str)
def test_layer_computes_the_product_with_the_dequantized_weight(shape, bias, kernel):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80, bias=bias)
    if bias:
        nn.init.normal_(linear.bias)
    layer = Int8Linear(linear)
    assert layer.own_kernel  # the C compiler is here: ours is the one decoding uses
    layer.own_kernel = kernel == "ours"
    x = torch.randn(shape)
    y = layer(x)
    assert y.shape == (*shape[:-1], 80) and y.dtype == torch.float32
    expected = reference(layer, x)
    few_rows = math.prod(shape[:-1]) <= quantize.KERNEL_MAX_ROWS
    tolerance = 2e-2 if few_rows and kernel == "PyTorch's" else 1e-5  # PyTorch's kernel: bfloat16 activations
    assert (y.double() - expected).abs().max() <= tolerance * expected.abs().max()
    # And the rounding of the weights moved the result only a little from the float32 layer's:
    exact = linear(x).double()
    assert (y.double() - exact).abs().max() <= 3e-2 * exact.abs().max()


def record_kernel_calls(monkeypatch) -> tuple[list, list]:
    """Record the batch of every call to our kernel and to PyTorch's, and let each compute as usual."""
    ours, pytorch = [], []
    compile_kernel, real = int8_matvec.compile_kernel, quantize._int8_matmul
    assert real is not None  # this PyTorch has its kernel; without it the layer would be slow, not wrong

    class Recording:
        def __init__(self, library):
            self.library = library

        def int8_matvec(self, *args):
            ours.append(args[4])  # weight, scale, x, y, batch, out, in
            return self.library.int8_matvec(*args)

    def pytorch_recording(x, weight, scale):
        pytorch.append(x.shape[0])
        return real(x, weight, scale)

    monkeypatch.setattr(int8_matvec, "compile_kernel", lambda flags=(): Recording(compile_kernel(flags)))
    monkeypatch.setattr(quantize, "_int8_matmul", pytorch_recording)
    return ours, pytorch


def test_decoding_rows_use_our_kernel_and_a_long_prompt_does_not(monkeypatch):
    ours, pytorch = record_kernel_calls(monkeypatch)
    layer = Int8Linear(nn.Linear(32, 16))
    layer(torch.randn(1, 1, 32))  # one sample, one new token
    layer(torch.randn(4, 1, 32))  # --num-samples 4
    assert ours == [1, 4] and pytorch == []
    layer(torch.randn(1, 40, 32))  # a prompt of 40 tokens: dequantize and multiply instead
    assert ours == [1, 4] and pytorch == []


def test_without_a_c_compiler_decoding_uses_pytorchs_kernel(monkeypatch):
    ours, pytorch = record_kernel_calls(monkeypatch)
    monkeypatch.setattr(int8_matvec.KERNEL, "failed", ["no compiler"])  # as after available() failed to compile
    layer = Int8Linear(nn.Linear(32, 16))
    assert not layer.own_kernel
    layer(torch.randn(1, 1, 32))
    assert ours == [] and pytorch == [1]


def test_every_path_gives_the_same_result_up_to_rounding(monkeypatch):
    torch.manual_seed(1)
    layer = Int8Linear(nn.Linear(64, 24))
    x = torch.randn(1, 64)
    ours = layer(x)
    layer.own_kernel = False
    pytorchs = layer(x)
    monkeypatch.setattr(quantize, "_int8_matmul", None)
    dequantized_product = layer(x)
    assert torch.allclose(ours, dequantized_product, rtol=0, atol=1e-5 * dequantized_product.abs().max().item())
    assert torch.allclose(pytorchs, dequantized_product, rtol=0, atol=2e-2 * dequantized_product.abs().max().item())


# --- a whole GPT ----------------------------------------------------------------------------------------------


def make_gpt(seed: int = 0, separated: bool = False) -> GPT:
    """A small GPT; `separated` scales lm_head so logits are well apart, like a trained model's, and the
    argmax is meaningful."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=50, block_size=24, n_layer=2, n_head=2, d_model=64)).eval()
    if separated:
        with torch.no_grad():
            model.lm_head.weight.mul_(20)
    return model


def test_every_linear_is_replaced_and_the_embeddings_stay_float():
    model = quantize_int8(make_gpt())
    layers = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 4 * 2 + 1  # c_attn, c_proj, c_fc, c_proj per block, and lm_head
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert model.transformer.wte.weight.dtype == torch.float32 and is_quantized(model)
    assert not is_quantized(make_gpt())


def test_quantized_logits_stay_close_to_float32_and_keep_the_argmax():
    model = make_gpt(separated=True)
    int8 = quantize_int8(copy.deepcopy(model))
    idx = torch.randint(0, 50, (3, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact, _ = model(idx)  # (3, 24, V)
        approx, _ = int8(idx)
    assert (approx - exact).abs().max() < 0.02 * exact.abs().max()
    kl = F.kl_div(approx.log_softmax(-1), exact.log_softmax(-1), log_target=True, reduction="batchmean")
    assert kl < 1e-3
    assert (approx.argmax(-1) == exact.argmax(-1)).float().mean() > 0.95


def test_cached_generation_with_int8_follows_the_float_model():
    model = make_gpt(separated=True)
    int8 = quantize_int8(copy.deepcopy(model))
    prompt = torch.tensor([[1, 2, 3]])
    tokens = int8.generate(prompt, 40, temperature=0)  # past block_size 24: decode steps and re-prefills
    assert tokens.shape == (1, 43)
    # Teacher-forced on the int8 text, the float model would have chosen (nearly) the same tokens.
    with torch.no_grad():
        logits, _ = model(tokens[:, -24:-1])
    agree = (logits.argmax(-1) == tokens[:, -23:]).float().mean()
    assert agree > 0.9


@pytest.mark.slow  # compiles (~15 s)
def test_the_compiled_step_of_an_int8_model_calls_our_kernel_and_gives_its_text(monkeypatch):
    """`--int8 --fast`: inside the compiled step our kernel is an op like any other. The step gives the int8
    model's own greedy text, and every product of every step is a call to our kernel."""
    model = quantize_int8(make_gpt(separated=True))
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])  # a batch of 2
    expected = model.generate(prompt, 20, temperature=0)
    ours, pytorch = record_kernel_calls(monkeypatch)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*could not be compiled")  # the step must really run
        out = CompiledDecoding(model).generate(prompt, 20, temperature=0)
    assert torch.equal(out, expected)
    # 9 int8 layers: the prompt (2 x 3 rows) through the model, lm_head on its last position only (2 rows),
    # then 19 compiled one-token steps of 2 rows
    assert ours == [6] * 8 + [2] + [2] * 9 * 19 and pytorch == []


def test_saving_a_quantized_model_is_refused(tmp_path):
    model = quantize_int8(make_gpt())
    with pytest.raises(ValueError, match="int8"):
        save_checkpoint(tmp_path, model, CharTokenizer([chr(65 + i) for i in range(50)]))
    assert not any(tmp_path.iterdir())  # nothing half-written
