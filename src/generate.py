"""Text generation: feed the model its own output, one token at a time.

    repeat max_new_tokens times:
        logits = model(last block_size tokens)       # scores for every possible next token
        next   = sample(logits at the last position)  # temperature / top-k / top-p, or argmax
        append next to the sequence

The same loop serves every model in this project (bigram and GPT): all it needs is a model that maps
(B, T) token ids to (B, T, V) logits, has a `block_size`, and makes a KV cache (`new_kv_cache`; the
bigram's is None: it looks at one token anyway). The context is cropped to the last `block_size` tokens,
so generation can run for any number of tokens.

`generate` works on token ids; `generate_text` takes a prompt as text and returns the continuation as
text, through a tokenizer.

With a KV cache (GPT only, `use_cache=True`, the default) the loop computes the same thing faster:
1. prefill: run the whole prompt once, keeping every layer's keys and values in the cache;
2. decode: from then on feed only the newest token, at position `cache.pos`;
3. slide: once the cache holds block_size tokens, there is no position left for a new token. Like the
   uncached loop, the model must then see the last block_size tokens, at positions 0..block_size-1 (its
   position embeddings are absolute), so the cache is emptied and those tokens are prefilled again.
   Past block_size every step therefore costs a full forward pass, exactly as without a cache.
Both paths see exactly the same context at every step, so they produce the same tokens (a test checks).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from src.engine.errors import UserError
from src.sampling import apply_repetition_penalty, check_sampling_args, sample_next_token
from src.tokenizer import Tokenizer


def make_generators(seed: int | list[int] | None, batch_size: int) -> list[torch.Generator] | None:
    """One random generator per row. Row i with seed s draws the same tokens whether it is generated
    alone or in a batch, so `--num-samples 4` gives the same 4 texts as 4 single runs with seeds s..s+3.
    CPU generators on every device: `sampling.draw` draws on the CPU."""
    if seed is None:
        return None
    seeds = [seed + i for i in range(batch_size)] if isinstance(seed, int) else list(seed)
    if len(seeds) != batch_size:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch_size}")
    return [torch.Generator().manual_seed(s) for s in seeds]


@torch.inference_mode()  # no autograd bookkeeping while sampling: faster, and no memory kept
def generate_steps(
    model,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | list[int] | None = None,
    repetition_penalty: float = 1.0,
    use_cache: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (next token of every row (B, 1), the scores it was drawn from (B, V)), `max_new_tokens` times.

    idx: (B, T) prompt ids. The scores are the model's logits at the last position (after the repetition
    penalty, before temperature and top-k/top-p): their softmax is what the model believes comes next, which
    is what the playground shows beside each token. The sampling settings are checked here, once; the loop
    below then trusts them.
    """
    check_sampling_args(temperature, top_k, top_p, repetition_penalty)
    if idx.dim() != 2 or idx.shape[1] == 0:
        raise ValueError(f"the prompt must be a non-empty (B, T) tensor, got shape {tuple(idx.shape)}")
    generators = make_generators(seed, idx.shape[0])
    block_size = model.block_size
    cache = model.new_kv_cache(idx.shape[0]) if use_cache else None  # None for the bigram: nothing to cache

    was_training = model.training
    model.eval()  # dropout off: generation uses the whole model
    try:
        for _ in range(max_new_tokens):
            if cache is None:
                logits, _ = model(idx[:, -block_size:])  # (B, T, V): the model cannot see further back
            elif cache.pos == 0 or cache.pos == block_size:  # prefill (first step, or after a slide)
                cache.reset()
                logits, _ = model(idx[:, -block_size:], cache=cache, last_only=True)  # (B, 1, V)
            else:  # decode: only the newest token is new to the model
                logits, _ = model(idx[:, -1:], cache=cache, last_only=True)  # (B, 1, V)
            logits = logits[:, -1, :]  # (B, V)
            if repetition_penalty != 1.0:
                logits = apply_repetition_penalty(logits, idx, repetition_penalty)
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator=generators)  # (B, 1)
            idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
            yield next_id, logits
    finally:
        model.train(was_training)


def generate_tokens(model, idx: torch.Tensor, max_new_tokens: int, **options) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B, 1), `max_new_tokens` times. idx: (B, T) prompt ids.

    Options as for `generate` (listed there). The same loop as `generate_steps`, without the scores.
    """
    for next_id, _ in generate_steps(model, idx, max_new_tokens, **options):
        yield next_id


def generate(model, idx, max_new_tokens: int, **options):
    """Continue the prompt `idx` by `max_new_tokens` tokens.

    idx: a list of ints (returns a list of ints, prompt included) or a LongTensor of shape (B, T)
    (returns a LongTensor of shape (B, T + max_new_tokens)).
    Options: temperature (0 = always the likeliest token; higher = more random),
    top_k (sample among the k likeliest), top_p (among the smallest set with probability >= p),
    seed (reproducible; an int, or one per row), repetition_penalty, use_cache.
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    as_list = not isinstance(idx, torch.Tensor)
    if as_list:
        device = next(model.parameters()).device
        idx = torch.tensor([list(idx)], dtype=torch.long, device=device)  # (1, T)
    new = list(generate_tokens(model, idx, max_new_tokens, **options))  # max_new_tokens x (B, 1)
    out = torch.cat([idx, *new], dim=1)  # (B, T + max_new_tokens)
    return out[0].tolist() if as_list else out


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The prompt's ids; an empty prompt starts from a newline (the start of a line of text)."""
    if prompt:
        return tokenizer.encode(prompt)
    try:
        return tokenizer.encode("\n")
    except UserError:  # a char vocabulary without a newline
        return [0]


def generate_text(model, tokenizer: Tokenizer, prompt: str, max_new_tokens: int, **options) -> str:
    """Text in, text out: the continuation of `prompt` (without the prompt), `max_new_tokens` tokens long.

    The model sees at most the last `block_size` tokens of the prompt (see `generate_tokens`). Options as for
    `generate`.
    """
    ids = encode_prompt(tokenizer, prompt)
    out = generate(model, ids, max_new_tokens, **options)
    return tokenizer.decode(out[len(ids) :])
