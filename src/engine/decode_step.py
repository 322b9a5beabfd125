"""Decoding on a CPU with the whole one-token step in C (decode_step.c): one call per token.

Why. A decoding step reads every weight once, so the best a CPU can do is its memory bandwidth; what keeps
PyTorch from it is everything around the products. Eagerly, ~150 small operations a token each cost
microseconds of Python and dispatch; compiled whole (engine/decode.py), they shrink to a few dozen programs,
but every int8 product stays a call of its own through PyTorch's dispatcher, and compiling takes 30-100 s
the first time. decode_step.c is the same step as one C function over the model's own tensors (float32,
bfloat16 or int8 weights, the KV cache), compiled in about a second on first use (engine/ckernel.py).

What it computes. `GPT.forward` with a `KVCache` for one new token: the same maths, in float32, with the
sums in another order (tests/test_decode_step.py holds its logits to a float64 model, as tight as PyTorch's
own float32 forward, and checks that greedy text is the model's, past the cache sliding too).

How it is used. `CDecoding(model)` wraps a GPT whose linear layers hold float32 weights (`nn.Linear`, or
engine/matvec.py's `StreamingLinear`), bfloat16 ones (`StreamingLinear`) or int8 ones (engine/quantize.py's
`Int8Linear`), so that `generate` uses it unchanged: a one-token step after a filled cache (one new token
for each text of a batch) goes to the C step; everything else (a prompt, a loss, a text past the context) is
the model's own forward. `sample.py --fast` uses it on a CPU. The C step reads the weights where they lie,
from the first one-token step on: change them in place if you must, never replace them.

Where the C file does not compile (no C compiler), `available()` is False, a warning says so once, and
`sample.py --fast` decodes with the model's own steps.

Who uses it: `sample.py --fast`, `bench/generate.py`.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch
import torch.nn as nn

from src.engine.ckernel import Kernel
from src.engine.matvec import StreamingLinear
from src.engine.quantize import Int8Linear
from src.generate import generate as _generate

P = ctypes.c_void_p  # an address
FLOAT32, BFLOAT16, INT8 = 0, 1, 2  # dot.h's `enum dot_format`: how a layer's weights are stored


class _Linear(ctypes.Structure):
    _fields_ = [("weight", P), ("scale", P), ("bias", P), ("format", ctypes.c_int)]  # scale: int8's, else None


class _Norm(ctypes.Structure):
    _fields_ = [("weight", P), ("bias", P)]


class _Block(ctypes.Structure):
    _fields_ = [("ln_1", _Norm), ("c_attn", _Linear), ("attn_proj", _Linear), ("ln_2", _Norm),
                ("c_fc", _Linear), ("mlp_proj", _Linear), ("k", P), ("v", P)]


class _Model(ctypes.Structure):
    _fields_ = ([(name, ctypes.c_int) for name in ("n_layer", "n_head", "d_model", "block_size", "vocab_size")]
                + [("wte", P), ("wpe", P), ("h", ctypes.POINTER(_Block)), ("ln_f", _Norm), ("lm_head", _Linear)])


def _declare(library: ctypes.CDLL) -> None:
    # decode_step(model, tokens, B, pos, logits, threads)
    library.decode_step.argtypes = [ctypes.POINTER(_Model), P, ctypes.c_int, ctypes.c_int, P, ctypes.c_int]
    library.decode_step.restype = None
    library.decode_step_version.restype = ctypes.c_char_p


KERNEL = Kernel(Path(__file__).with_name("decode_step.c"), _declare, fallback="the model's own steps",
                flags=("-fno-trapping-math",))  # lets the compiler vectorize e^x's clamps (exp_float.h)
PLAIN = ("-DDOT_PLAIN",)  # dot.h's plain loops, on any machine


def available() -> bool:
    """Whether the C step runs here; compiles it on the first call (warning once if it cannot be)."""
    return KERNEL.available()


def version(extra_flags: tuple[str, ...] = ()) -> str:
    """Which version of dot.h this machine compiled: "avx2" or "plain"."""
    return KERNEL.library(extra_flags).decode_step_version().decode()


def _address(t: torch.Tensor, what: str, dtypes=(torch.float32,), read: list | None = None) -> int:
    """The address of a tensor the C code reads as a plain array of one of `dtypes`; refuses anything else.
    `read` collects (tensor, address): the tensors stay alive while the C code holds their addresses."""
    if t.dtype not in dtypes or not t.is_cpu or not t.is_contiguous():
        raise ValueError(f"the C decoding step reads {' or '.join(str(d).removeprefix('torch.') for d in dtypes)} "
                         f"tensors, contiguous on the CPU; {what} is {t.dtype} {tuple(t.shape)} on {t.device}"
                         + ("" if t.is_contiguous() else ", not contiguous"))
    if read is not None:
        read.append((t, t.data_ptr()))
    return t.data_ptr()


def _linear(layer: nn.Module, name: str, read: list) -> _Linear:
    """A linear layer as the C step reads it: float32 or bfloat16 weights (out, in), or int8 ones with their
    scales."""
    bias = None if layer.bias is None else _address(layer.bias, f"{name}.bias", read=read)
    if isinstance(layer, Int8Linear):
        return _Linear(_address(layer.weight_int8, f"{name}.weight_int8", (torch.int8,), read),
                       _address(layer.scale, f"{name}.scale", read=read), bias, INT8)
    if isinstance(layer, (nn.Linear, StreamingLinear)):
        weight = _address(layer.weight, f"{name}.weight", (torch.float32, torch.bfloat16), read)
        return _Linear(weight, None, bias, BFLOAT16 if layer.weight.dtype == torch.bfloat16 else FLOAT32)
    raise ValueError(f"the C decoding step takes linear layers with float32, bfloat16 or int8 weights; {name} is "
                     f"{type(layer).__name__}")


def _norm(norm: nn.LayerNorm, name: str, read: list) -> _Norm:
    if norm.eps != 1e-5 or norm.weight is None or norm.bias is None:
        raise ValueError(f"the C decoding step computes LayerNorm with eps 1e-5, a weight and a bias; {name} differs")
    return _Norm(_address(norm.weight, f"{name}.weight", read=read), _address(norm.bias, f"{name}.bias", read=read))


class CDecoding(nn.Module):
    """A `GPT` for generation whose one-token steps run decode_step.c, on the CPU; everything else is the
    model's own forward. `generate(CDecoding(model), ...)` gives the model's text, up to float32 rounding.

    The model's tensors are read at its first one-token step (a model without a KV cache, the bigram, never
    has one: it decodes as it always does); a model the C step cannot read (float16 weights, a tensor that is
    not contiguous) raises ValueError there, naming the tensor. Every address is checked before each step, so
    the C code never reads freed memory: when a tensor has moved (`model.to(torch.bfloat16).float()`,
    `param.data = ...`) the model is read again. A layer replaced by another is not seen (the old one's tensors,
    held here, are read): make a new CDecoding."""

    def __init__(self, model: nn.Module, extra_flags: tuple[str, ...] = ()):
        super().__init__()
        self.model, self.extra_flags = model, extra_flags
        self.layout, self.blocks = None, None  # the model as the C code reads it, once read
        self.read: list[tuple[torch.Tensor, int]] = []  # the tensors behind the layout, and their addresses then
        self.cache = None  # the cache whose tensors the blocks point at

    def _read(self, cache) -> None:
        """Lay the model out for the C code (the first time, or when a tensor has moved) and point its blocks at
        `cache` (a new one)."""
        if self.layout is not None and any(t.data_ptr() != address for t, address in self.read):
            self.layout, self.cache = None, None
        if self.layout is None:
            c, t, read = self.model.config, self.model.transformer, []
            self.blocks = (_Block * c.n_layer)(*[
                _Block(_norm(b.ln_1, f"h.{i}.ln_1", read), _linear(b.attn.c_attn, f"h.{i}.attn.c_attn", read),
                       _linear(b.attn.c_proj, f"h.{i}.attn.c_proj", read), _norm(b.ln_2, f"h.{i}.ln_2", read),
                       _linear(b.mlp.c_fc, f"h.{i}.mlp.c_fc", read), _linear(b.mlp.c_proj, f"h.{i}.mlp.c_proj", read),
                       None, None)
                for i, b in enumerate(t.h)])
            self.layout = _Model(c.n_layer, c.n_head, c.d_model, c.block_size, c.vocab_size,
                                 _address(t.wte.weight, "wte", read=read), _address(t.wpe.weight, "wpe", read=read),
                                 self.blocks, _norm(t.ln_f, "ln_f", read), _linear(self.model.lm_head, "lm_head", read))
            self.read = read
        if cache is not self.cache:  # a new cache (a new text): point the blocks at its tensors
            c = self.model.config
            for layer, block in enumerate(self.blocks):
                for name, kv in (("keys", cache.k[layer]), ("values", cache.v[layer])):
                    if kv.shape[1:] != (c.n_head, c.block_size, c.d_model // c.n_head):  # C writes (B, nh, T, hs)
                        raise ValueError(f"the cache's {name} {layer} are {tuple(kv.shape)}, not (B, {c.n_head}, "
                                         f"{c.block_size}, {c.d_model // c.n_head}): a cache of another model")
                block.k = _address(cache.k[layer], f"the cache's keys {layer}")
                block.v = _address(cache.v[layer], f"the cache's values {layer}")
            self.cache = cache

    @property
    def block_size(self) -> int:
        return self.model.block_size

    def new_kv_cache(self, batch_size: int):
        return self.model.new_kv_cache(batch_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, **options):
        """As the model's forward, with its options (`cache`, `last_only`) passed on as given; one new token per
        text after a filled cache takes the C step."""
        cache = options.get("cache")
        one_step = (cache is not None and targets is None and idx.shape[1] == 1 and 0 < cache.pos < self.block_size
                    and idx.shape[0] == cache.k[0].shape[0] and not idx.is_cuda
                    and set(options) <= {"cache", "last_only"})  # not return_attention: the C step keeps none
        if not one_step:
            return self.model(idx, targets, **options)
        self._read(cache)
        tokens, V = idx[:, 0].to(torch.int64).contiguous(), self.model.config.vocab_size  # (B,)
        if not bool(((tokens >= 0) & (tokens < V)).all()):  # the C code would read outside wte
            raise IndexError(f"a token is outside the vocabulary (0..{V - 1}): {tokens.tolist()}")
        logits = torch.empty(len(tokens), 1, V, dtype=torch.float32, device="cpu")  # (B, 1, V), whatever the defaults
        KERNEL.library(self.extra_flags).decode_step(ctypes.byref(self.layout), tokens.data_ptr(), len(tokens),
                                                     cache.pos, logits.data_ptr(), torch.get_num_threads())
        cache.pos += 1
        return logits, None  # no loss

    def generate(self, idx, max_new_tokens: int, **sampling):
        """As `GPT.generate`."""
        return _generate(self, idx, max_new_tokens, **sampling)
