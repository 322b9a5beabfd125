"""GPT-2, written out in full: embeddings, a stack of transformer blocks, a final LayerNorm, a language-model head.

Reading order: `GPTConfig` (the sizes), `CausalSelfAttention` (how tokens look at earlier tokens),
`MLP` (what each token thinks about on its own), `Block` (the two together, with LayerNorm and residual
connections), `GPT` (the whole model).

Shapes use the usual letters: B = batch size, T = sequence length (time), C = d_model (channels),
nh = number of heads, hs = head size = C // nh, V = vocabulary size.

This is GPT-2 exactly, number for number, so that OpenAI's released weights load into it and give the same
logits as Hugging Face `transformers` (a test proves it):
- learned position embeddings added to token embeddings;
- pre-LayerNorm blocks (`x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`) and a final LayerNorm `ln_f`;
- LayerNorm with eps 1e-5; biases on every Linear and LayerNorm;
- GELU in its tanh approximation (GPT-2's "gelu_new"), MLP hidden size 4 * C;
- `lm_head` shares its weight with the token embedding `wte` ("weight tying");
- init N(0, 0.02), with the two projections that write into the residual stream scaled by 1/sqrt(2 * n_layer).
Parameter names are GPT-2's (`transformer.wte`, `transformer.h.0.attn.c_attn`, ...), so loading weights is
a key-for-key copy, apart from one detail of how Hugging Face stores them (see "GPT-2's weights" below).

After `GPT` come GPT-2's config.json (Hugging Face's names for the sizes) and what makes generation fast,
the KV cache (`KVCache`, see also generate.py).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from src.engine.errors import UserError
from src.engine.files import load_tensors, read_json
from src.engine.gpt2_files import CONFIG, LEGACY_WEIGHTS, WEIGHTS
from src.engine.hub import resolve_pretrained
from src.generate import generate as _generate


def default_n_head(d_model: int) -> int:
    """The number of attention heads when none is given: heads 64 wide, as in every GPT-2.

    GPT-2 small is 768 wide with 12 heads, medium 1024 with 16, large 1280 with 20, XL 1600 with 25: always
    64 per head. A width that is not a multiple of 64 gets the number of heads that makes them closest to
    64 wide: 32 -> 1 head of 32, 100 -> 2 heads of 50, 96 -> 2 heads of 48.
    """
    divisors = [n for n in range(1, d_model + 1) if d_model % n == 0]
    return min(divisors, key=lambda n: (abs(d_model / n - 64), n))


@dataclass
class GPTConfig:
    """The sizes of a GPT. The defaults are a small model that trains on a laptop CPU."""

    vocab_size: int = 65  # number of distinct tokens (characters, for a char-level model)
    block_size: int = 256  # context length: the most tokens the model can look at
    n_layer: int = 6  # number of transformer blocks
    n_head: int | None = None  # attention heads per block; None: heads 64 wide (see default_n_head)
    d_model: int = 384  # width of the residual stream ("n_embd" in GPT-2's config)
    dropout: float = 0.0  # dropout probability during training (0 for GPT-2 fine-tuning and small data)
    # Dropout on the attention weights; None: the same as `dropout` (GPT-2's way). 0 with dropout > 0 is
    # residual-only dropout: the attention stays exact, so the fused attention kernel still applies in training.
    attn_dropout: float | None = None

    def __post_init__(self):
        if self.n_head is None and self.d_model >= 1:
            self.n_head = default_n_head(self.d_model)
        for name in ("vocab_size", "block_size", "n_layer", "d_model", "n_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.n_head != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn_dropout is not None and not 0.0 <= self.attn_dropout < 1.0:
            raise ValueError(f"attn_dropout must be in [0, 1) or None, got {self.attn_dropout}")

    @property
    def attn_pdrop(self) -> float:
        """The dropout rate on the attention weights (GPT-2's name for it): `attn_dropout`, else `dropout`."""
        return self.dropout if self.attn_dropout is None else self.attn_dropout

    def to_dict(self) -> dict:
        return asdict(self)


def dropout_layer(p: float) -> nn.Module:
    """`nn.Dropout(p)`, or a pass-through when p = 0 (GPT-2 fine-tuning, and every small-data default
    here): zeroing nothing at random still costs a call per use, which adds up when generating."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def causal_mask(T: int, start: int, device: torch.device) -> dict:
    """Arguments for `scaled_dot_product_attention` that let query i (at position start + i) see keys 0..start+i.

    With no cached keys (start = 0) that is the usual lower-triangular mask (`is_causal=True`). One new
    query after a cache sees every key, so it needs no mask. Several new queries after a cache need the
    triangle shifted right by `start` (`is_causal` would align it to the top left, which is wrong there).
    """
    if start == 0:
        return {"is_causal": T > 1}
    if T == 1:
        return {}
    return {"attn_mask": torch.ones(T, start + T, dtype=torch.bool, device=device).tril(diagonal=start)}


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention written out, keeping its weights: what the fused kernel computes, step by step.

    q, k, v: (B, nh, T, hs). Returns (output (B, nh, T, hs), weights (B, nh, T, T)). Row i of the weights is
    how much query i takes from each position: it sums to 1, and everything right of the diagonal (the
    future) is exactly 0, because the mask puts -inf there before the softmax. `F.scaled_dot_product_attention`
    returns no weights, so looking inside a model (`GPT.forward(..., return_attention=True)`) goes this way;
    training and generation keep the fast kernel.
    """
    T = q.size(-2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T): how well query i matches key j
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(diagonal=1)  # (T, T) True right of diagonal
    weights = F.softmax(scores.masked_fill(future, float("-inf")), dim=-1)  # (B, nh, T, T) rows sum to 1
    return weights @ v, weights  # (B, nh, T, hs), (B, nh, T, T)


class CausalSelfAttention(nn.Module):
    """Multi-head attention where each position may only look at itself and earlier positions.

    Every token emits a query ("what am I looking for?"), a key ("what do I contain?") and a value ("what
    I pass on if chosen"). Attention weights are softmax(q . k / sqrt(hs)) over earlier positions; the
    output is the weighted sum of values. Dividing by sqrt(hs) keeps the dot products at unit variance so
    the softmax does not saturate. Several heads do this in parallel on slices of the channels.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.attn_dropout = config.attn_pdrop  # on the attention weights, while training
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model)  # q, k, v for all heads in one matmul
        self.c_proj = nn.Linear(config.d_model, config.d_model)  # mixes the heads back together
        self.c_proj.residual_projection = True  # marker for the scaled init in GPT._init_weights
        self.resid_dropout = dropout_layer(config.dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, attention: list | None = None
    ) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C). With a list as `attention`, the weights are appended to it (B, nh, T, T)."""
        B, T, C = x.shape
        qkv = self.c_attn(x)  # (B, T, 3C): q, k and v side by side, each C wide
        # Split the channels into q/k/v and heads. view() cuts 3C into (3, nh, hs); permute() moves the
        # q/k/v axis first and the head axis before time, so each head is an independent (T, hs) problem.
        # (A direct view to (B, nh, T, hs) would be wrong: it would mix tokens and heads, because the
        # channels are the innermost axis in memory.)
        qkv = qkv.view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        q, k, v = qkv.unbind(0)  # 3 x (B, nh, T, hs)
        start = 0
        if cache is not None:  # generation: keep this step's keys/values, attend over all kept so far
            start = cache.pos
            k, v = cache.append(layer, k, v)  # (B, nh, start + T, hs) each
        if attention is not None:  # looking inside: the same maths written out, and the weights kept
            y, weights = explicit_attention(q, k, v)  # (B, nh, T, hs), (B, nh, T, T)
            attention.append(weights)
        else:
            # softmax(q k^T / sqrt(hs) + causal mask) v, in one fused kernel. The causal mask sets the future
            # to -inf (never a finite -1e4, which a model can learn to defeat).
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_dropout if self.training else 0.0, **causal_mask(T, start, x.device)
            )  # (B, nh, T, hs)
        # Put the heads side by side again: (B, nh, T, hs) -> (B, T, nh, hs) -> (B, T, C).
        # reshape copies the data into the new order, because transpose only changed the strides.
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))  # (B, T, C)


class MLP(nn.Module):
    """Position-wise feed-forward network: each token on its own, C -> 4C -> GELU -> C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU; the exact erf form drifts from the weights' training
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model)
        self.c_proj.residual_projection = True
        self.dropout = dropout_layer(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, 4C)
        x = self.gelu(x)  # (B, T, 4C)
        return self.dropout(self.c_proj(x))  # (B, T, C)


class Block(nn.Module):
    """One transformer block: communicate (attention), then compute (MLP), each on a residual branch.

    Pre-LayerNorm: normalise *before* each sub-layer and add its output back to the unnormalised stream.
    The residual stream `x` is a highway from input to output, which is what lets deep stacks train.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, eps=1e-5)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, eps=1e-5)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0, attention: list | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer, attention)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


class GPT(nn.Module):
    """The GPT-2 language model: token ids in, next-token logits (and optionally the loss) out.

    Build it from sizes, `GPT(vocab_size=65, d_model=384)`, or from a config, `GPT(GPTConfig(...))`.
    """

    def __init__(self, config: GPTConfig | None = None, **sizes):
        super().__init__()
        if config is None:
            config = GPTConfig(**sizes)
        elif sizes:
            raise TypeError("pass either a GPTConfig or keyword sizes, not both")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.d_model),  # token embedding
                wpe=nn.Embedding(config.block_size, config.d_model),  # position embedding
                drop=dropout_layer(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.d_model, eps=1e-5),
            )
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # Weight tying: the same matrix turns a token into a vector (wte) and a vector into token scores
        # (lm_head). One tensor, so it is counted, trained and saved once.
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # Activation checkpointing (train.py --activation-checkpointing): when training, keep only each
        # block's input and recompute the block's insides during backward. About a third more compute, for
        # activation memory that no longer grows with the inside of every block: a bigger batch or model fits.
        self.recompute_activations = False

    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2's init: N(0, 0.02); zero biases; residual projections N(0, 0.02 / sqrt(2 * n_layer)).

        Each block adds two branches (attention, MLP) to the residual stream; scaling their output
        projections keeps the variance of the stream from growing with depth.
        """
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        # nn.LayerNorm already starts at weight 1, bias 0.

    @property
    def block_size(self) -> int:
        return self.config.block_size

    def num_params(self) -> int:
        """Number of parameters, each counted once (the tied wte/lm_head matrix once)."""
        return sum(p.numel() for p in self.parameters())  # parameters() already yields shared tensors once

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward) at full context: 6N + 12 * L * C * T.

        Each weight is used in one multiply-add (2 FLOPs) forward and two backward (the gradients of its
        input and of itself): 6 per weight N (N leaves out the position embeddings, a lookup; lm_head's
        V x C counts once, though tied). Attention's own two matmuls, q.k^T and weights.v, add
        2 * 2 * C * T per layer forward, x3 with backward: 12 * L * C * T (counted in full, as in the PaLM
        paper, though the causal mask makes half of it zeros). The MFU in the training log divides this
        times tokens/s by the hardware's peak.
        """
        C, L, T = self.config.d_model, self.config.n_layer, self.config.block_size
        return 6 * (self.num_params() - self.transformer.wpe.weight.numel()) + 12 * L * C * T

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None] | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """idx: (B, T) token ids. targets: (B, T) next-token ids or None. Returns (logits (B, T, V), loss).

        For generation: `cache` holds the keys/values of earlier tokens (idx continues after them), and
        `last_only` computes logits for the last position only, the one generation samples from.
        For looking inside: `return_attention` adds a third result, every head's attention weights,
        (n_layer, B, n_head, T, T), computed with the written-out `explicit_attention` (slower; the logits are
        the same; no attention dropout, so use it in eval mode). Not with a cache: it shows whole sequences.
        """
        B, T = idx.shape
        if return_attention and cache is not None:
            raise ValueError("return_attention shows a whole sequence: call it without a KV cache")
        if last_only and targets is not None:
            raise ValueError("last_only is for generating: a loss needs the logits of every position")
        attention = [] if return_attention else None  # each block appends its (B, nh, T, T) weights
        start = cache.pos if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens is longer than the context length "
                f"block_size={self.config.block_size}"
            )
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C) + (T, C) -> (B, T, C)
        x = self.transformer.drop(x)
        recompute = self.recompute_activations and self.training and torch.is_grad_enabled() and cache is None
        for layer, block in enumerate(self.transformer.h):
            if recompute and attention is None:
                x = checkpoint(block, x, None, layer, None, use_reentrant=False)  # (B, T, C), forward run again
            else:
                x = block(x, cache, layer, attention)  # (B, T, C)
        if cache is not None:
            cache.pos += T
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        x = self.transformer.ln_f(x)  # (B, T, C), or (B, 1, C) with last_only
        logits = self.lm_head(x)  # (B, T, V), or (B, 1, V)
        loss = None
        if targets is not None:
            # Cross-entropy in float32 even under bf16 autocast: the log-softmax over V needs the precision.
            loss = F.cross_entropy(logits.float().view(B * T, -1), targets.reshape(B * T))
        if return_attention:
            return logits, loss, torch.stack(attention)  # (n_layer, B, nh, T, T)
        return logits, loss

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty KV cache for generating `batch_size` sequences with this model."""
        weight = self.transformer.wte.weight
        return KVCache(self.config, batch_size, weight.device, weight.dtype)

    def generate(self, idx, max_new_tokens: int, **sampling):
        """Continue `idx` by `max_new_tokens` tokens. See `src.generate.generate` for the options."""
        return _generate(self, idx, max_new_tokens, **sampling)

    def crop_block_size(self, block_size: int) -> None:
        """Shorten the context to `block_size` (to fine-tune GPT-2, whose context is 1024, on shorter windows).

        The position table `wpe` keeps its first `block_size` rows, which are exactly what the model used for
        positions 0..block_size-1, so nothing else changes.
        """
        if block_size > self.config.block_size:
            raise UserError(f"block_size {block_size} is longer than this model's context ({self.config.block_size})")
        self.config = replace(self.config, block_size=block_size)
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size].detach().clone())
        self.transformer.wpe.num_embeddings = block_size

    # --- GPT-2's weights, in Hugging Face's files ------------------------------------------------------
    # GPT-2 was written with "Conv1D" layers that store their weight as (in, out), the transpose of
    # nn.Linear's (out, in), so four weights per block are transposed on the way in and out. lm_head.weight
    # is not stored: it is wte's, re-tied on load. Hugging Face's names are ours (no prefix in GPT2Model files).

    CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")  # old causal-mask buffers some GPT-2 files carry

    def export(self, eos_token_id: int | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
        """What a checkpoint folder holds: (config.json, the tensors of model.safetensors), in Hugging Face's
        GPT-2 layout, so `transformers.GPT2LMHeadModel.from_pretrained(folder)` loads it."""
        tensors = {}
        for name, tensor in self.state_dict().items():
            if name == "lm_head.weight":
                continue  # the same tensor as transformer.wte.weight
            if name.endswith(self.CONV1D_WEIGHTS):
                tensor = tensor.t()
            tensors[name] = tensor.detach().to("cpu", torch.float32).contiguous()
        return hf_config(self.config, eos_token_id), tensors

    def load_hf_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load Hugging Face GPT-2 tensors into this model, checking every name and shape."""
        expected = {k: v.shape for k, v in self.state_dict().items() if k != "lm_head.weight"}
        state, unexpected = {}, []
        for name, tensor in tensors.items():
            if name.endswith(self.IGNORED_SUFFIXES) or name == "lm_head.weight":
                continue  # mask buffers; lm_head is re-tied to wte
            key = name if name.startswith("transformer.") else "transformer." + name
            if key not in expected:
                unexpected.append(name)
                continue
            if key.endswith(self.CONV1D_WEIGHTS):
                tensor = tensor.t()
            if tensor.shape != expected[key]:
                raise UserError(f"weight {name} is {tuple(tensor.shape)}, the config says {tuple(expected[key])}")
            state[key] = tensor
        missing = sorted(expected.keys() - state.keys())
        if missing or unexpected:
            raise UserError(
                f"weights do not match a GPT-2 of this config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
                f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        self.load_state_dict(state, strict=False)  # strict=False: lm_head is tied to wte

    @classmethod
    def from_pretrained(
        cls, name_or_folder: str | os.PathLike, block_size: int | None = None, dropout: float | None = None,
        attn_dropout: float | None = None,
    ) -> GPT:
        """A GPT-2 from a Hugging Face GPT-2 folder (`config.json` + `model.safetensors`), such as `train.py`
        saves, or OpenAI's released weights by name: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"
        (downloaded from the Hugging Face Hub once). `block_size` shortens the context (`crop_block_size`),
        `dropout` replaces the saved dropout rates, the attention weights' too unless `attn_dropout` sets that.

        Decode what it generates with the tokenizer it was trained with: `load_pretrained` in
        engine/checkpoint.py returns the model and that tokenizer together.
        """
        folder = resolve_pretrained(name_or_folder)
        hf = read_json(folder / CONFIG, "model config")
        if hf.get("model_type") != "gpt2":
            raise UserError(f"{folder / CONFIG}: model_type {hf.get('model_type')!r} is not gpt2 "
                            "(load_pretrained in engine/checkpoint.py loads any folder train.py writes)")
        config = config_from_hf(hf)
        if dropout is not None or attn_dropout is not None:
            dropout = config.dropout if dropout is None else dropout
            config = replace(config, dropout=dropout, attn_dropout=attn_dropout)
        weights = folder / WEIGHTS
        if not weights.exists() and (folder / LEGACY_WEIGHTS).exists():
            weights = folder / LEGACY_WEIGHTS  # a pickle: read with weights_only=True (engine/files.py)
        if not weights.exists():
            raise UserError(f"no weights in {folder}: expected {WEIGHTS} beside {CONFIG}")
        model = cls(config)
        model.load_hf_state_dict(load_tensors(weights))
        if block_size is not None:
            model.crop_block_size(block_size)
        return model


# --- GPT-2's config.json, as Hugging Face writes it: other names for the same sizes ("n_embd" for d_model) ---


def hf_config(config: GPTConfig, eos_token_id: int | None = None) -> dict:
    """Our config as a Hugging Face GPT2Config dictionary (the config.json of a GPT-2 folder)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # None = 4 * n_embd
        "activation_function": "gelu_new",  # the tanh approximation of GELU
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.attn_pdrop,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }


def config_from_hf(hf: dict) -> GPTConfig:
    """A Hugging Face GPT-2 config dictionary -> GPTConfig, refusing what GPT-2 code cannot run."""
    if hf.get("activation_function", "gelu_new") != "gelu_new":
        raise UserError(f"unsupported activation_function {hf['activation_function']!r} (GPT-2 uses gelu_new)")
    try:
        if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
            raise UserError(f"unsupported n_inner {hf['n_inner']} (GPT-2 uses 4 * n_embd)")
        dropout = hf.get("resid_pdrop", 0.0)
        attn_dropout = hf.get("attn_pdrop", dropout)
        return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                         n_head=hf["n_head"], d_model=hf["n_embd"], dropout=dropout,
                         attn_dropout=None if attn_dropout == dropout else attn_dropout)
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"invalid GPT-2 config.json ({err!r})") from None


class KVCache:
    """Keys and values of the tokens seen so far, for every layer, so generation computes each token once.

    Without a cache, producing token t+1 runs the model over all t tokens again. But the keys and values
    of earlier tokens never change (a token only attends backwards), so we store them and feed the model
    just the newest token. Memory is allocated once, for the whole context: per layer, k and v of shape
    (B, nh, block_size, hs). `pos` counts the positions filled, which is also the position (for the
    position embedding) of the next token. `append` returns only the filled positions; the rest starts
    as zeros rather than whatever memory held, for engine/decode.py, which reads past `pos` under a mask
    (a masked weight of 0 times a NaN left in memory would still be NaN).
    """

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype: torch.dtype = torch.float32):
        shape = (batch_size, config.n_head, config.block_size, config.d_model // config.n_head)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.pos = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, nh, T, hs) at positions pos..pos+T of `layer`; return all keys/values up to there."""
        end = self.pos + k.shape[2]
        self.k[layer][:, :, self.pos : end] = k
        self.v[layer][:, :, self.pos : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]  # (B, nh, end, hs) each

    def reset(self) -> None:
        self.pos = 0
