"""The text to prepare: SOURCE arguments turned into one deterministic stream of text pieces (machinery).

`python src/prepare.py SOURCE... --out DIR` accepts, as SOURCE:

    a file        .txt, .jsonl, .jsonl.gz, .parquet, or llm.c's pre-tokenized .bin shards
    a folder      every such file below it, recursively, sorted by path (hidden files and folders skipped)
    a glob        "data/*.jsonl.gz", its matches sorted
    hf:NAME       a Hugging Face dataset, streamed (hf:NAME:CONFIG for one configuration)

What a document is, per format: a .txt file is one document, or several separated by "<|endoftext|>" (the
separator is dropped); each line of a .jsonl file is a JSON object whose "text" field (`text_field`) is one;
each row of a .parquet file or of a Hugging Face dataset is one. Documents that are empty or only whitespace
are skipped everywhere.

A corpus can be 10 GB in one file, so nothing is read whole: a .txt file streams in blocks through an
incremental UTF-8 decoder, a .jsonl line by line, a .parquet in row batches. A document longer than
`piece_chars` is cut into several pieces, each about `piece_chars` long, and only where `safe_cut` allows, so
that tokenizing the pieces one by one gives exactly the tokens of the whole document (a test checks it with
three tokenizers). Every piece says how many bytes of the source files it accounts for, so a progress bar over
`total_bytes` ends exactly at 100%.

This module must not import torch, even indirectly: prepare.py's worker processes import it, and each would
otherwise spend seconds and hundreds of MB loading PyTorch for nothing (a test checks it).

Who uses it: `prepare.py` (reading its SOURCE arguments).
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import regex

from src.engine.errors import UserError
from src.engine.gpt2_files import ENDOFTEXT
from src.engine.shards import read_llmc_bin

HF_PREFIX = "hf:"
TEXT_SUFFIXES = (".txt", ".jsonl", ".jsonl.gz", ".parquet")
TOKEN_SUFFIX = ".bin"  # llm.c's pre-tokenized shards
SUPPORTED = ", ".join((*TEXT_SUFFIXES, TOKEN_SUFFIX))
BLOCK_BYTES = 1 << 20  # a .txt file is read this many bytes at a time (a test makes it tiny)
PARQUET_BATCH_ROWS = 1024  # rows per batch: FineWeb rows are a few kB, so a batch is a few MB


@dataclass(frozen=True)
class Piece:
    """A whole document, or one part of a long one (cut where the tokens do not change)."""

    text: str
    ends_document: bool  # True on the last piece of a document
    source_bytes: int  # bytes of the source files this piece accounts for (for a progress bar)


# --- which files -------------------------------------------------------------------------------------------


def expand_sources(sources: list[str]) -> list[str]:
    """The files (and hf: specs) that SOURCE arguments name, in a fixed order: each SOURCE in turn, a folder's
    files and a glob's matches sorted by path, a file named twice kept once.

    Calling it again on its own result gives the same list, so the other functions accept either.
    """
    if not sources:
        raise UserError("no sources given: pass text files, folders, globs or hf:NAME")
    files = []
    for source in sources:
        source = str(source)
        if source.startswith(HF_PREFIX):
            files.append(_check_hf_spec(source))
        elif os.path.isdir(source):
            files += _folder_files(source)
        elif os.path.isfile(source):
            files.append(_check_suffix(os.path.normpath(source)))
        elif glob.has_magic(source):
            matches = sorted(glob.glob(source, recursive=True))
            if not matches:
                raise UserError(f"nothing matches {source}")
            for match in matches:
                files += _folder_files(match) if os.path.isdir(match) else [_check_suffix(os.path.normpath(match))]
        else:
            raise UserError(f"{source} does not exist (a SOURCE is a file, a folder, a glob or hf:NAME)")
    files = _first_of_each(files)
    tokens = [f for f in files if f.lower().endswith(TOKEN_SUFFIX)]
    if tokens and len(tokens) != len(files):
        raise UserError(f"the sources mix llm.c token files ({tokens[0]}) with text ({_first_text(files)}): "
                        "prepare them separately")
    return files


def is_token_sources(sources: list[str]) -> bool:
    """True when the sources are llm.c .bin token files (`expand_sources` refuses a mix of those and text)."""
    return expand_sources(sources)[0].lower().endswith(TOKEN_SUFFIX)


def total_bytes(sources: list[str]) -> int | None:
    """Sum of the source files' sizes, the progress bar's total (None when an hf: source is among them)."""
    files = expand_sources(sources)
    if any(f.startswith(HF_PREFIX) for f in files):
        return None
    return sum(os.path.getsize(f) for f in files)


def _check_hf_spec(spec: str) -> str:
    name = spec[len(HF_PREFIX):].split(":")[0]
    if not name or spec.count(":") > 2:
        raise UserError(f"{spec!r} is not a Hugging Face source: write hf:NAME or hf:NAME:CONFIG")
    return spec


def _first_of_each(files: list[str]) -> list[str]:
    """`files` without repeats, kept in order as first given. A file named twice (a relative and an absolute
    path, a link) would be read twice: its documents trained on twice, or one copy validated on and the other
    trained on."""
    seen, unique = set(), []
    for file in files:
        same = file if file.startswith(HF_PREFIX) else os.path.realpath(file)
        if same not in seen:
            seen.add(same)
            unique.append(file)
    return unique


def _check_suffix(path: str) -> str:
    if not path.lower().endswith((*TEXT_SUFFIXES, TOKEN_SUFFIX)):
        raise UserError(f"{path}: unsupported file type (supported: {SUPPORTED})")
    return path


def _folder_files(folder: str) -> list[str]:
    """Every supported file below `folder`, sorted by path; hidden files and folders (.git, .cache) skipped."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        files += [os.path.normpath(os.path.join(root, n)) for n in names
                  if not n.startswith(".") and n.lower().endswith((*TEXT_SUFFIXES, TOKEN_SUFFIX))]
    if not files:
        raise UserError(f"the folder {folder} holds no file to read (supported: {SUPPORTED})")
    return sorted(files, key=lambda f: Path(f).parts)  # by path components: "a/b" before "a-b"


def _first_text(files: list[str]) -> str:
    return next(f for f in files if not f.lower().endswith(TOKEN_SUFFIX))


# --- where text may be cut ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _cut_pattern() -> regex.Pattern:
    """A character that no definition calls whitespace, followed by one that every definition does.

    Two definitions of whitespace meet in GPT-2's tokenizers: the `regex` package's \\s (and tiktoken's, the
    Unicode White_Space property) and Python's str.isspace(), which also counts \\x1c-\\x1f. Where they
    disagree we take the safe side. This also makes every piece cut from a document hold a character that
    is not whitespace by either definition, so a blank document is never given out in pieces. Built once per
    process (~0.1 s) from every code point.
    """
    everything = np.r_[0:0xD800, 0xE000:0x110000].astype("<u4").tobytes().decode("utf-32-le")  # no surrogates
    regex_space = set(regex.findall(r"\s", everything))
    python_space = set(filter(str.isspace, everything))
    char_class = lambda chars: "".join(f"\\U{ord(c):08x}" for c in sorted(chars))
    return regex.compile(f"[^{char_class(regex_space | python_space)}](?=[{char_class(regex_space & python_space)}])")


def safe_cut(text: str, start: int) -> int | None:
    """The first index i >= start (and >= 1) where `text` may be cut: text[:i] and text[i:] pre-tokenize, with
    GPT-2's pattern, to exactly the pre-tokens of the whole text (so every BPE gives the same ids). None if none.

    The rule: text[i-1] is not whitespace and text[i] is. Why it is safe, with GPT-2's pattern
    `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`:
    - No pre-token holds a non-whitespace character followed by a whitespace one: whitespace appears only in
      the two whitespace-run alternatives and as the one optional space at the *start* of a word. So the
      whole text has a pre-token boundary at i.
    - The pre-tokens before i read nothing past i-1 except to see where a run stops, and the end of the
      string stops every run just as a whitespace character does (the one look-ahead, (?!\\S), never starts
      at i, as text[i-1] is not whitespace). So text[:i] ends with the same pre-tokens.
    - Nothing looks behind, so text[i:] splits as the whole text does from i on.
    The obvious rule, cut after a newline, is wrong: a whitespace run at the end of a string is one
    pre-token, inside a text the run leaves its last character to the next word: "a\\n\\nb" is a,\\n,\\n,b
    but "a\\n\\n" alone is a,\\n\\n (a test shows it). Cutting *before* the run never splits one.
    "Whitespace" counts both definitions (see `_cut_pattern`); a test checks the rule with hypothesis against
    `pretokenize`, our BPE, and tiktoken. The rule holds for GPT-2's pattern (and for a character tokenizer,
    which any cut keeps exact), not for every pattern: GPT-4's makes "!\\n" one pre-token.
    """
    match = _cut_pattern().search(text, max(start, 1) - 1)
    return None if match is None else match.start() + 1


class _Cutter:
    """Turns documents, given as consecutive parts of text, into pieces of about `piece_chars` characters,
    cut only at `safe_cut` points, and hands each piece the source bytes read since the previous piece."""

    def __init__(self, piece_chars: int):
        if piece_chars < 1:
            raise UserError(f"piece_chars must be at least 1, got {piece_chars}")
        self.piece_chars = piece_chars
        self.text = ""  # the current document's text not yet given out
        self.no_cut_before = 0  # safe_cut found no cut in self.text before this index
        self.started = False  # a piece of the current document has been given out
        self.owed_bytes = 0  # source bytes read but not yet counted in a piece

    def owe(self, n_bytes: int) -> None:
        self.owed_bytes += n_bytes

    def add(self, part: str) -> Iterator[Piece]:
        """Append text to the current document; give out the pieces it completes."""
        self.text += part
        if len(self.text) <= self.piece_chars:
            return
        start = 0  # cut all pieces first, then copy the rest once (a block can hold several pieces)
        while (cut := safe_cut(self.text, max(start + self.piece_chars, self.no_cut_before))) is not None:
            yield self._piece(self.text[start:cut], ends_document=False)
            start, self.no_cut_before, self.started = cut, 0, True
        self.no_cut_before = max(len(self.text), start + self.piece_chars) - start
        self.text = self.text[start:]

    def end_document(self) -> Iterator[Piece]:
        """The current document is complete: give out its last piece, unless the whole of it is blank."""
        text, self.text, self.no_cut_before = self.text, "", 0
        if not self.started and (not text or text.isspace()):
            return  # skipped: its bytes go to the next piece
        self.started = False
        yield self._piece(text, ends_document=True)

    def document(self, text: str) -> Iterator[Piece]:
        yield from self.add(text)
        yield from self.end_document()

    def _piece(self, text: str, ends_document: bool) -> Piece:
        piece = Piece(text, ends_document, self.owed_bytes)
        self.owed_bytes = 0
        return piece


# --- documents, format by format ---------------------------------------------------------------------------


def iter_pieces(
    sources: list[str], text_field: str = "text", piece_chars: int = 1 << 20, hf_split: str = "train"
) -> Iterator[Piece]:
    """Every document of every source, in order, as pieces of about piece_chars characters (or fewer).

    A piece is cut from a longer document only where `safe_cut` allows, so it can be longer than
    piece_chars when the text has no such place for a while. Where pieces end depends only on the text and
    piece_chars (not on how the file is read), so a resumed run can skip the pieces it has done by counting.

    The source bytes of a skipped (blank) document go to the next piece; the last piece is held back until
    the end so that it can take the bytes of blank documents at the very end: for file sources the pieces'
    bytes add up to `total_bytes` exactly.
    """
    files = expand_sources(sources)
    if files[0].lower().endswith(TOKEN_SUFFIX):
        raise UserError(f"{files[0]} holds token ids, not text: read it with iter_token_pieces")
    cutter = _Cutter(piece_chars)
    held = None
    for source in files:
        for piece in _source_pieces(source, cutter, text_field, hf_split):
            if held is not None:
                yield held
            held = piece
    if held is None:
        raise UserError(f"no text to prepare: every document of the {len(files)} source(s) is empty or only "
                        "whitespace")
    yield replace(held, source_bytes=held.source_bytes + cutter.owed_bytes)


def _source_pieces(source: str, cutter: _Cutter, text_field: str, hf_split: str) -> Iterator[Piece]:
    name = source.lower()
    if source.startswith(HF_PREFIX):
        return _hf_pieces(source, cutter, text_field, hf_split)
    if name.endswith(".txt"):
        return _txt_pieces(source, cutter)
    if name.endswith((".jsonl", ".jsonl.gz")):
        return _jsonl_pieces(source, cutter, text_field)
    return _parquet_pieces(source, cutter, text_field)


def _txt_pieces(path: str, cutter: _Cutter) -> Iterator[Piece]:
    """A UTF-8 text file, in blocks of BLOCK_BYTES: one document, or several separated by <|endoftext|>.

    A block can end inside a character (the incremental decoder keeps its first bytes for the next block) or
    inside a separator (we keep back the end of the text that could begin one: "<|endo").
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    kept = ""  # the end of the text so far, if it could be the beginning of a separator
    offset = 0  # of the block in the file
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK_BYTES)
            final = not block
            text = kept + _decode_block(decoder, block, final, path, offset)
            offset += len(block)
            cutter.owe(len(block))
            del block
            *documents, rest = text.split(ENDOFTEXT)
            del text
            for document in documents:
                yield from cutter.document(document)
            kept = "" if final else _separator_start(rest)
            yield from cutter.add(rest[: len(rest) - len(kept)])
            if final:
                yield from cutter.end_document()
                return


def _decode_block(decoder, block: bytes, final: bool, path: str, offset: int) -> str:
    nul = block.find(b"\x00")
    if nul >= 0:
        raise UserError(f"{path} looks binary (NUL byte at offset {offset + nul}); a .txt source must be UTF-8 text")
    begun = decoder.getstate()[0]  # the first bytes of a character that the previous block ended inside
    try:
        return decoder.decode(block, final)
    except UnicodeDecodeError as err:
        data = begun + block  # err.start counts from here
        raise UserError(f"{path} is not UTF-8 text (invalid byte 0x{data[err.start]:02x} at offset "
                        f"{offset - len(begun) + err.start}); re-save it as UTF-8") from None


def _separator_start(text: str) -> str:
    """The longest end of `text` that is the beginning of <|endoftext|> ("" if none)."""
    for n in range(min(len(ENDOFTEXT) - 1, len(text)), 0, -1):
        if text.endswith(ENDOFTEXT[:n]):
            return text[-n:]
    return ""


def _jsonl_pieces(path: str, cutter: _Cutter, text_field: str) -> Iterator[Piece]:
    """One JSON object per line (blank lines skipped), read line by line; .jsonl.gz through gzip.

    The bytes owed are the compressed file's, measured by how far gzip has read into it.
    """
    given = 0
    with open(path, "rb") as raw:
        lines = gzip.GzipFile(fileobj=raw) if path.lower().endswith(".gz") else raw
        try:
            for number, line in enumerate(lines, start=1):
                cutter.owe(raw.tell() - given)
                given = raw.tell()
                if line.strip():
                    yield from cutter.document(_json_text(line, text_field, f"{path}:{number}"))
        except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # only gzip raises these
            raise UserError(f"{path} is not a readable gzip file ({err}); is it truncated?") from None
    cutter.owe(os.path.getsize(path) - given)


def _json_text(line: bytes, text_field: str, where: str) -> str:
    try:
        row = json.loads(line)
    except ValueError as err:  # json.JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
        raise UserError(f"{where}: not a JSON line ({err})") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object with a {text_field!r} field, got a {type(row).__name__}")
    return _text_of(row, text_field, where)


def _text_of(row: dict, text_field: str, where: str) -> str:
    if text_field not in row:
        fields = ", ".join(map(repr, list(row)[:10]))
        raise UserError(f"{where}: no {text_field!r} field (it has {fields}); name the field that holds the text")
    text = row[text_field]
    if text is None:  # a missing value: an empty document, skipped, as a parquet null is
        return ""
    if not isinstance(text, str):
        raise UserError(f"{where}: the {text_field!r} field is a {type(text).__name__}, not a string")
    # JSON may escape a lone surrogate ("\udc80", found in scraped web text), which has no UTF-8 bytes and
    # could be neither counted nor saved: it becomes U+FFFD, as the BPE tokenizer would encode it anyway.
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _parquet_pieces(path: str, cutter: _Cutter, text_field: str) -> Iterator[Piece]:
    """One document per row of the `text_field` column, read in batches; the file's bytes spread over its rows
    (row k owes size*(k+1)//rows - size*k//rows, which add up to the size exactly)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise UserError(f"{path} is not a readable parquet file ({_one_line(err)})") from None
    schema = parquet.schema_arrow
    if text_field not in schema.names:
        raise UserError(f"{path} has no column {text_field!r} (its columns: {', '.join(schema.names)}); name the "
                        "column that holds the text")
    column_type = schema.field(text_field).type
    strings = column_type.value_type if pa.types.is_dictionary(column_type) else column_type  # a dictionary of them
    if not (pa.types.is_string(strings) or pa.types.is_large_string(strings) or pa.types.is_string_view(strings)):
        raise UserError(f"{path}: the column {text_field!r} holds {column_type}, not strings")
    size, rows = os.path.getsize(path), parquet.metadata.num_rows
    row = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field]):
        for text in batch.column(0).to_pylist():
            cutter.owe(size * (row + 1) // rows - size * row // rows)
            row += 1
            yield from cutter.document(text or "")  # a null is an empty document
    cutter.owe(size - (size * row // rows if rows else 0))


def _hf_pieces(spec: str, cutter: _Cutter, text_field: str, split: str) -> Iterator[Piece]:
    """A Hugging Face dataset, streamed row by row (nothing is downloaded whole); its bytes are the text's."""
    name, _, config = spec[len(HF_PREFIX):].partition(":")
    try:
        import datasets
    except ImportError:
        raise UserError("hf: sources need the datasets package: pip install datasets") from None

    def failed(err: Exception) -> UserError:
        return UserError(
            f"could not stream the Hugging Face dataset {spec[len(HF_PREFIX):]} (split {split!r}): "
            f"{type(err).__name__}: {_one_line(err)}. Check the network; offline, set HF_HUB_OFFLINE=1 and "
            "HF_DATASETS_OFFLINE=1 with the dataset in the local cache, or download its files and pass those")

    try:
        rows = iter(datasets.load_dataset(name, config or None, split=split, streaming=True))
    except Exception as err:  # offline, a wrong name, a wrong config: datasets has many errors
        raise failed(err) from None
    number = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as err:  # the network can fail in the middle of a stream
            raise failed(err) from None
        number += 1
        text = _text_of(row, text_field, f"{spec}, row {number}")
        cutter.owe(len(text.encode("utf-8", "surrogatepass")))
        yield from cutter.document(text)


def _one_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else "no message"


# --- llm.c token files -------------------------------------------------------------------------------------


def iter_token_pieces(paths: list[str], eot_id: int) -> Iterator[tuple[np.ndarray, bool]]:
    """The documents of pre-tokenized llm.c .bin shards, as (uint16 ids without their end-of-text, whether the
    document ends there) pieces, in order.

    llm.c writes the end-of-text id *before* each document, so each one that we find begins a document. Its
    fineweb.py fills every shard to exactly its size and carries the rest of the last document over into the
    next file: ids before a file's first end-of-text continue the previous file's last document (in the first
    file, they form one of their own). So whether a piece ends its document is known only from what follows
    it: the next piece starts one. Two end-of-text ids in a row give an empty document, yielded as it is, so
    writing [eot] + ids before each piece that starts a document reproduces the files' ids exactly (but for an
    eot added before the first file's first ids, when that file does not begin with one).
    """
    held: np.ndarray | None = None  # the last piece: it ends its document if the next one starts one
    for ids, starts in _token_pieces(paths, eot_id):
        if held is not None:
            yield held, starts
        held = ids
    if held is not None:
        yield held, True


def _token_pieces(paths: list[str], eot_id: int) -> Iterator[tuple[np.ndarray, bool]]:
    """(ids, whether an end-of-text came before them) for each stretch of ids between end-of-text ids."""
    for path in paths:
        tokens = read_llmc_bin(path)
        starts = np.flatnonzero(tokens == eot_id).tolist()  # one vectorised pass over a file of ~100M ids
        bounds = [*starts, len(tokens)]
        if bounds[0] > 0:
            yield np.array(tokens[: bounds[0]], dtype=np.uint16), False  # a copy, as below
        for start, end in zip(bounds, bounds[1:], strict=False):
            yield np.array(tokens[start + 1 : end], dtype=np.uint16), True  # a copy: the file can be closed
