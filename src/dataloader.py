"""From text to training batches: text -> train/val split -> token ids (cached) -> random (x, y) windows.

`prepare_data` does the first steps once per run: it reads the documents, joins them with the tokenizer's
separator, splits the text 90/10 into train and validation, learns a tokenizer if none is given, and turns
both splits into token ids, cached on disk (a second run skips the tokenizing). `BatchLoader` then draws
the training batches from those ids.

A language model learns to predict each next token, so one training example is a window of
block_size + 1 consecutive tokens: x is the first block_size of them and y the same window shifted by one.

    tokens:  [18, 47, 56, 57, 58,  1, 15]       block_size = 6
    x:       [18, 47, 56, 57, 58,  1]
    y:       [47, 56, 57, 58,  1, 15]           y[t] is the token that follows x[0..t]

One window therefore holds block_size examples at once: after 18 comes 47, after 18 47 comes 56, ...

Tokens are kept in a NumPy array (uint16 when the vocabulary fits in 16 bits: 2 bytes a token, not the
~28 of a Python int), so a corpus of hundreds of megabytes still fits in memory.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.bpe import ENDOFTEXT, BPETokenizer
from src.engine.corpus import read_documents, resolve_data
from src.engine.errors import UserError
from src.engine.files import atomic_write_bytes
from src.tokenizer import CharTokenizer, Tokenizer

VAL_FRACTION = 0.1


# --- the text, split in two, as token ids -------------------------------------------------------------------


def train_val_split(tokens, val_fraction: float = VAL_FRACTION):
    """First 90% for training, last 10% for validation: deterministic, and no window straddles the cut."""
    n_train = int(len(tokens) * (1 - val_fraction))
    return tokens[:n_train], tokens[n_train:]


def split_text(text: str, separator: str, val_fraction: float = VAL_FRACTION) -> tuple[str, str]:
    """90/10 train/val split by characters, moved back to the start of a separator that the cut would
    split in two (half an "<|endoftext|>" on each side would be two pieces of plain text)."""
    cut = len(train_val_split(text, val_fraction)[0])
    start = text.rfind(separator, 0, cut + len(separator) - 1)  # a separator that begins before the cut...
    if start != -1 and start < cut < start + len(separator):  # ...and ends after it
        cut = start
    return text[:cut], text[cut:]


# What goes between two documents, for a tokenizer learned here: a char vocabulary has no special tokens,
# so a blank line; a BPE learned here gets GPT-2's "<|endoftext|>", which teaches the model where a text ends.
SEPARATORS = {"char": "\n\n", "bpe": ENDOFTEXT}


def learn_tokenizer(kind: str, train_text: str, full_text: str, vocab_size: int) -> Tokenizer:
    """A tokenizer learned from the text: "char" takes every character of the whole text (so validation has
    no unknown characters); "bpe" learns its merges from the training split only (validation stays unseen)."""
    if kind == "char":
        return CharTokenizer.from_text(full_text)
    return BPETokenizer.train(train_text, vocab_size, special_tokens=[ENDOFTEXT], verbose=True)


@dataclass
class Data:
    """A run's data: the tokenizer, the token ids of both splits, and how much text a token is worth."""

    tokenizer: Tokenizer
    train: np.ndarray  # (N_train,) token ids
    val: np.ndarray  # (N_val,) token ids
    tokens_per_char: float  # of the validation text, to report the loss in bits per character ...
    tokens_per_byte: float  # ... and per byte, the one unit every tokenizer can be compared on


def prepare_data(
    data: str | os.PathLike | None,
    block_size: int,
    cache_dir: str | os.PathLike,
    tokenizer: Tokenizer | None = None,
    kind: str = "char",
    vocab_size: int = 512,
    verbose: bool = True,
) -> Data:
    """Text -> tokenizer and train/val token ids.

    data: a text file or a folder of *.txt (None: data/data.txt, else the default corpus).
    tokenizer: one to use as it is (fine-tuning keeps the pretrained model's; --tokenizer gpt2 is GPT-2's),
        or None to learn one of `kind` ("char" or "bpe", `vocab_size` tokens) from this text.
    cache_dir: where the token ids are cached (and the default corpus converted).
    verbose: print which text it is, and how many characters and tokens.
    """
    if tokenizer is None and kind not in SEPARATORS:
        raise UserError(f"no tokenizer of kind {kind!r} can be learned here (choose char or bpe)")
    path, source = resolve_data(data, cache_dir=cache_dir)
    if verbose:
        print(f"training text: {source}")
    documents = read_documents(path)
    separator = tokenizer.document_separator if tokenizer is not None else SEPARATORS[kind]
    text = separator.join(documents)
    train_text, val_text = split_text(text, separator)
    if tokenizer is None:
        tokenizer = learn_tokenizer(kind, train_text, text, vocab_size)
    cache = Path(cache_dir) / "tokens"
    train, val = cached_tokens(train_text, tokenizer, cache), cached_tokens(val_text, tokenizer, cache)
    check_length(train, block_size, "train")
    check_length(val, block_size, "validation")
    tokens_per_byte = len(val) / len(val_text.encode("utf-8"))
    if verbose:
        print(f"{len(text):,} characters, {tokenizer.kind} tokenizer with {tokenizer.vocab_size} tokens, "
              f"{len(train):,} train / {len(val):,} val tokens ({1 / tokens_per_byte:.2f} bytes per token)")
    return Data(tokenizer, train, val, len(val) / len(val_text), tokens_per_byte)


def check_length(tokens: np.ndarray, block_size: int, split: str) -> None:
    """A split must hold at least one window of block_size + 1 tokens."""
    if len(tokens) < block_size + 1:
        raise UserError(
            f"the {split} split has {len(tokens)} tokens, but block_size {block_size} needs at least "
            f"{block_size + 1}: use a longer text or a smaller --block-size (at most {max(len(tokens) - 1, 1)})"
        )


# --- batches ------------------------------------------------------------------------------------------------


class BatchLoader:
    """Draws random (x, y) windows of shape (batch_size, block_size) from one split.

    `rank`/`world_size` let several training processes share the data: each reads its own disjoint slice,
    so no two processes train on the same windows. The random generator is the loader's own, seeded, so
    the sequence of batches is reproducible and its state can be saved and restored for an exact resume.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        block_size: int,
        batch_size: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
    ):
        shard = len(tokens) // world_size
        self.tokens = tokens[rank * shard : (rank + 1) * shard]  # this process's disjoint slice
        check_length(self.tokens, block_size, split)
        self.block_size = block_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One random batch: x, y of shape (B, T), y = x shifted left by one token."""
        n_starts = len(self.tokens) - self.block_size  # window starts 0 .. n_starts - 1 all fit
        starts = torch.randint(n_starts, (self.batch_size,), generator=self.generator).numpy()  # (B,)
        return self.windows(starts)

    def windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The (x, y) windows that begin at `starts`, gathered with one fancy-indexing call."""
        offsets = starts[:, None] + np.arange(self.block_size + 1)  # (B, T + 1)
        chunk = torch.from_numpy(self.tokens[offsets].astype(np.int64))  # (B, T + 1)
        x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()  # (B, T), (B, T)
        if self.device.type == "cuda":  # pinned memory + non_blocking: the copy overlaps with compute
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def fixed_batches(self, n: int, seed: int = 1234) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """`n` batches drawn once with a fixed seed: evaluating on the same batches every time makes the
        loss curve comparable from one evaluation to the next (no sampling noise between points)."""
        generator = torch.Generator().manual_seed(seed)
        n_starts = len(self.tokens) - self.block_size
        return [
            self.windows(torch.randint(n_starts, (self.batch_size,), generator=generator).numpy())
            for _ in range(n)
        ]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def evaluation_batches(data: Data, block_size: int, batch_size: int, n: int, device) -> dict[str, list]:
    """`n` fixed batches of each split, the same at every evaluation: the loss curve then moves only because
    the model changed, not because other windows were drawn."""
    splits = {"train": data.train, "validation": data.val}
    return {split: BatchLoader(tokens, block_size, batch_size, device, split=split).fixed_batches(n)
            for split, tokens in splits.items()}


# --- token files: tokenize a corpus once, memory-map it afterwards ------------------------------------------
#
# Tokenizing hundreds of megabytes with a pure-Python BPE takes minutes, so the result is cached in a
# binary file: a 32-byte header, then the ids. The header makes the file self-describing and checkable:
#     magic b"GPT2TOK\0" | version (uint32) | bytes per id (uint32: 2 = uint16, 4 = int32) | count (uint64)
#     | 8 bytes reserved
# `np.memmap` maps the ids without reading them into memory; the OS pages them in as batches need them.

TOKEN_MAGIC = b"GPT2TOK\0"
TOKEN_VERSION = 1
HEADER = struct.Struct("<8sIIQ8x")  # little-endian: magic, version, itemsize, count, padding -> 32 bytes


def token_array(ids, vocab_size: int) -> np.ndarray:
    """Token ids as a compact NumPy array: uint16 when every id fits in 16 bits, else int32."""
    dtype = np.uint16 if vocab_size <= 2**16 else np.int32
    return np.asarray(ids, dtype=dtype)


def write_token_file(path: str | Path, tokens: np.ndarray) -> None:
    """Write ids (uint16 or int32) with the header, atomically."""
    if tokens.dtype not in (np.uint16, np.int32):
        raise ValueError(f"token files hold uint16 or int32 ids (see token_array), got {tokens.dtype}")
    header = HEADER.pack(TOKEN_MAGIC, TOKEN_VERSION, tokens.dtype.itemsize, len(tokens))
    atomic_write_bytes(path, header + tokens.astype(tokens.dtype.newbyteorder("<"), copy=False).tobytes())


def read_token_file(path: str | Path) -> np.ndarray:
    """Memory-map a token file, checking its header and that its size matches the count."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(HEADER.size)
    if len(raw) < HEADER.size:
        raise UserError(f"{path} is not a token file (too short)")
    magic, version, itemsize, count = HEADER.unpack(raw)
    if magic != TOKEN_MAGIC or version != TOKEN_VERSION or itemsize not in (2, 4):
        raise UserError(f"{path} is not a version-{TOKEN_VERSION} token file")
    if path.stat().st_size != HEADER.size + itemsize * count:
        raise UserError(f"{path} is truncated: the header says {count} tokens")
    dtype = np.dtype("<u2") if itemsize == 2 else np.dtype("<i4")
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER.size, shape=(count,))


def cached_tokens(text: str, tokenizer: Tokenizer, cache_dir: str | Path) -> np.ndarray:
    """The ids of `text` as a NumPy array, from the cache when the same text and tokenizer were seen
    before. The key is a hash of both, so a changed text or tokenizer never reuses stale ids.

    Special-token strings in a training corpus are encoded as special tokens: "<|endoftext|>" between
    documents is how GPT-2 learned where one text ends and the next begins.
    """
    key = hashlib.sha256(text.encode("utf-8") + tokenizer.to_json().encode("utf-8")).hexdigest()[:24]
    path = Path(cache_dir) / f"{key}.tokens"
    if path.exists():
        try:
            return read_token_file(path)
        except UserError:
            pass  # a damaged cache file is simply rebuilt
    tokens = token_array(tokenizer.encode(text, allowed_special="all"), tokenizer.vocab_size)
    write_token_file(path, tokens)
    return read_token_file(path)
