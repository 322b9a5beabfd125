"""Tokenize a corpus once, into shards that training streams: `python src/prepare.py SOURCE... --out DIR`.

`python src/train.py --data FILE` reads its text into memory and tokenizes it in one process: fine for a
book, not for the 10 GB of web text GPT-2 124M is trained on. This command does that work once, on every
core, and writes a folder that `train.py --data DIR` and `evaluate.py --data DIR` stream from disk:

1. the tokenizer: GPT-2's (`--tokenizer gpt2`), a file (`PATH.json`), or one learned here: `char` from
   every character of the corpus (a first pass), `bpe` from its first `--bpe-sample-chars` characters;
2. the text, as pieces (engine/sources.py): files, folders or globs of `.txt` (a document per file, or
   documents separated by `<|endoftext|>`), `.jsonl`/`.jsonl.gz`, `.parquet`, or a Hugging Face dataset
   (`hf:NAME[:CONFIG]`); a long document is cut into pieces only where cutting cannot change its tokens;
3. encoding on `--workers` processes, results back in order (engine/pool.py): the output is byte for byte
   the same for any number of workers;
4. routing: every document gets the document prefix (the end-of-text token) and goes whole to one split.
   The first documents go to validation until it holds `--val-tokens` (a fixed budget, not a fraction:
   10% of a 10-billion-token corpus would be a billion tokens nobody evaluates); the rest to training.
   One document longer than the whole budget (a book in one file) gives validation its first tokens and
   training the rest. A BPE learned here learns from the first documents, which then count as training:
   validation is never seen by the tokenizer;
5. shards of at most `--shard-tokens` ending on document boundaries (unless that would leave a shard less than
   half full: a long document is cut between two tokens), each written atomically, then the
   manifest (engine/shards.py) that lists them, with the tokens still waiting for the next shard saved
   beside it. Interrupted (Ctrl-C, a kill), the folder keeps every finished shard; the same command again
   continues from the last one, to the same bytes.

Already-tokenized llm.c / modded-nanogpt `.bin` shards (FineWeb as they distribute it) are accepted too:
their documents are routed and sharded the same way, without tokenizing anything.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/prepare.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Nothing imported at the top of this file may import PyTorch: spawned workers import this file again.
import numpy as np
from tqdm import tqdm

from src.bpe import ENDOFTEXT, GPT2_PATTERN, BPETokenizer, load_tokenizer
from src.engine.corpus import CACHE_DIR
from src.engine.errors import ArgumentParser, UserError, positive_int, run_cli
from src.engine.files import atomic_write_text
from src.engine.pool import ordered_map
from src.engine.shards import (
    MANIFEST_VERSION,
    SPLITS,
    TOKENIZER_FILE,
    dataset_sha256,
    is_prepared,
    read_manifest,
    read_token_file,
    sha256_file,
    shard_name,
    token_array,
    write_manifest,
    write_token_file,
)
from src.engine.sources import (
    HF_PREFIX,
    expand_sources,
    is_token_sources,
    iter_pieces,
    iter_token_pieces,
    total_bytes,
)
from src.engine.tokenizers import gpt2_tokenizer
from src.tokenizer import CharTokenizer, Tokenizer

TASK_CHARS = 1 << 20  # characters of text per task sent to a worker: large enough that sending it costs little
PIECE_CHARS = 1 << 20  # a longer document is cut into pieces of about this many characters, for the workers


# --- 1. the tokenizer ------------------------------------------------------------------------------------------


def choose_tokenizer(spec: str, files: list[str], vocab_size: int, sample_chars: int, text_field: str,
                     cache_dir: str) -> tuple[Tokenizer, int]:
    """(tokenizer, documents it was learned from). Only a BPE learned here learns from documents (the first
    ones, which must then not be validation); the character vocabulary needs every character, so it reads
    the whole corpus once."""
    if spec == "gpt2":
        return gpt2_tokenizer(cache_dir), 0
    if spec.endswith(".json"):
        return load_tokenizer(spec), 0
    if is_token_sources(files) and spec in ("char", "bpe"):
        raise UserError("llm.c .bin shards are already tokens: give their tokenizer (--tokenizer gpt2)")
    if spec == "char":
        characters = set()
        for piece in tqdm(iter_pieces(files, text_field), desc="characters", unit=" pieces"):
            characters.update(piece.text)
        return CharTokenizer(sorted(characters | set(CharTokenizer([]).document_separator))), 0
    if spec == "bpe":
        sample, documents, length, next_piece_starts_a_document = [], 0, 0, True
        for piece in iter_pieces(files, text_field):
            if length >= sample_chars:
                break
            sample.append(piece.text + (ENDOFTEXT if piece.ends_document else ""))
            documents += next_piece_starts_a_document  # a document the sample holds a part of was learned from
            next_piece_starts_a_document = piece.ends_document
            length += len(piece.text)
        text = "".join(sample)
        print(f"learning a {vocab_size}-token BPE from the first {len(text):,} characters ({documents} document(s))")
        return BPETokenizer.train(text, vocab_size, special_tokens=[ENDOFTEXT], verbose=True), documents
    raise UserError(f"--tokenizer {spec!r}: choose gpt2, char, bpe or a tokenizer file PATH.json")


def document_prefix(tokenizer: Tokenizer) -> list[int]:
    """What comes before every document: the end-of-text token, or the tokens of the separator text."""
    if tokenizer.eot_token_id is not None:
        return [tokenizer.eot_token_id]
    return tokenizer.encode(tokenizer.document_separator)


# --- 4. and 5. routing documents into the splits' shards -------------------------------------------------------


@dataclass
class Split:
    """One split as it is written: its finished shards, the tokens waiting for the next one, and totals."""

    name: str
    shards: list[dict] = field(default_factory=list)
    documents: int = 0
    characters: int = 0
    bytes: int = 0
    tokens: int = 0
    shard_tokens: int = 0
    pending: list[np.ndarray] = field(default_factory=list)  # tokens waiting for the next shard ...
    pending_tokens: int = 0
    starts: list[int] = field(default_factory=list)  # ... where documents begin in them
    ends: list[int] = field(default_factory=list)  # ... and where they end

    def add(self, ids: np.ndarray, starts_document: bool, ends_document: bool, characters: int, size: int) -> None:
        """Tokens of one piece (of `characters` and `size` UTF-8 bytes of text)."""
        if starts_document:
            self.starts.append(self.pending_tokens)
            self.documents += 1
        if len(ids):
            self.pending.append(ids)
        self.pending_tokens += len(ids)
        if ends_document:
            self.ends.append(self.pending_tokens)
        self.tokens += len(ids)
        self.characters += characters
        self.bytes += size

    def flush_full(self, folder: Path, dtype) -> bool:
        """Write shards of at most `shard_tokens` while that many are waiting. A shard ends where the last
        document that fits ends; if that would leave it less than half full, a long document is cut after
        exactly `shard_tokens` (between two tokens: the tokens themselves do not change)."""
        wrote = False
        while self.pending_tokens >= self.shard_tokens:
            fitting = [end for end in self.ends if end <= self.shard_tokens]
            end = fitting[-1] if fitting and fitting[-1] >= self.shard_tokens // 2 else self.shard_tokens
            self.write_shard(folder, end, dtype)
            wrote = True
        return wrote

    def write_shard(self, folder: Path, count: int, dtype) -> None:
        """The first `count` waiting tokens as the next shard; the rest keep waiting."""
        if count == 0:
            return
        tokens = np.concatenate(self.pending).astype(dtype, copy=False)
        name = shard_name(self.name, len(self.shards))
        write_token_file(folder / name, tokens[:count])
        self.shards.append({"file": name, "tokens": count, "documents": sum(s < count for s in self.starts),
                            "sha256": sha256_file(folder / name)})
        self.pending = [tokens[count:]] if count < len(tokens) else []
        self.pending_tokens -= count
        self.starts = [s - count for s in self.starts if s >= count]
        self.ends = [e - count for e in self.ends if e > count]

    def totals(self) -> dict:
        return {"shards": list(self.shards), "documents": self.documents, "characters": self.characters,
                "bytes": self.bytes, "tokens": self.tokens}

    def save_waiting(self, folder: Path, tag: int, dtype) -> dict:
        """The tokens waiting for the next shard, in a file of their own (named by `tag`, so that the file
        the manifest on disk still points to is never overwritten), and where their documents begin and end."""
        name = f".{self.name}.waiting.{tag}.tokens"
        tokens = np.concatenate(self.pending) if self.pending else np.zeros(0, dtype)
        write_token_file(folder / name, tokens.astype(dtype, copy=False))
        return {"file": name, "starts": self.starts, "ends": self.ends}

    @classmethod
    def restore(cls, name: str, saved: dict, shard_tokens: int, folder: Path, waiting: dict | None) -> Split:
        split = cls(name, **{k: saved[k] for k in ("shards", "documents", "characters", "bytes", "tokens")},
                    shard_tokens=shard_tokens)
        if waiting:
            tokens = np.array(read_token_file(folder / waiting["file"]))
            split.pending = [tokens] if len(tokens) else []
            split.pending_tokens, split.starts, split.ends = len(tokens), waiting["starts"], waiting["ends"]
        return split


class Router:
    """Sends each document to a split and writes the shards.

    After every shard it saves where it stands: the manifest (the shards so far, the pieces routed, the
    splits' totals) and, beside it, the tokens still waiting for the next shard. A rerun restores exactly
    that state, skips the pieces routed, and goes on as the interrupted run would have.
    """

    def __init__(self, folder: Path, manifest: dict, learned_documents: int, tokenizer: Tokenizer):
        self.folder, self.manifest, self.tokenizer = folder, manifest, tokenizer
        settings = manifest["settings"]
        self.val_budget = settings["val_tokens"]
        self.dtype = np.dtype(manifest["dtype"])
        self.prefix = np.array(manifest["document_prefix"], dtype=self.dtype)
        progress = manifest.get("progress") or {}
        self.pieces = progress.get("pieces", 0)  # pieces routed so far (a rerun skips them)
        self.documents = progress.get("documents", 0)
        self.val_closed = progress.get("val_closed", False)
        self.learned_documents = learned_documents
        waiting = progress.get("waiting", {})
        self.splits = {name: Split.restore(name, manifest["splits"][name], settings["shard_tokens"], folder,
                                           waiting.get(name)) for name in SPLITS}
        self.in_document = progress.get("in_document", False)  # stopped inside a document longer than a shard
        self.current = self.splits[progress["current"]] if self.in_document else None  # the document's split
        self.document_tokens = progress.get("document_tokens", 0)

    def add(self, ids: np.ndarray, ends_document: bool, text: str | None) -> None:
        """One piece of a document: its ids without the prefix, and its text (None when the source was ids)."""
        starts = not self.in_document
        if starts:
            self.current = self.split_for_next_document()
            self.documents += 1
            self.document_tokens = 0
        val, train = self.splits["val"], self.splits["train"]
        # Characters and bytes count for the loss in bits per byte: always for validation, for training when
        # the text is at hand (llm.c .bin sources are ids only).
        if text is not None or self.current is val:
            characters, size = self.measure(ids, text)
        else:
            characters, size = 0, 0
        prefix = self.prefix if starts else self.prefix[:0]
        ids = np.concatenate([prefix, ids.astype(self.dtype, copy=False)])
        self.document_tokens += len(ids)
        shards_before = len(val.shards) + len(train.shards)
        if self.current is val and self.document_tokens > self.val_budget:
            # One document longer than the whole validation budget (a book in one file): its start validates,
            # the rest trains. The cut is between two tokens, so the document's tokens stay what they were.
            cut = max(self.val_budget - val.tokens, 0)
            if starts and cut <= len(prefix):  # no room left for more than the prefix: all of it trains
                cut = 0
            if cut:
                head_characters, head_bytes = self.measure(ids[len(prefix) if starts else 0 : cut], None)
                val.add(ids[:cut], starts, True, head_characters, head_bytes)
            else:
                head_characters, head_bytes = 0, 0
            self.close_validation()
            self.current = train  # where the rest counts as a document of its own
            train.add(ids[cut:], True, ends_document, max(characters - head_characters, 0), max(size - head_bytes, 0))
        else:
            self.current.add(ids, starts, ends_document, characters, size)
        self.in_document = not ends_document
        self.pieces += 1
        self.current.flush_full(self.folder, self.dtype)
        if len(val.shards) + len(train.shards) > shards_before:  # a shard was written: a point to continue from
            self.save_progress()

    def measure(self, ids: np.ndarray, text: str | None) -> tuple[int, int]:
        """(characters, UTF-8 bytes) of a piece, from its text or else by decoding its ids."""
        if text is None:
            text = self.tokenizer.decode_bytes(ids.tolist()).decode("utf-8", errors="replace")
        return len(text), len(text.encode("utf-8"))

    def split_for_next_document(self) -> Split:
        if self.documents < self.learned_documents:  # a learned BPE saw these: training only
            return self.splits["train"]
        if not self.val_closed and self.splits["val"].tokens < self.val_budget:
            return self.splits["val"]
        self.close_validation()
        return self.splits["train"]

    def close_validation(self) -> None:
        """Validation is full: write all of it now (in shards of at most --shard-tokens), so that it never
        waits for more."""
        if self.val_closed:
            return
        self.val_closed = True
        val = self.splits["val"]
        val.flush_full(self.folder, self.dtype)
        val.write_shard(self.folder, val.pending_tokens, self.dtype)

    def save_progress(self) -> None:
        """A point a rerun can continue from: the waiting tokens in files of their own, then the manifest (one
        atomic write switches to the new state), then the previous waiting files are removed."""
        manifest = self.manifest
        waiting = {name: split.save_waiting(self.folder, self.pieces, self.dtype)
                   for name, split in self.splits.items()}
        manifest["splits"] = {name: split.totals() for name, split in self.splits.items()}
        manifest["progress"] = {"pieces": self.pieces, "documents": self.documents, "val_closed": self.val_closed,
                                "in_document": self.in_document, "current": self.current and self.current.name,
                                "document_tokens": self.document_tokens, "waiting": waiting}
        write_manifest(self.folder, manifest)
        self.remove_waiting_files(keep={w["file"] for w in waiting.values()})

    def remove_waiting_files(self, keep: set[str] = frozenset()) -> None:
        for path in self.folder.glob(".*.waiting.*.tokens"):
            if path.name not in keep:
                path.unlink()

    def finish(self) -> None:
        for split in self.splits.values():
            split.write_shard(self.folder, split.pending_tokens, self.dtype)
        val, train = self.splits["val"], self.splits["train"]
        if not val.tokens and self.learned_documents:
            raise UserError(f"the BPE learned from all {self.learned_documents} document(s), so none is left for "
                            "validation: lower --bpe-sample-chars, split the text into documents (several files, "
                            "or <|endoftext|> between them), or pass a tokenizer file learned elsewhere")
        if not val.tokens:
            raise UserError("no documents were left for validation: add text, or --val-tokens to set its size")
        if not train.tokens:
            raise UserError(f"all {val.tokens:,} tokens went to validation (--val-tokens {self.val_budget:,}): "
                            "lower --val-tokens or add text")
        manifest = self.manifest
        manifest["splits"] = {name: split.totals() for name, split in self.splits.items()}
        manifest["complete"] = True
        manifest.pop("progress", None)
        manifest["dataset_sha256"] = dataset_sha256(manifest)
        write_manifest(self.folder, manifest)
        self.remove_waiting_files()
        for leftover in self.folder.glob(".*.tmp*"):  # a write cut by kill -9 in an earlier run (files.py)
            leftover.unlink()


# --- the whole preparation -------------------------------------------------------------------------------------


def prepare(sources: list[str], out: str, tokenizer_spec: str = "gpt2", vocab_size: int = 512, workers: int = 1,
            shard_tokens: int = 100_000_000, val_tokens: int = 1_000_000, text_field: str = "text",
            bpe_sample_chars: int = 2_000_000, cache_dir: str | None = None) -> dict:
    """Tokenize `sources` into shards in `out`; returns the manifest. Continues an interrupted run."""
    folder = Path(out)
    files = expand_sources(sources)
    settings = {"sources": files, "tokenizer": tokenizer_spec, "vocab_size": vocab_size, "shard_tokens": shard_tokens,
                "val_tokens": val_tokens, "text_field": text_field, "bpe_sample_chars": bpe_sample_chars,
                "piece_chars": PIECE_CHARS}  # where pieces end: a rerun skips the pieces already routed
    manifest = previous_run(folder, settings)
    if manifest and manifest.get("complete"):
        print(f"{folder} is already prepared with these settings (delete it to prepare again)")
        return manifest
    try:
        router = start(folder, manifest, files, settings, cache_dir or str(CACHE_DIR))
        started = time.time()
        if is_token_sources(files):
            route_token_documents(router, files)
        else:
            route_text(router, files, workers, text_field)
        router.finish()
    except KeyboardInterrupt:
        saved = read_manifest(folder, complete=False) if is_prepared(folder) else {"splits": {}}
        raise UserError(f"stopped: {len(all_shards(saved))} finished shard(s) are kept in {folder}; run the same "
                        "command again to continue") from None
    report(router, time.time() - started)
    return router.manifest


def start(folder: Path, manifest: dict | None, files: list[str], settings: dict, cache_dir: str) -> Router:
    """The router of an interrupted run, as it stood at its last shard; or of a new one, with its tokenizer."""
    if manifest:  # the same tokenizer, from its copy
        unchanged(manifest.get("source_files", {}), files)
        print(f"continuing the preparation in {folder} after {len(all_shards(manifest))} finished shard(s)")
        return Router(folder, manifest, manifest["learned_documents"], load_tokenizer(folder / TOKENIZER_FILE))
    tokenizer, learned = choose_tokenizer(settings["tokenizer"], files, settings["vocab_size"],
                                          settings["bpe_sample_chars"], settings["text_field"], cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / TOKENIZER_FILE, tokenizer.to_json())
    manifest = {
        "version": MANIFEST_VERSION, "complete": False,
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": sha256_file(folder / TOKENIZER_FILE),
                      "kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "eot_id": tokenizer.eot_token_id},
        "document_prefix": document_prefix(tokenizer),
        "convention": "every document is preceded by document_prefix (the end-of-text token when the tokenizer "
                      "has one) and lies in one split, except one longer than the validation budget, whose start "
                      "validates and rest trains; a shard ends on a document boundary unless a document is longer "
                      "than half a shard",
        "dtype": token_array([], tokenizer.vocab_size).dtype.name,
        "settings": settings, "val_tokens": settings["val_tokens"], "learned_documents": learned,
        "source_files": file_stamps(files),
        "splits": {name: Split(name).totals() for name in SPLITS},
    }
    write_manifest(folder, manifest)
    return Router(folder, manifest, learned, tokenizer)


def route_text(router: Router, files: list[str], workers: int, text_field: str) -> None:
    """Pieces -> tasks of about TASK_CHARS characters -> workers -> ids, routed in order."""
    tokenizer = router.tokenizer
    # Cutting a document is safe for GPT-2's pre-tokenizer pattern (and for characters); a BPE file with
    # another pattern, or none, gets each document whole.
    cuttable = tokenizer.to_dict().get("pattern", GPT2_PATTERN) == GPT2_PATTERN
    pieces = iter_pieces(files, text_field, piece_chars=PIECE_CHARS if cuttable else sys.maxsize)
    total = total_bytes(files)
    skipped = sum(piece.source_bytes for piece in itertools.islice(pieces, router.pieces))  # done before
    waiting: deque[list] = deque()  # the pieces of each task sent to the workers, oldest first

    def tasks():
        task, length = [], 0
        for piece in pieces:
            task.append(piece)
            length += len(piece.text)
            if length >= TASK_CHARS:
                waiting.append(task)
                yield [p.text for p in task]
                task, length = [], 0
        if task:
            waiting.append(task)
            yield [p.text for p in task]

    with Progress(total, skipped) as progress:
        for ids_list in ordered_map(tasks(), tokenizer.to_json(), workers):
            for piece, ids in zip(waiting.popleft(), ids_list, strict=True):
                router.add(ids, piece.ends_document, piece.text)
                progress.update(piece.source_bytes, len(ids))


def route_token_documents(router: Router, files: list[str]) -> None:
    """llm.c .bin shards: already ids. Only validation is decoded, for its bytes (bits per byte need them)."""
    tokenizer = router.tokenizer
    eot = tokenizer.eot_token_id
    if eot is None:
        raise UserError("llm.c .bin shards need a tokenizer with an end-of-text token: --tokenizer gpt2")
    with Progress(total_bytes(files), 0) as progress:
        pieces = iter_token_pieces(files, eot)
        for ids, ends_document in itertools.islice(pieces, router.pieces, None):
            if ids.size and int(ids.max()) >= tokenizer.vocab_size:
                raise UserError(f"a .bin file holds token id {int(ids.max())}, beyond the tokenizer's "
                                f"{tokenizer.vocab_size}: it was tokenized with another tokenizer")
            router.add(ids, ends_document, None)
            progress.update(2 * (len(ids) + 1), len(ids) + 1)


class Progress:
    """A progress bar over the source bytes, showing MB/s and the ETA, and tokens/s beside them."""

    def __init__(self, total: int | None, done: int):
        self.bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc="tokenizing", smoothing=0.1)
        self.tokens, self.started, self.shown = 0, time.time(), 0.0

    def update(self, source_bytes: int, tokens: int) -> None:
        self.tokens += tokens
        self.bar.update(source_bytes)
        if time.time() - self.shown > 0.5:
            self.show_rate()

    def show_rate(self) -> None:
        now = time.time()
        self.bar.set_postfix_str(f"{self.tokens / max(now - self.started, 1e-9):,.0f} tokens/s", refresh=False)
        self.shown = now

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.show_rate()  # the rate over the whole run, on the bar's last line
        self.bar.close()


def previous_run(folder: Path, settings: dict) -> dict | None:
    """The manifest of an earlier run into `folder` with the same settings, None for a new folder; refuse a
    folder that holds something else (nothing is ever deleted here)."""
    if is_prepared(folder):
        manifest = read_manifest(folder, complete=False)
        for key, value in settings.items():
            if manifest["settings"].get(key) != value:
                raise UserError(f"{folder} holds data prepared with another {key} ({manifest['settings'].get(key)!r}, "
                                f"now {value!r}): choose another --out, or delete it")
        return manifest
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"{folder} exists and is not a prepared folder: choose another --out")
    return None


def file_stamps(files: list[str]) -> dict[str, list[int]]:
    """Each local source file's size and modification time (ns), as it was when the preparation began."""
    return {f: [os.stat(f).st_size, os.stat(f).st_mtime_ns] for f in files if not f.startswith(HF_PREFIX)}


def unchanged(stamps: dict[str, list[int]], files: list[str]) -> None:
    """A rerun skips the pieces routed before by counting them: refuse it if a source changed in between (its
    new text would be cut in other places, and the old and new mixed in the shards). A file only touched or
    copied (a new time, the same text) is refused too: the stamp cannot tell. hf: datasets are not checked."""
    for file, now in file_stamps(files).items():
        if file in stamps and stamps[file] != now:
            raise UserError(f"{file} changed since this preparation began (size or modification time): the "
                            "shards already written hold its old text; delete the folder to prepare it again")


def all_shards(manifest: dict) -> list[dict]:
    return [shard for split in SPLITS for shard in (manifest["splits"].get(split) or {}).get("shards", [])]


def report(router: Router, seconds: float) -> None:
    """The corpus in numbers, per split."""
    print(f"prepared {router.folder} in {seconds:.1f} s")
    for name in SPLITS:
        split = router.splits[name]
        per_token = f", {split.bytes / split.tokens:.2f} bytes per token" if split.bytes else ""
        print(f"  {name:5s}: {split.documents:,} documents, {split.characters:,} characters, {split.tokens:,} tokens "
              f"in {len(split.shards)} shard(s){per_token}")


# --- the command line ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python src/prepare.py",
                            description="Tokenize a corpus into shards for `train.py --data DIR`.")
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="files, folders or globs of .txt/.jsonl/.jsonl.gz/.parquet, llm.c .bin shards, or "
                             "hf:NAME[:CONFIG] (Hugging Face datasets, streamed)")
    parser.add_argument("--out", required=True, help="the folder to write (continued if interrupted)")
    parser.add_argument("--tokenizer", default="gpt2", help="gpt2, char, bpe (learned here) or a tokenizer file .json")
    parser.add_argument("--vocab-size", type=positive_int, default=512, help="tokens of a BPE learned here")
    parser.add_argument("--workers", type=positive_int, default=default_workers(), help="encoding processes")
    parser.add_argument("--shard-tokens", type=positive_int, default=100_000_000, help="tokens per shard (about)")
    parser.add_argument("--val-tokens", type=positive_int, default=1_000_000, help="validation budget in tokens")
    parser.add_argument("--text-field", default="text", help="the text's field in .jsonl/.parquet/hf: records")
    parser.add_argument("--bpe-sample-chars", type=positive_int, default=2_000_000,
                        help="characters a BPE learned here learns from")
    args = parser.parse_args(argv)
    if args.tokenizer == "bpe" and args.vocab_size < 257:
        parser.error(f"--vocab-size must be at least 257 for a byte-level BPE, got {args.vocab_size}")
    prepare(args.sources, args.out, args.tokenizer, args.vocab_size, args.workers, args.shard_tokens,
            args.val_tokens, args.text_field, args.bpe_sample_chars)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


if __name__ == "__main__":
    run_cli(main)
