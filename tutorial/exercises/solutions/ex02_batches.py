"""A worked answer to exercise 2: the project's `BatchLoader.next_batch` (src/dataloader.py), on a tensor."""

import torch


def get_batch(tokens: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator):
    # A window needs block_size + 1 ids, so the last possible start is len(tokens) - block_size - 1, and
    # randint's upper bound (never drawn itself) is one more than that.
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator)  # (B,)
    x = torch.stack([tokens[s : s + block_size] for s in starts])  # (B, T)
    y = torch.stack([tokens[s + 1 : s + block_size + 1] for s in starts])  # (B, T)
    return x.long(), y.long()
