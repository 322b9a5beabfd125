"""A worked answer to exercise 4: the masked softmax attention of chapter 4, the same computation as
`explicit_attention` in src/model.py and as `F.scaled_dot_product_attention(q, k, v, is_causal=True)`."""

import math

import torch
from torch.nn import functional as F


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    T, hs = q.shape[-2], q.shape[-1]
    # Divide by sqrt(hs): q . k of random vectors has variance hs; scaled, variance 1, so the softmax starts
    # out spread over several positions instead of nearly one-hot.
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (..., T, T): scores[t, j] = q[t] . k[j] / sqrt(hs)
    # The future is j > t: strictly above the diagonal (diagonal=1). The diagonal itself stays: position t may
    # look at itself, so no row is all -inf (which would make the softmax 0/0 = nan).
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)  # (T, T)
    weights = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # (..., T, T): each row sums to 1
    return weights @ v, weights  # (..., T, hs), (..., T, T)
