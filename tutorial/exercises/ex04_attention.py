"""Exercise 4 (chapter 4): masked softmax attention for one head, written by you.

Fill in the function, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex04_attention.py

The rules: no `F.scaled_dot_product_attention` and no `src.model.explicit_attention` (the tests switch them
off: they are the answer keys). A matrix multiplication (`@`), `transpose`, `torch.tril` or `torch.triu`,
`masked_fill` and `F.softmax` are all you need. Chapter 4's "Step 4" does it for one example; here it must
work for any sizes.
"""

import torch


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One attention head where every position looks only at itself and the positions before it.

    q, k, v: (..., T, hs): queries, keys and values. The leading axes can be anything: (B, T, hs) for one head,
    (B, nh, T, hs) for several heads side by side, or just (T, hs).

    Returns (out, weights):
    - weights (..., T, T): softmax over j of q[t] . k[j] / sqrt(hs), with every j > t (the future) given
      weight exactly 0. Each row t sums to 1.
    - out (..., T, hs): out[t] = the sum over j of weights[t, j] * v[j].
    Both must be differentiable (loss.backward() must work).

    Hint: put -inf in the scores of the future *before* the softmax. What is the softmax of a row that is
    -inf everywhere? Which positions must each row always be allowed to see?
    """
    # TODO
    raise NotImplementedError("causal_attention (chapter 4)")
