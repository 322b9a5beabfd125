"""int8 weights times a few vectors at the speed of memory: a small C kernel of our own, as a PyTorch op.

Why. Decoding with int8 weights (engine/quantize.py) reads one byte per weight instead of four, but the
bytes still have to become floats before they are multiplied. PyTorch's `_weight_int8pack_mm` does that
slowly on a CPU without AVX-512 (it streamed 21-33% of the memory bandwidth here, see `bench/generate.py
--levers`), and `torch.compile` cannot do better on such a CPU: its generated code loads integers through a
scratch buffer (its vector loads of floats do not), which made the compiled one-line product several times
slower still. So the product is written in C, in `int8_matvec.c` (its row's loop in dot.h):

    y[b, j] = scale[j] * sum_i float(W[j, i]) * x[b, i]      W (out, in) int8, x (batch, in) float32

With AVX2 each 8 weights are loaded, widened to 8 int32, converted to 8 floats and multiplied into one of four
running sums; elsewhere a plain loop does the same sums. Unlike PyTorch's kernel it keeps the activations in
float32 (that one rounds them to bfloat16), so the only rounding besides float32 sums is the weights'.

How it is built. The first use compiles the C file for this very machine and loads it (engine/ckernel.py:
the system's C compiler, `-march=native`, OpenMP; under a second, once per process). Each call passes PyTorch's
thread count (`torch.get_num_threads()`) to OpenMP; with gcc, as here, the kernel shares PyTorch's own
OpenMP runtime. Where compiling fails (no compiler), `available()` is False, a warning says so once, and
engine/quantize.py keeps PyTorch's kernel.

Why a PyTorch op. The kernel is registered as `torch.ops.gpt2_scratch.int8_matvec`, with a description of
its output's shape, so that the decoding step compiled whole (engine/decode.py) can call it like any
PyTorch operation: dynamo cannot look inside a ctypes call, but it can place an op.

Checked against a float64 product of the same int8 weights (tests/test_int8_matvec.py), in both of the C
file's versions, for shapes that are and are not multiples of 32, and a batch.

Who uses it: engine/quantize.py (`Int8Linear`, for a few rows at a time), `bench/generate.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from src.engine.ckernel import Kernel


def _declare(library: ctypes.CDLL) -> None:
    # int8_matvec(weight, scale, x, y, batch, out, in, threads): four arrays, three sizes, a thread count
    library.int8_matvec.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    library.int8_matvec.restype = None
    library.int8_matvec_version.restype = ctypes.c_char_p


KERNEL = Kernel(Path(__file__).with_name("int8_matvec.c"), _declare, fallback="PyTorch's int8 kernel")


def compile_kernel(extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """int8_matvec.c compiled (with `extra_flags` after the usual ones, e.g. "-DDOT_PLAIN") and loaded;
    raises OSError or CalledProcessError where that cannot be done."""
    return KERNEL.library(extra_flags)


def version(extra_flags: tuple[str, ...] = ()) -> str:
    """Which version of the C code this machine compiled: "avx2" or "plain"."""
    return compile_kernel(extra_flags).int8_matvec_version().decode()


def available() -> bool:
    """Whether the kernel runs here; compiles it on the first call (warning once if it cannot be)."""
    return KERNEL.available()


def int8_matvec(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor,
                extra_flags: tuple[str, ...] = ()) -> torch.Tensor:
    """x (batch, in) float32, weight (out, in) int8, scale (out,) float32 -> (x weight^T) * scale (batch, out)
    float32, all on the CPU and contiguous (the C code reads them as plain arrays)."""
    ok = (x.dtype == torch.float32 and weight.dtype == torch.int8 and scale.dtype == torch.float32
          and x.dim() == 2 and weight.dim() == 2 and x.shape[1] == weight.shape[1] and scale.shape == weight.shape[:1]
          and x.is_cpu and weight.is_cpu and scale.is_cpu
          and x.is_contiguous() and weight.is_contiguous() and scale.is_contiguous())
    if not ok:  # the kernel would read the wrong bytes: refuse rather than return garbage
        raise ValueError(f"int8_matvec takes x (batch, in) float32, weight (out, in) int8 and scale (out,) float32, "
                         f"contiguous on the CPU; got {x.dtype} {tuple(x.shape)}, {weight.dtype} "
                         f"{tuple(weight.shape)}, {scale.dtype} {tuple(scale.shape)}")
    (batch, n_in), out = x.shape, weight.shape[0]
    y = x.new_empty(batch, out)  # float32 on the CPU like x, whatever torch's default dtype and device are
    kernel = compile_kernel(extra_flags).int8_matvec
    kernel(weight.data_ptr(), scale.data_ptr(), x.data_ptr(), y.data_ptr(), batch, out, n_in, torch.get_num_threads())
    return y


# The PyTorch op: torch.ops.gpt2_scratch.int8_matvec(x, weight, scale); what it returns, for the compiler; and
# no gradient. A namespace is defined once per process: this module must not be imported twice (or reloaded).
_library = torch.library.Library("gpt2_scratch", "DEF")
_library.define("int8_matvec(Tensor x, Tensor weight, Tensor scale) -> Tensor")
_library.impl("int8_matvec", int8_matvec, "CPU")


def _output_like(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    torch._check(x.dtype == torch.float32 and weight.dtype == torch.int8 and scale.dtype == torch.float32,
                 lambda: "int8_matvec takes x float32, weight int8 and scale float32")
    return x.new_empty(x.shape[0], weight.shape[0])  # (batch, out), what the compiler plans with


def _no_gradient(ctx, grad: torch.Tensor):
    raise RuntimeError("int8_matvec has no gradient: an int8-quantized model is for generation only")


torch.library.register_fake("gpt2_scratch::int8_matvec", _output_like, lib=_library)
torch.library.register_autograd("gpt2_scratch::int8_matvec", _no_gradient, lib=_library)
