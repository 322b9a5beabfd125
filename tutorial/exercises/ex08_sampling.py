"""Exercise 8 (chapter 8): the top-p filter, and the KV cache's append, written by you.

Fill in the two functions, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex08_sampling.py

The project's versions are `top_p_filter` in src/sampling.py and `KVCache.append` in src/model.py. Try not to
look until your tests pass.
"""

import torch


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of likeliest tokens whose probabilities add up to at least p; drop the rest.

    logits: (B, V) scores, one row per sequence; p: a number in (0, 1].
    Returns a new (B, V) float32 tensor: the kept logits unchanged, the dropped ones set to -inf (so that a
    softmax afterwards gives them probability exactly 0). Do not change `logits` itself.

    Walk down each row's tokens from the likeliest, adding up their probabilities (the softmax of the row).
    A token is kept when the probability of the tokens *before* it is still below p. So the likeliest
    token is always kept, and so is the token whose probability carries the sum past p.
        probabilities [0.1, 0.4, 0.2, 0.3], p = 0.8: in order 0.4, 0.3, 0.2, 0.1; before each: 0, 0.4, 0.7, 0.9
        -> keep the tokens with 0.4, 0.3 and 0.2 (ids 1, 3, 2); drop id 0.
    p = 1 keeps every token. Among equal probabilities the lower id counts as likelier (sort with stable=True).

    Hint: torch.sort(..., descending=True) gives each row's ids in order; torch.cumsum adds up; a mask made
    in sorted order can be put back in id order with `scatter`.
    """
    # TODO
    raise NotImplementedError("top_p_filter (chapter 8)")


def append(cache_k: torch.Tensor, cache_v: torch.Tensor, pos: int, k: torch.Tensor, v: torch.Tensor):
    """Store one layer's new keys and values in its cache; return every key and value stored so far.

    cache_k, cache_v: (B, nh, block_size, hs), the cache's memory for one layer, filled at positions 0 .. pos-1.
    k, v: (B, nh, T, hs), the keys and values of the T new tokens, which sit at positions pos .. pos+T-1.
    Write k and v into the cache at those positions (in place: the cache must keep them for the next
    token), and return (keys, values), each (B, nh, pos + T, hs): the cache's positions 0 .. pos+T-1.
    """
    # TODO
    raise NotImplementedError("append (chapter 8)")
