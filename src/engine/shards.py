"""A prepared dataset on disk: token shards and the manifest that describes them (machinery).

`python src/prepare.py` writes a folder like this:

    DIR/manifest.json          what the folder holds (below); written last, atomically, after every shard
    DIR/tokenizer.json         a copy of the tokenizer the ids mean
    DIR/val_000000.tokens      validation shards, then training shards, in the token-file format of
    DIR/train_000000.tokens    dataloader.py (a 32-byte self-describing header, then uint16/int32 ids)
    ...

Every document is stored after a *document prefix*: the end-of-text token when the tokenizer has one
(GPT-2's convention, and llm.c's: `<|endoftext|>` comes before each document), else the tokens of the
tokenizer's document separator (a blank line for the character tokenizer). A shard ends on a document
boundary, unless that would leave it less than half full (a document longer than half a shard): then the
document is cut between two tokens and continues in the next one.

`manifest.json` holds: the format version, whether preparation finished (`complete`), the tokenizer
(file, sha256, kind, vocab_size, eot_id), the document prefix, the settings it was prepared with, the
validation budget, per split its shards (file, tokens, documents, sha256) and totals (documents,
characters, UTF-8 bytes, tokens), and `dataset_sha256`: one hash over the tokenizer and every shard, which
a resumed training run compares with the one it started on.

llm.c and modded-nanogpt distribute FineWeb already tokenized with GPT-2's tokenizer, as `.bin` files: a
header of 256 int32 (magic 20240520, version 1, token count), then the ids as uint16. `read_llmc_bin` reads
them, so such shards can be used without tokenizing anything.

Who uses it: `prepare.py` (writes), `dataloader.py` (`PreparedData`, `ShardLoader`) and `evaluate.py` (read),
`engine/sources.py` (llm.c's `.bin` shards).
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import numpy as np

from src.engine.errors import UserError
from src.engine.files import atomic_write_bytes, read_json, write_json

MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_VERSION = 1
SPLITS = ("val", "train")


def shard_name(split: str, index: int) -> str:
    return f"{split}_{index:06d}.tokens"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def dataset_sha256(manifest: dict) -> str:
    """One hash for the whole dataset: the tokenizer's and every shard's, in order, split by split."""
    parts = [manifest["tokenizer"]["sha256"]]
    for split in SPLITS:
        parts += [f"{split}:{shard['sha256']}" for shard in manifest["splits"][split]["shards"]]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def is_prepared(path: str | os.PathLike | None) -> bool:
    """True for a folder that prepare.py wrote (it holds manifest.json)."""
    return path is not None and (Path(path) / MANIFEST).is_file()


def write_manifest(folder: str | os.PathLike, manifest: dict) -> None:
    write_json(Path(folder) / MANIFEST, manifest)


def read_manifest(folder: str | os.PathLike, complete: bool = True) -> dict:
    """The manifest of a prepared folder; with `complete`, refuse one whose preparation has not finished."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST, what="prepared-data manifest")
    if manifest.get("version") != MANIFEST_VERSION:
        raise UserError(f"{folder / MANIFEST} has version {manifest.get('version')}, this code reads "
                        f"{MANIFEST_VERSION}: prepare the data again")
    if complete and not manifest.get("complete"):
        raise UserError(f"the preparation of {folder} did not finish: run the same prepare.py command again to "
                        "complete it")
    return manifest


def shard_paths(folder: str | os.PathLike, manifest: dict, split: str) -> list[Path]:
    """The files of one split's shards, checked to exist."""
    paths = [Path(folder) / shard["file"] for shard in manifest["splits"][split]["shards"]]
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path} is listed in {Path(folder) / MANIFEST} but missing: prepare the data again")
    return paths


# --- token files --------------------------------------------------------------------------------------------
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



# --- llm.c / modded-nanogpt .bin shards ---------------------------------------------------------------------

LLMC_MAGIC = 20240520
LLMC_VERSION = 1
LLMC_HEADER_INTS = 256  # 1024 bytes


def write_llmc_bin(path: str | os.PathLike, tokens) -> None:
    """Ids (all < 65536) as an llm.c .bin file, atomically: the format FineWeb shards are distributed in."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 2**16):
        raise ValueError("llm.c .bin files hold uint16 ids")
    header = np.zeros(LLMC_HEADER_INTS, dtype="<i4")
    header[:3] = LLMC_MAGIC, LLMC_VERSION, len(tokens)
    atomic_write_bytes(path, header.tobytes() + tokens.astype("<u2").tobytes())


def read_llmc_bin(path: str | os.PathLike) -> np.ndarray:
    """Memory-map the ids of an llm.c .bin file, checking its magic number, version and length."""
    path = Path(path)
    size = path.stat().st_size
    header = np.fromfile(path, dtype="<i4", count=LLMC_HEADER_INTS) if size >= 4 * LLMC_HEADER_INTS else None
    if header is None or header[0] != LLMC_MAGIC:
        raise UserError(f"{path} is not an llm.c token file (no magic number {LLMC_MAGIC} in its header)")
    if header[1] != LLMC_VERSION:
        raise UserError(f"{path} is llm.c token-file version {header[1]}; this code reads version {LLMC_VERSION}")
    count = int(header[2])
    if size != 4 * LLMC_HEADER_INTS + 2 * count:
        raise UserError(f"{path} is truncated: its header says {count:,} tokens")
    return np.memmap(path, dtype="<u2", mode="r", offset=4 * LLMC_HEADER_INTS, shape=(count,))
