"""Weight-only int8 quantization: smaller weights, so generation on a CPU is faster.

Why it helps. Generating one token multiplies one vector by every weight matrix of the model, and each
weight is used for a single multiply-add. The processor waits for memory, not for arithmetic: GPT-2 124M
reads 500 MB of float32 weights per token. Stored as int8 (one byte instead of four), it reads 125 MB, and
decodes about 3x faster here (2.7x with `--fast` on both sides; see `bench/generate.py`), provided the bytes
are turned into floats as fast as they arrive: that is the job of the kernel below.

How. Each output row j of a weight matrix W (out, in) gets its own scale, the largest |w| of the row / 127:

    scale[j] = max_i |W[j, i]| / 127
    Wq[j, i] = round(W[j, i] / scale[j])          an integer in [-127, 127]
    W ~ Wq * scale[:, None]                       off by at most scale[j] / 2 per weight

A per-row scale keeps one row with large weights from costing the others their precision. The scale
comes out of the sum, so the product needs no float copy of W:

    y = x W^T + b = (x Wq^T) * scale + b

For a few rows of x (decoding: one row per sample) a small C kernel of our own (engine/int8_matvec.py) does
exactly this, converting the int8 weights to float32 as it reads them; x stays float32. Where it cannot be
compiled (no C compiler) PyTorch's CPU kernel `_weight_int8pack_mm` takes its place, which also rounds x to
bfloat16 and is slower here (`bench/generate.py`). For many rows (a prompt, read in one pass) either kernel
is slower than a float32 matrix product, so there we convert Wq to float32 once and use a normal product.

Only the `nn.Linear` layers are quantized (the attention and MLP projections, and `lm_head`); the
embeddings, LayerNorms and biases stay float32. A quantized model is for generation only: it cannot
be trained, and `save_checkpoint` refuses it (save the float model instead).

Who uses it: `sample.py --int8`, `engine/checkpoint.py` (`is_quantized`), the generation benchmarks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn import functional as F

from src.engine import int8_matvec

# PyTorch's CPU kernel for (x Wq^T) * scale with int8 Wq, where ours cannot be compiled; None if this PyTorch
# build lacks it.
_int8_matmul = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
# Up to this many rows the kernels beat dequantizing + a float32 product. Measured here over 124M's matrices:
# PyTorch's kernel still wins at 32 rows, at 64 dequantizing does; ours still wins at 64 (158 ms against 270).
# One limit for both, so that a batch takes the same path with either kernel; decoding uses 1 row per sample.
KERNEL_MAX_ROWS = 32


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (out, in) float -> (int8 weight (out, in), float32 scale (out,)), one scale per output row."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / 127  # (out,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale gives 0
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)  # (out, in)
    return q, scale


class Int8Linear(nn.Module):
    """A drop-in for `nn.Linear` (for inference) that keeps its weight as int8 plus a scale per output."""

    def __init__(self, linear: nn.Linear, own_kernel: bool = True):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        q, scale = quantize_rows(linear.weight)
        self.register_buffer("weight_int8", q)  # (out, in)
        self.register_buffer("scale", scale)  # (out,)
        self.register_buffer("scale_bf16", scale.bfloat16())  # (out,) the form PyTorch's int8 kernel takes
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)  # (out,) or None
        # Our kernel where it compiles (decided here, before any torch.compile traces forward), else PyTorch's
        self.own_kernel = own_kernel and int8_matvec.available()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)  # (N, in): every position of every sequence
        few = rows.shape[0] <= KERNEL_MAX_ROWS
        if few and self.own_kernel and rows.is_cpu:
            # Decoding: a row per sample. The kernel reads the int8 weights and computes (x Wq^T) * scale.
            y = torch.ops.gpt2_scratch.int8_matvec(rows.float().contiguous(), self.weight_int8, self.scale)  # (N, out)
        elif few and _int8_matmul is not None and not rows.is_cuda:  # PyTorch's kernel, x rounded to bfloat16
            y = _int8_matmul(rows.bfloat16(), self.weight_int8, self.scale_bf16)  # (N, out) bfloat16
        else:  # a prompt (or a GPU): dequantize, then a normal product
            y = F.linear(rows.float(), self.weight_int8.float()) * self.scale  # (N, out)
        if self.bias is not None:
            y = y + self.bias  # float32 from here
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)  # (..., out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_int8(model: nn.Module, own_kernel: bool = True) -> nn.Module:
    """Replace every `nn.Linear` of `model` by an `Int8Linear`, in place, and return the model.
    `own_kernel=False` decodes with PyTorch's kernel (for comparing the two).

    For GPT that is c_attn, c_proj, c_fc and c_proj in every block, and lm_head. lm_head shares its
    weight with the token embedding wte; after quantizing, lm_head has its own int8 copy and wte stays
    float32 (looking up one row per token costs nothing worth saving).
    """
    model.eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child, own_kernel))
    return model


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(m, Int8Linear) for m in model.modules())
