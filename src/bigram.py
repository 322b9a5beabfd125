"""The simplest language model: predict the next token from the current token alone.

The whole model is one V x V table. Row i holds the scores (logits) for "which token comes after token i".
It cannot look further back than one token, so it learns which letters tend to follow which ("q" -> "u"),
and nothing more. It is the baseline every better model must beat: on Shakespeare it gets stuck near a
loss of 2.5, while the GPT gets well below 1.6.

It has the same interface as GPT (forward returns (logits, loss); generate), so `train.py` and
`sample.py` handle both alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from src.generate import generate as _generate


@dataclass
class BigramConfig:
    vocab_size: int
    block_size: int = 1  # it only ever looks at the last token

    def to_dict(self) -> dict:
        return asdict(self)


class BigramLanguageModel(nn.Module):
    def __init__(self, config: BigramConfig | None = None, **sizes):
        super().__init__()
        self.config = config if config is not None else BigramConfig(**sizes)
        # Row i = logits for the token after token i. Starts at zero: every next token equally likely (loss ln V).
        self.token_embedding_table = nn.Embedding(self.config.vocab_size, self.config.vocab_size)
        nn.init.zeros_(self.token_embedding_table.weight)

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) ids -> logits (B, T, V): each position looks up its own row of the table."""
        logits = self.token_embedding_table(idx)  # (B, T, V)
        loss = None
        if targets is not None:
            B, T, V = logits.shape
            loss = F.cross_entropy(logits.float().view(B * T, V), targets.reshape(B * T))
        return logits, loss

    def generate(self, idx, max_new_tokens: int, **sampling):
        """Same contract as `GPT.generate`; see `src.generate.generate`."""
        return _generate(self, idx, max_new_tokens, **sampling)
