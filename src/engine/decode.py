"""A decoding step that `torch.compile` compiles whole: fixed shapes, every layer fused, one call per token.

Why. Generating one token runs the model on one position: a few dozen matrix-vector products and ~150
small operations around them (layer norms, attention over the cache, GELU, residual adds, the position
embedding). Run one by one, each small operation costs microseconds of Python and dispatch. For GPT-2
124M, whose weights take ~30 ms to read, that is a few ms per token; for a small character model, whose
weights are read in about a millisecond, it is most of the time. Compiled, the step becomes one program
behind a single call.

Why fixed shapes. `GPT.forward` with a `KVCache` attends over the first pos + 1 positions of the cache, a
length that grows with every token: a compiler would see a new program at every step. Here the step reads
a fixed length of the cache and masks the positions not written yet,

    seen[j] = (j <= pos)          the new token at position pos sees every earlier key, and its own,

with `pos` a tensor, so the next position is the same program with another input. The length is the
smallest power of two (at least 64) that holds pos + 1 keys, capped at the context: reading the whole
context at every step would add 75 MB of cache reads per token to GPT-2 124M's ~500 MB of weights at the
start of a text. After a second length, torch.compile turns the length into a symbol (its automatic
dynamic shapes), and reading the whole cache (a slice that is the whole tensor) is one more program: a
process compiles the step at most three times per batch size, whatever it generates.

What is shared. The cache is the model's own `KVCache`, which already holds the whole context: the prompt
goes through `GPT.forward` as usual (many positions at once, which the compiled step would not speed up),
then every new token goes through the compiled step, which writes its key and value at `pos` and moves
`pos` on. `CompiledDecoding` wraps a model so that `generate` uses it unchanged. Where compiling does not
work (no C++ compiler, too many programs in one process) it says so once and decodes with the model itself.

What it does not cover. Once a text fills the context, `generate` re-reads the last block_size tokens at
every step (the positions shift, so the cache cannot simply be reused): those steps are prompts, run by the
model. A text gets the compiled step for its first block_size tokens, so compiling pays off where one
process decodes many texts: `sample.py --interactive`, or several samples.

Checked against `GPT.forward` with a cache (tests/test_decode.py): the same logits up to float32
rounding, and the same greedy text across a length boundary and past the cache sliding.

Who uses it: `bench/generate.py`, where it is one of the levers measured. `sample.py --fast` used it until
the whole step in C (engine/decode_step.py) proved faster on a CPU and needs no minute of compiling.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn

from src.engine.matvec import compile_failures
from src.generate import generate as _generate

MIN_LENGTH = 64  # the shortest cache length the step reads


def cache_length(pos: int, block_size: int) -> int:
    """How many cache positions the step at `pos` reads: a power of two >= pos + 1 (at least MIN_LENGTH),
    at most the context."""
    return min(block_size, max(MIN_LENGTH, 1 << pos.bit_length()))


def decode_step(model: nn.Module, token: torch.Tensor, pos: torch.Tensor, length: int,
                keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """One new token through a `GPT`, its keys and values written into the cache at `pos`.

    token (B, 1) ids at position pos (a 0-d tensor); keys, values: per layer (B, nh, block_size, hs), filled
    at positions 0..pos-1. Returns the logits of the next token (B, V). The same maths as a block's forward
    with a cache (src/model.py), with the attention reading `length` positions under a mask.
    """
    t, C, nh = model.transformer, model.config.d_model, model.config.n_head
    B = token.shape[0]
    x = t.wte(token) + t.wpe(pos.view(1))  # (B, 1, C)
    seen = torch.arange(length, device=token.device) <= pos  # (length,): the keys written so far
    for layer, block in enumerate(t.h):
        qkv = block.attn.c_attn(block.ln_1(x))  # (B, 1, 3C)
        q, k, v = qkv.view(B, 1, 3, nh, C // nh).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, 1, hs)
        keys[layer].index_copy_(2, pos.view(1), k)  # (B, nh, block_size, hs): this token's key at pos
        values[layer].index_copy_(2, pos.view(1), v)
        # One query against `length` keys, written out rather than F.scaled_dot_product_attention: the compiler
        # then fuses it into the step's single program, where the fused kernel would be a separate call per layer.
        att = (q * keys[layer][:, :, :length]).sum(dim=-1) / math.sqrt(C // nh)  # (B, nh, length)
        att = att.masked_fill(~seen, float("-inf")).softmax(dim=-1)  # a key not written yet weighs exactly 0
        y = (att.unsqueeze(-1) * values[layer][:, :, :length]).sum(dim=2)  # (B, nh, hs)
        x = x + block.attn.c_proj(y.reshape(B, 1, C))  # (B, 1, C); no dropout: generating
        x = x + block.mlp(block.ln_2(x))
    return model.lm_head(t.ln_f(x))[:, -1]  # (B, V)


class CompiledDecoding(nn.Module):
    """A `GPT` for generation whose one-token steps run `decode_step`, compiled; everything else (a prompt,
    training, a loss) is the model's own forward. `generate(CompiledDecoding(model), ...)` gives the
    model's text, up to float32 rounding."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # Left to itself the compiler folds each LayerNorm into the product that follows and redoes it for every
        # row of the weight matrix (50,257 times for lm_head). Storing every intermediate result that reads more
        # than 3 tensors (the CPU default is 12) keeps a product's loop to a weight row, the stored x and at most
        # a bias added to x: 3 reads, so the product itself stays one loop (tests/test_decode.py reads the
        # program). 124M's bf16 step went from 28-31 ms to 22 ms here.
        self.step = torch.compile(decode_step, fullgraph=True, options={"realize_acc_reads_threshold": 3})
        self.broken = None  # the error, once compiling has failed: from then on the model decodes alone

    @property
    def block_size(self) -> int:
        return self.model.block_size

    def new_kv_cache(self, batch_size: int):
        return self.model.new_kv_cache(batch_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache=None, last_only: bool = False):
        """As `GPT.forward` (without `return_attention`); one token after a filled cache takes the compiled step."""
        prompt = cache is None or idx.shape[1] != 1 or cache.pos == 0 or targets is not None
        if prompt or cache.pos >= self.block_size or self.broken:  # a full context: the model's own error
            return self.model(idx, targets, cache=cache, last_only=last_only)
        pos = torch.tensor(cache.pos, device=idx.device)
        # (B, 1) with strides of its own: a slice of the growing text has new ones, which would be a new program
        token = idx.clone(memory_format=torch.contiguous_format)
        try:
            logits = self.step(self.model, token, pos, cache_length(cache.pos, self.block_size), cache.k, cache.v)
        except compile_failures() as err:  # no C++ compiler, too many programs: say so once, then go on without
            self.broken = err
            warnings.warn(f"the decoding step could not be compiled ({str(err)[:200]}); decoding without it",
                          stacklevel=2)
            return self.model(idx, cache=cache, last_only=last_only)
        cache.pos += 1
        return logits[:, None, :], None  # (B, 1, V), no loss

    def generate(self, idx, max_new_tokens: int, **sampling):
        """As `GPT.generate`."""
        return _generate(self, idx, max_new_tokens, **sampling)
