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

Beyond that, `prepare.py` tokenizes a corpus once into shards on disk, and `PreparedData` / `ShardLoader`
(the second half of this file) stream them: every window once per epoch, in a shuffled order, with a
position that is one number, so that many processes, and a resumed run on another number of them, read
exactly the windows one process would.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from src.bpe import ENDOFTEXT, BPETokenizer, load_tokenizer
from src.engine.corpus import read_documents, resolve_data
from src.engine.errors import UserError
from src.engine.shards import (  # the token-file format
    HEADER,
    TOKENIZER_FILE,
    read_manifest,
    read_token_file,
    shard_paths,
    token_array,
    write_token_file,
)
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

    def train_loader(self, block_size, batch_size, device="cpu", seed=0, rank=0, world_size=1, accum=1):
        """Random training windows; each process draws from its own slice, with its own seed. (`accum` is for
        PreparedData's loader, whose processes share one order of windows: random draws need no such plan.)"""
        return BatchLoader(self.train, block_size, batch_size, device, seed=seed + rank, rank=rank,
                           world_size=world_size)

    def evaluation_batches(self, block_size: int, batch_size: int, n: int, device) -> dict[str, list]:
        return evaluation_batches(self, block_size, batch_size, n, device)


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
    val_chars, val_bytes = document_size(val_text, documents, separator, cut=len(train_text))
    tokens_per_byte = len(val) / val_bytes
    if verbose:
        print(f"{len(text):,} characters, {tokenizer.kind} tokenizer with {tokenizer.vocab_size} tokens, "
              f"{len(train):,} train / {len(val):,} val tokens ({1 / tokens_per_byte:.2f} bytes per token)")
    return Data(tokenizer, train, val, len(val) / val_chars, tokens_per_byte)


def document_size(val_text: str, documents: list[str], separator: str, cut: int) -> tuple[int, int]:
    """(characters, UTF-8 bytes) of the documents' own text in the validation split, which starts at `cut`.

    Bits per byte divide the loss by the text's size, and the separators the join added are not text: an
    "<|endoftext|>" is one token, not 13 bytes (prepare.py counts the same way)."""
    joins, at = 0, 0  # separators inside the validation split; `at`: where the next one starts
    for document in documents[:-1]:
        at += len(document)
        joins += at >= cut
        at += len(separator)
    return (len(val_text) - joins * len(separator),
            len(val_text.encode("utf-8")) - joins * len(separator.encode("utf-8")))


def check_length(tokens: np.ndarray, block_size: int, split: str) -> None:
    """A split must hold at least one window of block_size + 1 tokens."""
    if len(tokens) < block_size + 1:
        smaller = f" or a smaller --block-size (at most {len(tokens) - 1})" if len(tokens) >= 2 else ""
        raise UserError(f"the {split} split has {len(tokens)} tokens, but block_size {block_size} needs at least "
                        f"{block_size + 1}: use a longer text{smaller}")


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

    def checkpoint(self, ddp) -> tuple[dict[str, torch.Tensor], dict]:
        """The position of every process (each its own generator) for the resume file; a collective call."""
        states = ddp.gather(self.generator.get_state())
        return {f"loader.generator.{rank}": state for rank, state in enumerate(states)}, {}

    def restore(self, tensors: dict[str, torch.Tensor], values: dict, path, rank: int, world_size: int) -> None:
        """Take this process's position from a resume file; each process's slice depends on how many there are."""
        saved = sum(1 for name in tensors if name.startswith("loader.generator."))
        if not saved:
            raise UserError(f"{path} was saved by a run on a prepared folder: resume with the same --data DIR")
        if saved != world_size:
            raise UserError(f"{path} was saved by {saved} process(es); resume with {saved}, not {world_size}")
        self.generator.set_state(tensors[f"loader.generator.{rank}"])


def evaluation_batches(data: Data, block_size: int, batch_size: int, n: int, device) -> dict[str, list]:
    """`n` fixed batches of each split, the same at every evaluation: the loss curve then moves only because
    the model changed, not because other windows were drawn."""
    splits = {"train": data.train, "validation": data.val}
    return {split: BatchLoader(tokens, block_size, batch_size, device, split=split).fixed_batches(n)
            for split, tokens in splits.items()}


# --- a prepared folder: shards streamed from disk -----------------------------------------------------------
#
# For a corpus too big for memory, `python src/prepare.py` tokenizes it once into shards (engine/shards.py),
# and `--data DIR` streams them. A shard of n tokens holds (n - 1) // block_size *windows*, side by side:
#
#     shard:    [t0 t1 t2 t3 | t4 t5 t6 t7 | t8 ...]      block_size = 4
#     window 0: x = t0..t3, y = t1..t4     window 1: x = t4..t7, y = t5..t8
#
# The windows do not overlap (each token is a target once per epoch), and an epoch visits every window once,
# in an order shuffled from (seed, epoch): first the order of the shards, then the windows within each.
# Where the loader stands is one number, the windows read so far by all processes together, so a run saved
# by 4 processes resumes on 2 (at the same tokens per step) and reads exactly the windows it would have read.


@dataclass
class Window:
    """block_size + 1 tokens (or fewer, at the end of a validation shard) of one shard file."""

    path: Path
    start: int  # first token
    length: int  # tokens
    itemsize: int  # bytes per token in the file: 2 (uint16) or 4 (int32)


class PreparedData:
    """A folder written by prepare.py: its tokenizer, its shards, and the loaders that read them."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.tokenizer = load_tokenizer(self.folder / TOKENIZER_FILE)
        self.dataset_sha256 = self.manifest["dataset_sha256"]
        self.train_shards = shard_paths(self.folder, self.manifest, "train")
        self.val_shards = shard_paths(self.folder, self.manifest, "val")
        self.train_tokens = [shard["tokens"] for shard in self.manifest["splits"]["train"]["shards"]]
        self.val_tokens = [shard["tokens"] for shard in self.manifest["splits"]["val"]["shards"]]
        self.itemsize = np.dtype(self.manifest["dtype"]).itemsize
        val = self.manifest["splits"]["val"]
        self.tokens_per_byte = val["tokens"] / max(val["bytes"], 1)  # for the loss in bits per byte ...
        self.tokens_per_char = val["tokens"] / max(val["characters"], 1)  # ... and per character

    def describe(self) -> str:
        splits = self.manifest["splits"]
        return (f"prepared data {self.folder}: {self.tokenizer.kind} tokenizer with {self.tokenizer.vocab_size} "
                f"tokens, {splits['train']['tokens']:,} train tokens in {len(self.train_shards)} shard(s), "
                f"{splits['val']['tokens']:,} validation tokens")

    def train_loader(self, block_size, batch_size, device="cpu", seed=0, rank=0, world_size=1, accum=1):
        return ShardLoader(self, block_size, batch_size, device, seed, rank, world_size, accum)

    def validation_windows(self, block_size: int, partial: bool = True) -> list[Window]:
        """Every validation token in non-overlapping windows, shard by shard, in order; with `partial` the
        shorter window at the end of each shard too (so that every token but a shard's first is a target)."""
        windows = []
        for path, n in zip(self.val_shards, self.val_tokens, strict=True):
            windows += [Window(path, s, min(block_size + 1, n - s), self.itemsize) for s in range(0, n - 1, block_size)]
        return [w for w in windows if w.length == block_size + 1 or (partial and w.length > 1)]

    def validation_groups(self, block_size: int, batch_size: int, max_batches: int | None = None):
        """The validation windows in batches, always the same ones in the same order: full windows
        `batch_size` at a time, then each shorter window as a batch of its own. `max_batches` keeps the first."""
        windows = self.validation_windows(block_size)
        full = [w for w in windows if w.length == block_size + 1]
        groups = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
        groups += [[w] for w in windows if w.length < block_size + 1]
        return groups[:max_batches] if max_batches is not None else groups

    def validation_batches(self, block_size: int, batch_size: int, device="cpu", max_batches: int | None = None):
        """`validation_groups` as (x, y) batches, read one at a time: a large budget is never in memory at once."""
        for group in self.validation_groups(block_size, batch_size, max_batches):
            yield to_batch([read_window(w) for w in group], device)

    def evaluation_batches(self, block_size: int, batch_size: int, n: int, device) -> dict[str, list]:
        """`n` fixed batches of each split for the evaluations during training: the first validation batches
        of full windows, and the training shards' first windows in file order (to compare the two losses)."""
        if not any(w.length == block_size + 1 for w in self.validation_windows(block_size, partial=False)):
            raise UserError(f"the validation split of {self.folder} has no window of block_size + 1 = "
                            f"{block_size + 1} tokens: prepare it with a larger --val-tokens")
        val = [(x, y) for x, y in self.validation_batches(block_size, batch_size, device, max_batches=n)
               if x.shape[1] == block_size]  # a shard's shorter last window: not here
        loader = self.train_loader(block_size, batch_size, device)
        in_file_order = [loader.window(shard, i) for shard, count in enumerate(loader.shard_windows)
                         for i in range(min(count, n * batch_size))][: n * batch_size]
        train = [loader.batch(in_file_order[i : i + batch_size]) for i in range(0, len(in_file_order), batch_size)]
        return {"train": [b for b in train if b[0].shape[0] == batch_size], "validation": val}


def read_window(window: Window) -> np.ndarray:
    """The tokens of one window, read with one positioned read: no memory map that would grow over a long run."""
    with open(window.path, "rb") as f:
        f.seek(HEADER.size + window.start * window.itemsize)
        raw = f.read(window.length * window.itemsize)
    if len(raw) != window.length * window.itemsize:
        raise UserError(f"{window.path} is shorter than its manifest says: prepare the data again")
    return np.frombuffer(raw, dtype="<u2" if window.itemsize == 2 else "<i4")


def to_batch(rows: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Equal-length token rows -> (x, y) of shape (B, T), y = x shifted left by one, on `device`."""
    chunk = torch.from_numpy(np.stack(rows).astype(np.int64))  # (B, T + 1)
    x, y = chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()
    device = torch.device(device)
    if device.type == "cuda":
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


class ShardLoader:
    """Training batches from the train shards of a prepared folder, every window once per epoch.

    Optimizer step s reads windows [G, G + N) of the global order, N = batch_size * accum * world_size, where
    G counts the windows read before it. Micro-batch m of process r takes the batch_size windows starting at
    G + (m * world_size + r) * batch_size: processes read disjoint windows, and together exactly the windows
    one process would read with world_size times the accumulation.
    """

    def __init__(self, data: PreparedData, block_size: int, batch_size: int, device="cpu", seed: int = 0,
                 rank: int = 0, world_size: int = 1, accum: int = 1):
        self.data, self.block_size, self.batch_size = data, block_size, batch_size
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size, self.accum = seed, rank, world_size, accum
        self.shard_windows = np.array([(n - 1) // block_size for n in data.train_tokens], dtype=np.int64)
        self.epoch_windows = int(self.shard_windows.sum())  # W: windows in one epoch
        if self.epoch_windows < batch_size:
            raise UserError(f"the training split of {data.folder} holds {self.epoch_windows} windows of "
                            f"{block_size + 1} tokens, fewer than one batch ({batch_size}): use a smaller "
                            "--block-size or --batch-size, or more text")
        self.windows_read = 0  # G at the start of the current optimizer step
        self.micro = 0  # micro-batches this process has taken in the current step
        self._order: tuple[int, np.ndarray, np.ndarray] | None = None  # (epoch, shard order, cumulative windows)
        self._within: dict[tuple[int, int], np.ndarray] = {}  # (epoch, shard) -> its window order

    @property
    def windows_per_step(self) -> int:
        return self.batch_size * self.accum * self.world_size

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's next micro-batch: x, y of shape (B, T)."""
        first = self.windows_read + (self.micro * self.world_size + self.rank) * self.batch_size
        windows = [self.window_at(g) for g in range(first, first + self.batch_size)]
        self.micro += 1
        if self.micro == self.accum:  # the step is complete: every process has read its share
            self.micro, self.windows_read = 0, self.windows_read + self.windows_per_step
        return self.batch(windows)

    def batch(self, windows: list[Window]) -> tuple[torch.Tensor, torch.Tensor]:
        return to_batch([read_window(w) for w in windows], self.device)

    def window_at(self, g: int) -> Window:
        """The g-th window of the global order: epoch g // W, then its place in that epoch's order."""
        epoch, k = divmod(g, self.epoch_windows)
        order, ends = self._epoch_order(epoch)
        slot = int(np.searchsorted(ends, k, side="right"))  # which shard of the epoch's order holds it
        shard = int(order[slot])
        within = self._window_order(epoch, shard)[k - (ends[slot - 1] if slot else 0)]
        return self.window(shard, int(within))

    def window(self, shard: int, index: int) -> Window:
        return Window(self.data.train_shards[shard], index * self.block_size, self.block_size + 1, self.data.itemsize)

    def _epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The shards of `epoch` in their shuffled order, and the cumulative window counts along it."""
        if self._order is None or self._order[0] != epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shard_windows))
            self._order = (epoch, order, np.cumsum(self.shard_windows[order]))
            self._within.clear()  # only the current epoch's window orders are kept: memory stays flat
        return self._order[1], self._order[2]

    def _window_order(self, epoch: int, shard: int) -> np.ndarray:
        if (epoch, shard) not in self._within:
            rng = np.random.default_rng([self.seed, epoch, shard])
            self._within[(epoch, shard)] = rng.permutation(int(self.shard_windows[shard]))
        return self._within[(epoch, shard)]

    # Saving and resuming: the position is the same number on every process.

    def state_dict(self) -> dict:
        if self.micro:
            raise RuntimeError("the loader's position is saved between optimizer steps only")
        return {"windows_read": torch.tensor([self.windows_read], dtype=torch.int64)}

    def identity(self) -> dict:
        """What a resumed run must share with the saved one for the position to mean the same windows."""
        return {"dataset_sha256": self.data.dataset_sha256, "block_size": self.block_size,
                "windows_per_step": self.windows_per_step, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.windows_read, self.micro = int(state["windows_read"][0]), 0

    def checkpoint(self, ddp) -> tuple[dict[str, torch.Tensor], dict]:
        """The position, the same on every process, and what it means (`identity`), for the resume file."""
        return {"loader.windows_read": self.state_dict()["windows_read"]}, self.identity()

    def restore(self, tensors: dict[str, torch.Tensor], values: dict, path, rank: int, world_size: int) -> None:
        """Continue from a resume file's position: any number of processes, if the data and the windows per
        step are the same (every process checks, so all of them stop together on a mismatch)."""
        if "loader.windows_read" not in tensors:
            raise UserError(f"{path} was saved by a run on a text file, not on the prepared folder {self.data.folder}: "
                            "resume with the same --data")
        what = {"dataset_sha256": f"the dataset_sha256 of --data {self.data.folder}", "block_size": "--block-size",
                "seed": "--seed", "windows_per_step": "the windows per step (--tokens-per-step / --block-size)"}
        for key, name in what.items():
            if values.get(key) != self.identity()[key]:
                raise UserError(f"--resume: {path} was saved on other data or settings: {name} was "
                                f"{values.get(key)}, now {self.identity()[key]}; resume with the run's own")
        self.load_state_dict({"windows_read": tensors["loader.windows_read"]})


# --- the token cache: tokenize a text once, memory-map its ids afterwards -------------------------------------


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
