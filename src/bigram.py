"""The simplest language model: predict the next token from the current token alone.

The whole model is one V x V table. Row i holds the scores (logits) for "which token comes after token i".
It cannot look further back than one token, so it learns which letters tend to follow which ("q" -> "u"),
and nothing more. It is the baseline every better model must beat: on Shakespeare it gets stuck near a
loss of 2.5, while the GPT gets well below 1.6.

It has the same small interface as GPT (forward returns (logits, loss); `block_size`, `num_params`,
`flops_per_token`, `new_kv_cache`, `generate`, `export`), so `train.py` and `sample.py` handle both alike.
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

    def flops_per_token(self) -> float:
        """0: looking up a row of the table multiplies nothing (the MFU of a bigram model means nothing)."""
        return 0.0

    def new_kv_cache(self, batch_size: int) -> None:
        """None: the model looks at one token, so there is nothing to keep between generation steps."""
        return None

    def export(self, eos_token_id: int | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
        """What a checkpoint folder holds: (config.json, the tensors). Not a GPT-2, so the folder is ours alone."""
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        return {"model_type": "bigram", **self.config.to_dict()}, tensors

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, return_attention: bool = False
    ):
        """idx: (B, T) ids -> (logits (B, T, V), loss): each position looks up its own row of the table.

        `return_attention` adds GPT's third result, the attention weights, which here are an empty
        (0, B, 0, T, T) tensor: no layers, no heads, because the model looks at nothing but the current token.
        """
        logits = self.token_embedding_table(idx)  # (B, T, V)
        loss = None
        if targets is not None:
            B, T, V = logits.shape
            loss = F.cross_entropy(logits.float().view(B * T, V), targets.reshape(B * T))
        if return_attention:
            B, T = idx.shape
            return logits, loss, logits.new_zeros(0, B, 0, T, T)
        return logits, loss

    def generate(self, idx, max_new_tokens: int, **sampling):
        """Same contract as `GPT.generate`; see `src.generate.generate`."""
        return _generate(self, idx, max_new_tokens, **sampling)
