"""Tests for src/engine/int8_matvec.py: the C kernel for int8 weights times a few float32 vectors.

Oracle: the same product in float64, (x W^T) * scale with the int8 weights as they are. Both versions of the
C code are checked: the AVX2 one this machine compiles, and the plain loop, compiled here on purpose.
Breaking either on purpose (dropping the last n % 32 weights, a sign lost in widening the bytes, one of the
four sums left out) fails these tests.
"""

from __future__ import annotations

import pytest
import torch

from src.engine import int8_matvec
from tests.conftest import assert_unavailable_with_one_warning

PLAIN = ("-DDOT_PLAIN",)  # the C file's plain loop, on any machine


def reference(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x.double() @ weight.double().t()) * scale.double()  # (batch, out)


def case(batch: int, out: int, n_in: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randint(-127, 128, (out, n_in), generator=g, dtype=torch.int8)
    x = torch.randn(batch, n_in, generator=g)
    scale = torch.rand(out, generator=g) / 127
    return x, weight, scale


@pytest.fixture(scope="module", params=[(), PLAIN], ids=["this machine's version", "plain loop"])
def flags(request):
    if not int8_matvec.available():
        pytest.fail("the int8 kernel does not compile here: " + int8_matvec.KERNEL.failed[0])
    return request.param


def test_the_two_versions_are_the_ones_compiled():
    assert int8_matvec.version(PLAIN) == "plain"
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert int8_matvec.version() == "avx2"


# in: a multiple of 32 (only the vector loop), 32 + 5 and 100 (a tail), fewer than one vector; batch 1 and 3
@pytest.mark.parametrize("batch,out,n_in", [(1, 64, 32), (1, 300, 768), (3, 33, 100), (1, 5, 37), (2, 7, 3),
                                            (1, 1, 1), (4, 50, 3072)])
def test_the_kernel_computes_the_product_of_the_int8_weights(flags, batch, out, n_in):
    x, weight, scale = case(batch, out, n_in)
    y = int8_matvec.int8_matvec(x, weight, scale, extra_flags=flags)
    assert y.shape == (batch, out) and y.dtype == torch.float32
    # float32 sums of n_in products: off by at most a few float32 steps of the sum of their sizes
    bound = (x.double().abs() @ weight.double().abs().t()) * scale.double() * n_in * 2 ** -23
    assert ((y.double() - reference(x, weight, scale)).abs() <= bound + 1e-30).all()


def test_every_weight_counts_with_its_sign_and_the_extremes_are_exact(flags):
    """One weight at a time, at every position of a row (the four sums, the tail), -127 and 127: the kernel must
    return exactly that weight times its x."""
    n_in = 70  # 2 vector steps of 32, and a tail of 6
    x = torch.arange(1, n_in + 1, dtype=torch.float32)[None]  # (1, in): position i gives i + 1
    for value in (-127, 127, -1):
        weight = torch.zeros(n_in, n_in, dtype=torch.int8)
        weight.fill_diagonal_(value)  # row j holds one weight, at position j
        y = int8_matvec.int8_matvec(x, weight, torch.ones(n_in), extra_flags=flags)
        assert torch.equal(y[0], value * x[0])


def test_the_result_does_not_depend_on_the_number_of_threads():
    x, weight, scale = case(2, 1000, 200, seed=3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = int8_matvec.int8_matvec(x, weight, scale)
        torch.set_num_threads(2)
        two = int8_matvec.int8_matvec(x, weight, scale)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_the_op_is_the_kernel_and_compiles_into_a_graph():
    x, weight, scale = case(1, 40, 64, seed=1)
    direct = int8_matvec.int8_matvec(x, weight, scale)
    op = torch.ops.gpt2_scratch.int8_matvec.default
    assert torch.equal(op(x, weight, scale), direct)
    torch.library.opcheck(op, (x, weight, scale))  # schema, the shape the compiler plans with, dispatch
    compiled = torch.compile(lambda x: op(x * 2, weight, scale) + 1, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(x), direct * 2 + 1)


def test_the_output_is_float32_whatever_the_default_dtype():
    x, weight, scale = case(1, 8, 40)
    expected = int8_matvec.int8_matvec(x, weight, scale)
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        y = int8_matvec.int8_matvec(x, weight, scale)
    finally:
        torch.set_default_dtype(default)
    assert y.dtype == torch.float32 and torch.equal(y, expected)


def test_no_rows_and_no_columns():
    x, weight, scale = case(0, 5, 16)
    assert int8_matvec.int8_matvec(x, weight, scale).shape == (0, 5)
    x, weight, scale = case(2, 5, 0)
    assert torch.equal(int8_matvec.int8_matvec(x, weight, scale), torch.zeros(2, 5))


def test_there_is_no_gradient_to_take():
    x, weight, scale = case(1, 5, 16)
    y = torch.ops.gpt2_scratch.int8_matvec(x.requires_grad_(), weight, scale)
    with pytest.raises(RuntimeError, match="for generation only"):
        y.sum().backward()


@pytest.mark.parametrize("bad", ["x float64", "weight float32", "scale float64", "x not contiguous",
                                 "weight transposed", "scale strided", "scale too short", "x 1-d", "weight 1-d",
                                 "x of another width", "x on the meta device"])
def test_inputs_the_c_code_would_misread_are_refused(bad):
    x, weight, scale = case(2, 6, 8)
    if bad == "x float64":
        x = x.double()
    elif bad == "weight float32":
        weight = weight.float()
    elif bad == "scale float64":
        scale = scale.double()
    elif bad == "x not contiguous":
        x = torch.randn(8, 2).t()
    elif bad == "weight transposed":
        weight = torch.zeros(8, 6, dtype=torch.int8).t()
    elif bad == "scale strided":
        scale = torch.ones(12)[::2]
    elif bad == "x on the meta device":
        x = x.to("meta")
    elif bad == "scale too short":
        scale = scale[:5]
    elif bad == "x 1-d":
        x = x[0]
    elif bad == "weight 1-d":
        weight = weight[0]
    else:
        x = torch.randn(2, 9)
    with pytest.raises(ValueError, match="int8_matvec takes"):
        int8_matvec.int8_matvec(x, weight, scale)


def test_without_a_compiler_the_kernel_is_unavailable_with_one_warning(monkeypatch):
    assert int8_matvec.KERNEL.fallback == "PyTorch's int8 kernel"
    assert_unavailable_with_one_warning(monkeypatch, int8_matvec)
