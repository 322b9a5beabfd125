"""Text generation: feed the model its own output, one token at a time.

    repeat max_new_tokens times:
        logits = model(last block_size tokens)       # scores for every possible next token
        next   = sample(logits at the last position)  # temperature / top-k / top-p, or argmax
        append next to the sequence

The same loop serves every model in this project (bigram and GPT): all it needs is a model that maps
(B, T) token ids to (B, T, V) logits and has a `block_size`. The context is cropped to the last
`block_size` tokens, so generation can run for any number of tokens.
"""

from __future__ import annotations

import torch

from src.sampling import check_sampling_args, sample_next_token


@torch.no_grad()  # no gradients while sampling: faster, and no memory kept for a backward pass
def generate(
    model,
    idx,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
):
    """Continue the prompt `idx` by `max_new_tokens` tokens.

    idx: a list of ints (returns a list of ints, prompt included) or a LongTensor of shape (B, T)
    (returns a LongTensor of shape (B, T + max_new_tokens)).
    temperature: 0 picks the most likely token (greedy); higher values make the text more random.
    top_k: sample only among the k most likely tokens. top_p: only among the smallest set of tokens whose
    probabilities add up to at least p. seed: makes the sampling reproducible.
    """
    check_sampling_args(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    as_list = not isinstance(idx, torch.Tensor)
    if as_list:
        idx = torch.tensor([list(idx)], dtype=torch.long, device=device)  # (1, T)
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"the prompt must be a non-empty (B, T) tensor or list of ids, got shape {tuple(idx.shape)}")
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)

    was_training = model.training
    model.eval()  # dropout off: generation should use the whole model
    for _ in range(max_new_tokens):
        idx_cond = idx[:, -model.block_size :]  # (B, <=block_size): the model cannot see further back
        logits, _ = model(idx_cond)  # (B, T, V)
        next_id = sample_next_token(logits[:, -1, :], temperature, top_k, top_p, generator=generator)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
    model.train(was_training)
    return idx[0].tolist() if as_list else idx
