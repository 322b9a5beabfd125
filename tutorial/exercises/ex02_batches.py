"""Exercise 2 (chapter 2): draw a batch of training windows, written by you.

Fill in `get_batch`, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex02_batches.py

The project's version is `BatchLoader.next_batch` in src/dataloader.py. Try not to look until your tests pass.
"""

import torch


def get_batch(tokens: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator):
    """Draw `batch_size` windows from random places in `tokens` (a 1-D tensor of ids).

    Returns (x, y), both of shape (batch_size, block_size) and dtype torch.long:
    x[b] is a window of `block_size` consecutive ids, and y[b] is the same window shifted one place to the
    right in the text, so y[b, t] is the id that follows x[b, t].
    Every possible window must be drawable, the very last one included. Draw the random starts with
    `torch.randint(..., generator=generator)`, so that the same generator state gives the same batch.
    """
    # TODO: random starts (batch_size,), then x and y (batch_size, block_size)
    raise NotImplementedError("get_batch (chapter 2)")
