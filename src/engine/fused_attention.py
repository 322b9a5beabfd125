"""Causal self-attention for CPU training, from the layer's qkv straight to its output: a C kernel of our own
(attention.c).

Why. At the small heads this project trains on a CPU (the `quality-300s` model: head size 32, 128 positions),
PyTorch's fused attention and the copies around it (splitting qkv into heads, and the heads back together,
each way) took about a quarter of a training step. attention.c reads the heads straight from qkv (B, T, 3C) and
writes straight to (B, T, C), forward and backward, with the products done in blocks that stay in vector
registers: 1.60-1.64x faster forward and backward, and with gelu.c the whole step 1.23-1.24x, in two runs on a
2-core AMD EPYC Zen 3 (`python bench/train_speed.py --levers`, `bench/README.md`).

What changes. Nothing but float32 rounding: the output and the gradient are checked against attention in
float64 (tests/test_fused_attention.py). Each head is computed by one thread in a fixed order, so a run on the
same kind of CPU still repeats itself exactly. The gradient has no gradient of its own.

How it is used. model.py keeps `CausalSelfAttention` as the reading path; train.py calls
`use_fused_attention(model)` when it trains on a CPU, which puts a `FusedCausalSelfAttention` in each one's
place: the same layer, holding the same weights under the same names, that takes the kernel where it applies
(float32 on the CPU, no autocast, no dropout inside attention, no cache, no weights asked for, a context of at
most MAX_T) and the layer's own forward everywhere else (generating, looking inside, bf16, a GPU). Where the C
file does not compile, nothing is swapped (a warning says so once).

The kernel is registered as the PyTorch op `torch.ops.gpt2_scratch.causal_attention`, with its gradient, so
that a model compiled whole (`--compile on`) can call it like any other operation.

Who uses it: train.py, `bench/train_speed.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import nn

from src.engine.ckernel import Kernel
from src.model import CausalSelfAttention


def _declare(library: ctypes.CDLL) -> None:
    # attention_forward(qkv, y, lse, B, T, n_head, hs, threads)
    # attention_backward(qkv, y, lse, dy, dqkv, B, T, n_head, hs, threads)
    shape = [ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.attention_forward.argtypes = [ctypes.c_void_p] * 3 + shape
    library.attention_backward.argtypes = [ctypes.c_void_p] * 5 + shape
    library.attention_forward.restype = library.attention_backward.restype = None


# -fno-trapping-math lets the compiler turn the exponential's clamp into vector blends (no FP traps here).
KERNEL = Kernel(Path(__file__).with_name("attention.c"), _declare, fallback="PyTorch's attention",
                flags=("-fno-trapping-math",))


# The longest sequence the kernel takes. Its backward pass holds two (T, T) float32 matrices per thread (128 MiB
# each thread at 4,096) and indexes them with C ints; a longer context goes PyTorch's way, whose memory grows
# with T, not T^2.
MAX_T = 4096


def _shape(qkv: torch.Tensor, n_head: int) -> tuple[int, int, int]:
    """(B, T, head size) of a qkv tensor, or a ValueError where the kernel would read the wrong bytes."""
    if not (qkv.dtype == torch.float32 and qkv.is_cpu and qkv.dim() == 3 and qkv.is_contiguous()
            and n_head > 0 and qkv.size(2) % (3 * n_head) == 0 and qkv.size(1) <= MAX_T):
        raise ValueError(f"the attention kernel takes qkv as a contiguous float32 CPU tensor (B, T, 3C), 3C a "
                         f"multiple of 3 x {n_head} heads, T at most {MAX_T}; got {qkv.dtype} {tuple(qkv.shape)} "
                         f"on {qkv.device}")
    B, T, C3 = qkv.shape
    return B, T, C3 // (3 * n_head)


def forward(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention of qkv (B, T, 3C): returns y (B, T, C), the heads side by side, and each row's
    log-sum-exp of its scores (B, n_head, T), which the backward pass needs."""
    B, T, hs = _shape(qkv, n_head)
    y = qkv.new_empty(B, T, n_head * hs)
    lse = qkv.new_empty(B, n_head, T)
    KERNEL.library().attention_forward(qkv.data_ptr(), y.data_ptr(), lse.data_ptr(), B, T, n_head, hs,
                                       torch.get_num_threads())
    return y, lse


def backward(qkv: torch.Tensor, y: torch.Tensor, lse: torch.Tensor, dy: torch.Tensor, n_head: int) -> torch.Tensor:
    """The gradient with respect to qkv (B, T, 3C), given dy, the gradient with respect to y."""
    B, T, hs = _shape(qkv, n_head)
    y, lse, dy = y.contiguous(), lse.contiguous(), dy.contiguous()
    if not (y.shape == dy.shape == (B, T, n_head * hs) and lse.shape == (B, n_head, T)
            and all(t.dtype == torch.float32 and t.is_cpu for t in (y, lse, dy))):
        raise ValueError(f"the attention kernel's backward pass takes y and dy {(B, T, n_head * hs)} and lse "
                         f"{(B, n_head, T)}, float32 on the CPU; got {tuple(y.shape)}, {tuple(dy.shape)}, "
                         f"{tuple(lse.shape)}")
    dqkv = torch.empty_like(qkv)
    KERNEL.library().attention_backward(qkv.data_ptr(), y.data_ptr(), lse.data_ptr(), dy.data_ptr(),
                                        dqkv.data_ptr(), B, T, n_head, hs, torch.get_num_threads())
    return dqkv


# The PyTorch ops, torch.ops.gpt2_scratch.causal_attention and .causal_attention_backward: what they return,
# for the compiler; and the gradient of the first, which is the second.
@torch.library.custom_op("gpt2_scratch::causal_attention", mutates_args=())
def causal_attention(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    return forward(qkv.contiguous(), n_head)


@torch.library.custom_op("gpt2_scratch::causal_attention_backward", mutates_args=())
def causal_attention_backward(qkv: torch.Tensor, y: torch.Tensor, lse: torch.Tensor, dy: torch.Tensor,
                              n_head: int) -> torch.Tensor:
    return backward(qkv.contiguous(), y, lse, dy, n_head)


@causal_attention.register_fake
def _(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    B, T, C3 = qkv.shape
    return qkv.new_empty(B, T, C3 // 3), qkv.new_empty(B, n_head, T)


@causal_attention_backward.register_fake
def _(qkv: torch.Tensor, y: torch.Tensor, lse: torch.Tensor, dy: torch.Tensor, n_head: int) -> torch.Tensor:
    return qkv.new_empty(qkv.shape)


def _keep(ctx, inputs, output) -> None:
    qkv, n_head = inputs
    y, lse = output
    ctx.save_for_backward(qkv, y, lse)  # the backward pass rebuilds the probabilities from these
    ctx.n_head = n_head
    ctx.mark_non_differentiable(lse)


def _gradient(ctx, dy: torch.Tensor, _dlse: torch.Tensor | None):
    qkv, y, lse = ctx.saved_tensors
    return causal_attention_backward(qkv, y, lse, dy, ctx.n_head), None


causal_attention.register_autograd(_gradient, setup_context=_keep)


class FusedCausalSelfAttention(CausalSelfAttention):
    """A `CausalSelfAttention` (the same weights, under the same names) that computes softmax(q k^T / sqrt(hs)) v
    in attention.c where it can, and exactly as the layer does everywhere else."""

    def __init__(self, layer: CausalSelfAttention):
        nn.Module.__init__(self)  # not CausalSelfAttention.__init__: the layer's own weights are kept, not new ones
        self.n_head, self.attn_dropout = layer.n_head, layer.attn_dropout
        self.c_attn, self.c_proj, self.resid_dropout = layer.c_attn, layer.c_proj, layer.resid_dropout

    def forward(self, x: torch.Tensor, cache=None, layer: int = 0, attention: list | None = None) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        kernel_applies = (cache is None and attention is None and x.dtype == torch.float32 and x.is_cpu
                          and x.size(1) <= MAX_T and not torch.is_autocast_enabled("cpu")
                          and not (self.training and self.attn_dropout > 0))
        if not kernel_applies:
            return super().forward(x, cache, layer, attention)
        y, _ = causal_attention(self.c_attn(x), self.n_head)  # (B, T, 3C) -> (B, T, C), the heads side by side
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


def use_fused_attention(model: nn.Module) -> int:
    """Put a `FusedCausalSelfAttention` in the place of every `CausalSelfAttention` in `model`; returns how many
    (0 where the kernel does not compile here)."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child) is CausalSelfAttention]  # exactly the plain layer: a swapped one stays as it is
    if not targets or not KERNEL.available():
        return 0
    for parent, name, child in targets:
        setattr(parent, name, FusedCausalSelfAttention(child))
    return len(targets)
