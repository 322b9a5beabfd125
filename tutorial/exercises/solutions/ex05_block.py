"""A worked answer to exercise 5: `Block.forward` of src/model.py (with its `CausalSelfAttention` and
`MLP`) written out from the weights, the way chapter 5 builds it."""

import math

import torch
from torch.nn import functional as F


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean = x.mean(dim=-1, keepdim=True)  # (..., 1): one mean per position
    var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1): divided by C, as LayerNorm does
    return (x - mean) / torch.sqrt(var + eps) * weight + bias  # eps inside the root: safe for constant vectors


def attention(x: torch.Tensor, params: dict[str, torch.Tensor], n_head: int) -> torch.Tensor:
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = F.linear(x, params["attn.c_attn.weight"], params["attn.c_attn.bias"]).split(C, dim=-1)  # 3 x (B, T, C)
    # The heads: cut each token's C channels into (n_head, hs), THEN move the head axis before time. A direct
    # view(B, n_head, T, hs) would cut the row of numbers in the wrong places and mix tokens into heads.
    q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs) each
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)  # (T, T)
    y = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v  # (B, nh, T, hs)
    y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C): reshape, because the transpose left memory in the old order
    return F.linear(y, params["attn.c_proj.weight"], params["attn.c_proj.bias"])  # (B, T, C)


def mlp(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    hidden = F.linear(x, params["mlp.c_fc.weight"], params["mlp.c_fc.bias"])  # (..., 4C)
    hidden = F.gelu(hidden, approximate="tanh")  # GPT-2's GELU: its weights were trained with this formula
    return F.linear(hidden, params["mlp.c_proj.weight"], params["mlp.c_proj.bias"])  # (..., C)


def block_forward(x: torch.Tensor, params: dict[str, torch.Tensor], n_head: int) -> torch.Tensor:
    # Pre-LayerNorm: each part reads a normalised copy of the stream and ADDS its output to the stream itself,
    # which is never normalised here (GPT's final ln_f does that, once, after the last block).
    x = x + attention(layer_norm(x, params["ln_1.weight"], params["ln_1.bias"]), params, n_head)
    x = x + mlp(layer_norm(x, params["ln_2.weight"], params["ln_2.bias"]), params)
    return x
