"""Tests for src/engine/matvec.py: the streaming matrix-vector kernel against a float64 reference in every
weight format, the layer swap, and decoding with it (greedy text equal to the plain model's)."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from torch._dynamo.exc import BackendCompilerFailed

from src.engine import matvec
from src.engine.matvec import StreamingLinear, rowwise_dot, stream_weights
from src.model import GPT, GPTConfig
from tests.conftest import spread


def reference(weight: torch.Tensor, bias, x: torch.Tensor) -> torch.Tensor:
    """x W^T plus the bias, in float64."""
    y = x.double() @ weight.double().t()
    return y if bias is None else y + bias.double()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(48, 40), (7, 300)])  # out, in: a length that is no multiple of a vector
def test_the_compiled_kernel_equals_a_float64_reference(dtype, shape):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(shape, generator=gen).to(dtype)
    x = torch.randn(shape[1], generator=gen)
    y = matvec.kernel()(weight, x)
    assert y.shape == (shape[0],) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), reference(weight, None, x), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(rowwise_dot(weight, x), y, atol=1e-4, rtol=1e-5)  # eager: the same maths


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows", [1, 5])  # one row: the kernel; several: the usual product
def test_a_streaming_layer_computes_its_linear(dtype, rows):
    torch.manual_seed(0)
    linear = nn.Linear(40, 24)
    layer = StreamingLinear(linear, matvec.WEIGHT_DTYPES[dtype])
    x = torch.randn(1, rows, 40)
    y = layer(x)
    assert y.shape == (1, rows, 24) and y.dtype == torch.float32
    torch.testing.assert_close(y.double(), reference(layer.weight, linear.bias, x), atol=1e-4, rtol=1e-5)
    rounding = {"float32": 1e-5, "bfloat16": 0.05}[dtype]  # how far from the float32 layer
    torch.testing.assert_close(y, linear(x), atol=rounding, rtol=0)


def test_stream_weights_swaps_every_linear_and_keeps_float32_tied():
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, d_model=32))
    stream_weights(model, "float32")
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert sum(isinstance(m, StreamingLinear) for m in model.modules()) == 2 * 4 + 1
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # float32: no copy


def test_decoding_with_streamed_weights_gives_the_plain_models_greedy_text():
    model = spread(GPT(GPTConfig(vocab_size=20, block_size=32, n_layer=2, n_head=2, d_model=32)))
    prompt = torch.tensor([[1, 2, 3]])
    plain = model.generate(prompt, 40, temperature=0)  # 40 > block_size - 3: the cache slides too
    streamed = stream_weights(copy.deepcopy(model), "float32")
    assert torch.equal(streamed.generate(prompt, 40, temperature=0), plain)
    bf16 = stream_weights(copy.deepcopy(model), "bfloat16")
    assert (bf16.generate(prompt, 40, temperature=0) == plain).float().mean() > 0.5  # rounded: mostly the same


def test_without_a_compiler_it_warns_once_and_falls_back(monkeypatch):
    def broken(weight, x):
        raise BackendCompilerFailed("inductor", RuntimeError("no C++ compiler"), None)

    monkeypatch.setattr(matvec, "_broken", [])
    monkeypatch.setattr(matvec, "_compiled", [broken])
    layer = StreamingLinear(nn.Linear(8, 4))
    x = torch.randn(1, 8)
    with pytest.warns(UserWarning, match="could not be compiled"):
        y = layer(x)
    torch.testing.assert_close(y, layer(x))  # the fallback gives the same numbers ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... and no second warning
        layer(x)
    assert matvec.kernel() is None


def test_a_mistake_in_the_kernel_is_not_taken_for_a_missing_compiler(monkeypatch):
    """Only what compiling fails with falls back; any other error is a bug and surfaces as it is."""
    def wrong(weight, x):
        raise IndexError("a bug in the maths")

    monkeypatch.setattr(matvec, "_broken", [])
    monkeypatch.setattr(matvec, "_compiled", [wrong])
    with pytest.raises(IndexError, match="a bug"):
        StreamingLinear(nn.Linear(8, 4))(torch.randn(1, 8))
