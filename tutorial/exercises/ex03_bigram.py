"""Exercise 3 (chapter 3): the bigram model's forward pass, loss included, written by you.

Fill in the two functions, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex03_bigram.py

The rules: no `F.cross_entropy`, `F.nll_loss`, `log_softmax` or `logsumexp` (the tests switch them off).
`exp`, `log`, `max`, `sum`, `mean` and indexing are all you need. The project's version is
`BigramLanguageModel.forward` in src/bigram.py (which does use F.cross_entropy). Try not to look until your
tests pass.
"""

import torch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean of -log(softmax(logits)[target]) over the rows.

    logits: (N, V) scores, any real numbers (the tests use some in the thousands).
    targets: (N,) the right answer of each row, an id in 0..V-1.
    Returns a 0-d tensor, differentiable (loss.backward() must work).

    Hint: log(softmax(z))[k] = z[k] - log(sum(exp(z))). What happens to exp(z) when z is 1000? Subtracting the
    same number from every score of a row changes no probability.
    """
    # TODO
    raise NotImplementedError("cross_entropy (chapter 3)")


def bigram_forward(table: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor | None = None):
    """The bigram model: table (V, V) of scores, idx (B, T) ids -> (logits (B, T, V), loss).

    logits[b, t] is the row of the table for the character idx[b, t]. loss is the cross-entropy of all B*T
    predictions against targets (B, T), or None when targets is None.
    """
    # TODO
    raise NotImplementedError("bigram_forward (chapter 3)")
