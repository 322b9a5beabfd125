"""Tests for src/engine/fused_gelu.py: GPT-2's GELU and its gradient in our C kernel (gelu.c), and where
training uses it.

Oracle: GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), and its derivative taken by autograd,
both in float64. PyTorch's own float32 GELU is held to the same tolerance, to show it is a float32 one.
Breaking the kernel on purpose (the erf GELU's slope, one term of the exponential's series dropped, 3 A x^2
written A x^2 in the derivative, the clamp removed) fails these tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from src.engine import fused_gelu
from src.engine.fused_gelu import FusedGELU, use_fused_gelu
from src.model import GPT, GPTConfig
from tests.conftest import assert_trains_alike


def gpt2_gelu(x: torch.Tensor) -> torch.Tensor:
    """The formula itself, in float64."""
    x = x.double()
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


FAR = [1e12, 1e15, 1e30, 3e38, -1e12, -1e15, -1e30, -3e38]  # where the formulas would overflow


def inputs(n: int = 20_001, seed: int = 0) -> torch.Tensor:
    """Typical activations, a sweep past where the kernel stops using the formulas (|z| > 87, |x| > ~9.9)
    both ways, and values far beyond."""
    g = torch.Generator().manual_seed(seed)
    far = torch.tensor(FAR)  # first (in whole blocks) and last (among the few left after the blocks)
    return torch.cat([far, 3 * torch.randn(n, generator=g), torch.linspace(-60, 60, 4001), far])


@pytest.fixture(scope="module", params=[(), fused_gelu.PLAIN], ids=["this machine's version", "plain loop"])
def flags(request):
    if not fused_gelu.KERNEL.available():
        pytest.fail("the GELU kernel does not compile here: " + fused_gelu.KERNEL.failed[0])
    return request.param


def test_the_two_versions_are_the_ones_compiled():
    assert fused_gelu.version(fused_gelu.PLAIN) == "plain"
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert fused_gelu.version() == "avx2"


def assert_float32_close(ours: torch.Tensor, expected: torch.Tensor) -> None:
    """Within a few float32 roundings of the float64 value: 4e-7 relative to the value, or to 1."""
    error = (ours.double() - expected).abs()
    allowed = 4e-7 * expected.abs().clamp(min=1.0)
    assert (error <= allowed).all(), f"worst error {error.max():.3g} at x = {(error - allowed).argmax()}"


def test_forward_is_gpt2s_gelu_within_float32_rounding(flags):
    x = inputs()
    assert_float32_close(fused_gelu.forward(x, flags), gpt2_gelu(x))
    assert_float32_close(F.gelu(x, approximate="tanh"), gpt2_gelu(x))  # PyTorch's: the same tolerance holds


def test_gradient_is_the_derivative_within_float32_rounding(flags):
    x, dy = inputs(seed=1), inputs(seed=2)
    x64 = x.double().requires_grad_()
    (expected,) = torch.autograd.grad(gpt2_gelu(x64), x64, dy.double())
    ours = fused_gelu.backward(x, dy, flags)
    scale = dy.double().abs().clamp(min=1.0)  # the gradient carries dy's size
    assert_float32_close(ours / scale, expected / scale)


@pytest.mark.parametrize("n", [1, 7, 8, 11, 31, 32, 333])  # whole blocks of 32 (or 8) and what is left
def test_every_length_and_shape(n, flags):
    x, dy = torch.randn(2, n, generator=torch.Generator().manual_seed(n)).unbind()
    y = fused_gelu.forward(x, flags)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert_float32_close(y, gpt2_gelu(x))
    x64 = x.double().requires_grad_()
    (expected,) = torch.autograd.grad(gpt2_gelu(x64), x64, dy.double())
    assert_float32_close(fused_gelu.backward(x, dy, flags), expected)
    strided = torch.randn(3, n).t()  # not contiguous: the op takes a contiguous copy
    assert_float32_close(fused_gelu.gelu(strided), gpt2_gelu(strided))


def test_nan_stays_nan_and_zero_is_zero(flags):
    x = torch.ones(70)
    x[[3, 40, 69]] = float("nan")  # in the first block, the second, and the last few elements
    x[[4, 41]] = 0.0
    y, dx = fused_gelu.forward(x, flags), fused_gelu.backward(x, torch.ones(70), flags)
    assert y.isnan().nonzero().flatten().tolist() == dx.isnan().nonzero().flatten().tolist() == [3, 40, 69]
    assert y[4] == y[41] == 0


def test_a_nan_or_infinite_gradient_stays_nan_at_both_far_ends(flags):
    """Far left the slope is 0 and far right 1, but not by dropping dy: a broken step's NaN or infinite gradient
    must come through, as NaN (0 * inf) or itself, as PyTorch's GELU passes it on, for the training loop to see."""
    n, bad_at = 70, [3, 35, 40, 69]  # in the first block, the second, and the tail after the whole blocks
    half = torch.full((n // 2,), 20.0)  # z > 87; its negative z < -87
    for x in (torch.cat([-half, half]), torch.cat([half, -half])):
        for bad in (float("nan"), float("inf")):
            dy = torch.ones(n)
            dy[bad_at] = bad
            dx = fused_gelu.backward(x, dy, flags)
            left, right = [i for i in bad_at if x[i] < 0], [i for i in bad_at if x[i] > 0]
            assert dx[left].isnan().all(), (x[left], dx[left])
            assert (dx[right].isnan() if math.isnan(bad) else dx[right] == bad).all(), (x[right], dx[right])
            assert int(dx.isfinite().sum()) == n - len(bad_at)


def test_negative_inputs_are_close_relative_to_their_small_values(flags):
    """Left of 0, gelu(x) and its slope shrink towards 0: an absolute bound would let a wrong small value
    through, so these are held relative to themselves too. The reference is the same formula written with
    0.5 (1 + tanh(u)) = sigmoid(2u), which keeps float64's digits where 1 + tanh(u) would cancel."""
    x = torch.linspace(-9, -0.01, 10_000)
    x64 = x.double().requires_grad_()
    expected = x64 * torch.sigmoid(2 * math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3))
    (slope,) = torch.autograd.grad(expected, x64, torch.ones_like(x64))
    ours, our_slope = fused_gelu.forward(x, flags).double(), fused_gelu.backward(x, torch.ones_like(x), flags).double()
    assert ((ours - expected) / expected).abs().max() < 2e-5  # float32's rounding of z, times |z| (up to 66)
    away = x < -2  # the slope crosses 0 at x = -0.75, where no relative bound can hold
    assert ((our_slope - slope) / slope)[away].abs().max() < 2e-5


def test_infinities_take_the_limits(flags):
    x = torch.tensor([float("inf"), float("-inf")]).repeat(35)  # 70: in whole blocks and after them
    assert fused_gelu.forward(x, flags).tolist() == [float("inf"), 0.0] * 35
    assert fused_gelu.backward(x, torch.full((70,), 3.0), flags).tolist() == [3.0, 0.0] * 35


def test_the_result_does_not_depend_on_the_thread_count():
    x, dy = inputs(seed=3), inputs(seed=4)
    threads = torch.get_num_threads()  # the test session runs on 1 (conftest): compare it with 4
    try:
        torch.set_num_threads(4)
        four = fused_gelu.forward(x), fused_gelu.backward(x, dy)
    finally:
        torch.set_num_threads(threads)
    torch.set_num_threads(1)
    try:
        one = fused_gelu.forward(x), fused_gelu.backward(x, dy)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], four[0]) and torch.equal(one[1], four[1])


def test_the_op_passes_pytorchs_checks_and_compiles_into_a_graph():
    x = torch.randn(4, 40, generator=torch.Generator().manual_seed(4), requires_grad=True)
    torch.library.opcheck(fused_gelu.gelu, (x,))  # schema, fake tensor, autograd registration
    torch.library.opcheck(fused_gelu.gelu, (x.detach().t().requires_grad_(),))  # strided: a contiguous result
    compiled = torch.compile(lambda t: fused_gelu.gelu(t * 2) + 1, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), fused_gelu.gelu(x * 2) + 1)


def test_inputs_the_c_code_would_misread_are_refused():
    with pytest.raises(ValueError, match="float32"):
        fused_gelu.gelu(torch.randn(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="one shape"):
        fused_gelu.gelu_backward(torch.randn(5), torch.randn(6))


def test_the_module_falls_back_to_pytorch_for_other_dtypes():
    x = torch.randn(64, generator=torch.Generator().manual_seed(5))
    assert torch.equal(FusedGELU()(x.bfloat16()), F.gelu(x.bfloat16(), approximate="tanh"))
    torch.testing.assert_close(FusedGELU()(x), F.gelu(x, approximate="tanh"), atol=1e-6, rtol=1e-6)


def test_a_gpt_with_the_kernel_trains_as_without_it():
    """Every MLP's GELU is swapped; the loss and every gradient match the model as built, to float32 rounding."""
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=3, n_head=2, d_model=32)
    torch.manual_seed(0)
    plain, fused = GPT(config), GPT(config)
    fused.load_state_dict(plain.state_dict())
    assert use_fused_gelu(fused) == 3
    assert sum(isinstance(m, FusedGELU) for m in fused.modules()) == 3
    assert not any(isinstance(m, nn.GELU) for m in fused.modules())
    assert_trains_alike(plain, fused, seed=6)


def test_training_on_a_cpu_uses_the_kernel(cpu_run_swaps):
    assert cpu_run_swaps("use_fused_gelu") == [2]


def test_without_a_compiler_nothing_is_swapped(swap_without_a_compiler):
    model, caught = swap_without_a_compiler(fused_gelu, use_fused_gelu)
    assert len(caught) == 1 and "gelu.c could not be compiled" in str(caught[0].message)
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == 2
