"""A worked answer to exercise 3: `BigramLanguageModel.forward` (src/bigram.py) with the cross-entropy that
F.cross_entropy computes, written out."""

import torch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Subtract each row's largest score first: the probabilities stay the same, and exp() now sees numbers
    # <= 0, so it cannot overflow (exp(1000) is inf in float32).
    shifted = logits - logits.max(dim=-1, keepdim=True).values  # (N, V)
    # log(softmax) without ever forming a probability that could round to 0: z - log(sum(exp(z))).
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()  # (N, V)
    right = log_probs[torch.arange(len(targets)), targets]  # (N,): the log-probability of each right answer
    return -right.mean()


def bigram_forward(table: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor | None = None):
    logits = table[idx]  # (B, T, V): each position looks up its own row
    if targets is None:
        return logits, None
    B, T, V = logits.shape
    return logits, cross_entropy(logits.view(B * T, V), targets.reshape(B * T))
