"""GPT-2's GELU for CPU training, in one pass over memory each way: a small C kernel of our own (gelu.c).

Why. On a CPU, the MLP's GELU and its gradient took 12-13% of a training step of the `quality-300s` model
(4 layers, 96 wide, 4,096 tokens, on a 2-core AMD EPYC Zen 3): PyTorch evaluates tanh with a library routine
that is slow there. gelu.c computes the same function with one exponential of its own (see the C file), 32
floats per step with AVX2: 2.9-3.0x faster forward and backward in the latest runs (2.94x, 2.91x and 2.98x), 1.07x the
whole step with this kernel alone (`python bench/train_speed.py --levers`, `bench/README.md`).

What changes. Nothing but float32 rounding: both are checked against float64 GPT-2 GELU and its derivative
(tests/test_fused_gelu.py), to 4e-7 of the value (or of 1, near 0). Training takes the same path on every run,
so a run on the same kind of CPU still repeats itself exactly (and resumes exactly). The gradient has no
gradient of its own: `create_graph=True` through it (a second derivative) is not supported.

How it is used. The model keeps `nn.GELU(approximate="tanh")` (model.py: the reading path says what is
computed); train.py calls `use_fused_gelu(model)` when it trains on a CPU, which puts a `FusedGELU` in its
place. That module calls the kernel for float32 tensors on the CPU and PyTorch's GELU for anything else
(bf16 autocast, a GPU), so it is never wrong, only sometimes not faster. Where the C file does not compile,
nothing is swapped (a warning says so once).

The kernel is registered as the PyTorch op `torch.ops.gpt2_scratch.gelu`, with its gradient, so that a
model compiled whole (`--compile on`) can call it like any other operation.

Who uses it: train.py, `bench/train_speed.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from src.engine.ckernel import Kernel


def _declare(library: ctypes.CDLL) -> None:
    # gelu_forward(x, y, n, threads), gelu_backward(x, dy, dx, n, threads)
    library.gelu_forward.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64, ctypes.c_int]
    library.gelu_backward.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64, ctypes.c_int]
    library.gelu_forward.restype = library.gelu_backward.restype = None
    library.gelu_version.restype = ctypes.c_char_p


# -fno-trapping-math lets the compiler turn the plain loop's clamp into vector blends (no FP traps here).
KERNEL = Kernel(Path(__file__).with_name("gelu.c"), _declare, fallback="PyTorch's GELU",
                flags=("-fno-trapping-math",))
PLAIN = ("-DGELU_PLAIN",)  # the C file's plain loop, on any machine


def version(extra_flags: tuple[str, ...] = ()) -> str:
    """Which version of the C code this machine compiled: "avx2" or "plain"."""
    return KERNEL.library(extra_flags).gelu_version().decode()


def _check(*tensors: torch.Tensor) -> None:
    if not all(t.dtype == torch.float32 and t.is_cpu and t.is_contiguous() and t.shape == tensors[0].shape
               for t in tensors):  # the kernel would read the wrong bytes: refuse rather than return garbage
        raise ValueError("the GELU kernel takes float32 tensors of one shape, contiguous on the CPU; got "
                         + ", ".join(f"{t.dtype} {tuple(t.shape)} on {t.device}" for t in tensors))


def forward(x: torch.Tensor, extra_flags: tuple[str, ...] = ()) -> torch.Tensor:
    """GPT-2's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), of a float32 CPU tensor."""
    x = x.contiguous()
    _check(x)
    y = torch.empty_like(x)
    KERNEL.library(extra_flags).gelu_forward(x.data_ptr(), y.data_ptr(), x.numel(), torch.get_num_threads())
    return y


def backward(x: torch.Tensor, dy: torch.Tensor, extra_flags: tuple[str, ...] = ()) -> torch.Tensor:
    """dy * gelu'(x): the gradient with respect to x, given the gradient dy with respect to gelu(x)."""
    x, dy = x.contiguous(), dy.contiguous()
    _check(x, dy)
    dx = torch.empty_like(x)
    KERNEL.library(extra_flags).gelu_backward(x.data_ptr(), dy.data_ptr(), dx.data_ptr(), x.numel(),
                                              torch.get_num_threads())
    return dx


# The PyTorch ops, torch.ops.gpt2_scratch.gelu and .gelu_backward: what they return, for the compiler; and
# the gradient of the first, which is the second.
@torch.library.custom_op("gpt2_scratch::gelu", mutates_args=())
def gelu(x: torch.Tensor) -> torch.Tensor:
    return forward(x)


@torch.library.custom_op("gpt2_scratch::gelu_backward", mutates_args=())
def gelu_backward(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return backward(x, dy)


@gelu.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape)  # what the compiler plans with: contiguous, whatever x's strides


@gelu_backward.register_fake
def _(x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return x.new_empty(x.shape)


def _keep_input(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])  # the backward pass recomputes sigmoid(z) from x: nothing else is kept


def _gradient(ctx, dy: torch.Tensor) -> torch.Tensor:
    (x,) = ctx.saved_tensors
    return gelu_backward(x, dy)


gelu.register_autograd(_gradient, setup_context=_keep_input)


class FusedGELU(nn.Module):
    """`nn.GELU(approximate="tanh")`, through the C kernel for float32 tensors on the CPU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and x.is_cpu:
            return gelu(x)
        return F.gelu(x, approximate="tanh")  # bf16 autocast, a GPU: PyTorch's own


def use_fused_gelu(model: nn.Module) -> int:
    """Put a `FusedGELU` in the place of every `nn.GELU(approximate="tanh")` in `model`; returns how many
    (0 where the kernel does not compile here)."""
    targets = [(parent, name) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, nn.GELU) and child.approximate == "tanh"]
    if not targets or not KERNEL.available():
        return 0
    for parent, name in targets:
        setattr(parent, name, FusedGELU())
    return len(targets)
