"""A worked answer to exercise 8: `top_p_filter` (src/sampling.py) and `KVCache.append` (src/model.py)."""

import torch


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    logits = logits.float()  # (B, V); .float() makes a copy only when it must, so never write into it
    if p >= 1:
        return logits.clone()  # keep everything (a float sum of all probabilities may land just under 1)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)  # (B, V) each, likeliest first
    # The mass of the tokens *before* each one: the running sum minus the token itself. The token that
    # carries the sum past p still has mass-before < p, so it is kept: the classic mistake is to keep only
    # the tokens whose running sum (their own probability included) is below p, which drops that one.
    mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs  # (B, V)
    drop_sorted = mass_before >= p  # (B, V), in sorted order; the first token has mass 0 and always stays
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (B, V), back in id order
    return logits.masked_fill(drop, float("-inf"))  # a new tensor; `logits` is unchanged


def append(cache_k: torch.Tensor, cache_v: torch.Tensor, pos: int, k: torch.Tensor, v: torch.Tensor):
    end = pos + k.shape[2]  # k: (B, nh, T, hs), so the new tokens fill positions pos .. end - 1
    cache_k[:, :, pos:end] = k  # written into the cache's own memory: it is still there next step
    cache_v[:, :, pos:end] = v
    # Slices of the cache (views, no copy): every key and value up to the newest token.
    return cache_k[:, :, :end], cache_v[:, :, :end]  # (B, nh, end, hs) each
