"""Exercise 5 (chapter 5): GPT-2's transformer block, from its weights alone, written by you.

Fill in the four functions, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex05_block.py

`params` is a block's weights by name, exactly as `src.model.Block(...).state_dict()` holds them:

    "ln_1.weight", "ln_1.bias"                  (C,) each
    "attn.c_attn.weight", "attn.c_attn.bias"    (3C, C), (3C,): q, k and v side by side, every head in each
    "attn.c_proj.weight", "attn.c_proj.bias"    (C, C), (C,)
    "ln_2.weight", "ln_2.bias"                  (C,) each
    "mlp.c_fc.weight", "mlp.c_fc.bias"          (4C, C), (4C,)
    "mlp.c_proj.weight", "mlp.c_proj.bias"      (C, 4C), (C,)

A weight is stored as nn.Linear stores it, (out, in): a linear layer computes `x @ weight.T + bias` (or
`F.linear(x, weight, bias)`, which is the same).

The rules: no `F.layer_norm`, no `F.scaled_dot_product_attention`, and none of src/model.py's modules (the
tests switch them off: they are the answer keys). `F.softmax`, `F.gelu` and `F.linear` are allowed.
"""

import torch


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm over the last axis: each vector x[..., :] rescaled to mean 0 and variance 1, then times
    weight, plus bias. x: (..., C); weight, bias: (C,). Returns (..., C).

    The variance divides by C (not C - 1), and eps is added to the variance, inside the square root.
    """
    # TODO
    raise NotImplementedError("layer_norm (chapter 5)")


def attention(x: torch.Tensor, params: dict[str, torch.Tensor], n_head: int) -> torch.Tensor:
    """Causal multi-head self-attention, as `CausalSelfAttention` computes it. x: (B, T, C) -> (B, T, C).

    1. q, k, v from one linear layer, c_attn: (B, T, 3C), then split into three (B, T, C).
    2. Split each into n_head heads of size hs = C // n_head: (B, n_head, T, hs). Careful (chapter 5):
       channels are the last axis, so view (B, T, n_head, hs) first, then swap the T and head axes.
    3. Masked softmax attention in every head at once (chapter 4): (B, n_head, T, hs).
    4. The heads side by side again, (B, T, C), then the projection c_proj.
    """
    # TODO
    raise NotImplementedError("attention (chapter 5)")


def mlp(x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The MLP: c_fc (C -> 4C), GPT-2's GELU (the tanh form), c_proj (4C -> C). x: (..., C) -> (..., C)."""
    # TODO
    raise NotImplementedError("mlp (chapter 5)")


def block_forward(x: torch.Tensor, params: dict[str, torch.Tensor], n_head: int) -> torch.Tensor:
    """GPT-2's pre-LayerNorm block: attention on ln_1 of the stream, added to the stream; then the MLP on
    ln_2 of the stream, added to the stream. x: (B, T, C) -> (B, T, C)."""
    # TODO
    raise NotImplementedError("block_forward (chapter 5)")
