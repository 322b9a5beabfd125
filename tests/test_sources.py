"""Tests for src/engine/sources.py: where text may be cut, the formats a corpus comes in, and streaming.

The heart is `safe_cut`: tokenizing the pieces of a document one by one must give exactly the tokens of the
whole document. Hypothesis checks it on texts full of traps (whitespace runs, the characters on which Python
and the `regex` package disagree about whitespace, contractions, multi-byte characters) with three encoders:
`pretokenize` (the pre-tokens themselves, the strongest check), a BPE trained here, and tiktoken built with
the same vocabulary (an independent implementation). A naive cut is shown to fail the same checks.

Everything is offline and small: files are written to temporary folders; `datasets` is replaced by a fake
module; the real parquet test runs only where pyarrow is installed.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import tracemalloc
import types

import numpy as np
import pytest
import tiktoken
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from src.bpe import GPT2_PATTERN, BPETokenizer, pretokenize
from src.engine import sources
from src.engine.errors import UserError
from src.engine.shards import write_llmc_bin
from src.engine.sources import (
    ENDOFTEXT,
    Piece,
    expand_sources,
    is_token_sources,
    iter_pieces,
    iter_token_pieces,
    safe_cut,
    total_bytes,
)

# Characters and strings that trip pre-tokenizers: whitespace of every kind (\x1c and \x85 are where Python's
# str.isspace and the regex package's \s have disagreed), contraction parts, letters, digits, punctuation,
# multi-byte characters.
# fmt: off
TRAPS = ["\n", "\n", " ", " ", "\t", "\r", "\r\n", "\x1c", "\x1f", "\x85", "\u00a0", "\u2028", "\u3000",
         "'", "s", "t", "ll", "re", "a", "Zb", "7", "42", ",", "!", "?!", "é", "中", "😀", "<|", "\n\n", "  "]
# fmt: on
trap_text = st.lists(st.sampled_from(TRAPS), max_size=40).map("".join)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


WORDS = "the king and queen of a night to love in his heart sword crown was it that he she for on are with".split()


def trap_corpus(n_words: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(TRAPS) for _ in range(n_words))


def english(n_chars: int, seed: int = 0) -> str:
    """Plain English-like text: words, spaces, a line break now and then (ASCII only)."""
    rng = random.Random(seed)
    out, length = [], 0
    while length < n_chars:
        word = rng.choice(WORDS) + rng.choice([" "] * 8 + ["\n", ". ", ",\n"])
        out.append(word)
        length += len(word)
    return "".join(out)


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    """A small BPE trained on trap text, so that its merges span the whitespace runs a bad cut would split."""
    return BPETokenizer.train(trap_corpus(20_000, seed=0) + english(20_000), 600, special_tokens=[ENDOFTEXT])


@pytest.fixture(scope="module")
def tk(tok) -> tiktoken.Encoding:
    """tiktoken with exactly our vocabulary (rank = id), as in test_bpe.py: an encoder we did not write."""
    ranks = {token: i for i, token in tok.vocab.items()}
    return tiktoken.Encoding(name="sources-twin", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens=tok.special_tokens)


def all_cuts(text: str) -> list[int]:
    """Every index safe_cut offers, from the first on."""
    cuts, cut = [], safe_cut(text, 0)
    while cut is not None:
        cuts.append(cut)
        cut = safe_cut(text, cut + 1)
    return cuts


def split_at(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def encodes_the_same(encode, parts: list[str]) -> bool:
    """Encoding the parts one by one and concatenating gives the encoding of the whole text."""
    return [x for part in parts for x in encode(part)] == encode("".join(parts))


def pieces_of(path, **kwargs) -> list[Piece]:
    return list(iter_pieces([str(path)], **kwargs))


def documents_of(pieces: list[Piece]) -> list[str]:
    """The documents the pieces make up (each ends with an ends_document piece)."""
    documents, current = [], []
    for piece in pieces:
        current.append(piece.text)
        if piece.ends_document:
            documents.append("".join(current))
            current = []
    assert current == [], "the last piece does not end a document"
    return documents


# --- safe_cut: cutting never changes the tokens ----------------------------------------------------------


@SETTINGS
@given(trap_text)
@example("a\n\nb c\r\nd  e!!\x1cf\x85g 's")  # the known traps, whatever hypothesis draws
def test_every_safe_cut_keeps_the_pre_tokens_exactly(text):
    cuts = all_cuts(text)
    for cut in cuts:
        assert 1 <= cut < len(text)
        assert pretokenize(text[:cut]) + pretokenize(text[cut:]) == pretokenize(text), cut
    assert encodes_the_same(pretokenize, split_at(text, cuts))  # all at once too


@SETTINGS
@given(trap_text)
@example("a\n\nb c\r\nd  e!!\x1cf\x85g 's")
def test_every_safe_cut_keeps_the_ids_of_our_bpe_and_of_tiktoken(tok, tk, text):
    parts = split_at(text, all_cuts(text))
    assert encodes_the_same(tok.encode_ordinary, parts)
    assert encodes_the_same(tk.encode_ordinary, parts)
    for cut in all_cuts(text):
        assert encodes_the_same(tk.encode_ordinary, [text[:cut], text[cut:]])


def test_safe_cut_is_the_first_place_at_or_after_start():
    text = "one two\nthree"
    assert all_cuts(text) == [3, 7]  # before the space, before the newline
    assert safe_cut(text, 0) == safe_cut(text, 3) == 3
    assert safe_cut(text, 4) == 7
    assert safe_cut(text, 8) is None  # "three" has no whitespace after it
    assert safe_cut("unbroken", 0) is None and safe_cut("", 0) is None and safe_cut(" lead", 0) is None
    assert safe_cut("line one\r\nline two", 5) == 8  # Windows line ends: before the \r\n run, not inside it
    assert safe_cut("a\n\n\nb", 0) == 1  # before the run, never inside it


def test_a_naive_cut_changes_the_tokens(tok, tk):
    """The checks above can fail: cutting right after a blank line's "\\n\\n" splits "a\\n\\nb" differently."""
    text, naive = "a\n\nb", 3
    assert pretokenize(text) == ["a", "\n", "\n", "b"]  # inside a text, a run leaves its last \n to the next word
    assert pretokenize(text[:naive]) + pretokenize(text[naive:]) == ["a", "\n\n", "b"]  # at the end, it does not
    assert not encodes_the_same(pretokenize, [text[:naive], text[naive:]])
    assert not encodes_the_same(tk.encode_ordinary, [text[:naive], text[naive:]])
    # Cutting after a single newline is right only when no whitespace comes before it ("a\r\nb" is a,\r,\n,b)...
    assert not encodes_the_same(pretokenize, ["a\r\n", "b"])
    # ...and cutting before a space glues nothing: " b" stays one pre-token after the cut too.
    assert encodes_the_same(pretokenize, ["a", " b"]) and safe_cut("a b", 0) == 1
    # A space at the end of a word, though, belongs to the next word: the cut must come before it.
    assert not encodes_the_same(pretokenize, ["a ", "the"]) and not encodes_the_same(tok.encode_ordinary, ["a ", "the"])


def test_whitespace_counts_when_both_definitions_agree():
    """str.isspace() calls \\x1c-\\x1f whitespace, the regex package's \\s (and tiktoken's) does not: "!\\x1c" is
    one pre-token, so a rule that trusted str.isspace alone would cut it in two."""
    assert "\x1c".isspace() and pretokenize("!!\x1cb") == ["!!\x1c", "b"]
    assert not encodes_the_same(pretokenize, ["!!", "\x1cb"])
    assert safe_cut("!!\x1cb", 0) is None
    assert safe_cut("ab\x85c", 0) == 2 and encodes_the_same(pretokenize, ["ab", "\x85c"])  # both say space


# --- iter_pieces on .txt files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One folder for every example of a hypothesis test (a function-scoped tmp_path is not reset between them)."""
    return tmp_path_factory.mktemp("scratch")


@SETTINGS
@given(st.lists(trap_text, max_size=5), st.integers(1, 12), st.integers(1, 9))
@example(["a\n\nb", "\x1c\x1c \n", "", "x"], 1, 1)  # "\x1c\x1c \n" is blank to str.isspace: skipped whole
def test_pieces_of_a_file_encode_like_its_documents(scratch, tok, tk, documents, piece_chars, block):
    """Many documents, tiny pieces and blocks: each document comes back whole, its pieces encode like it, and the
    pieces' bytes add up to the file's size."""
    path = scratch / "corpus.txt"
    path.write_text(ENDOFTEXT.join(documents), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "BLOCK_BYTES", block)
        try:
            pieces = pieces_of(path, piece_chars=piece_chars)
        except UserError as err:
            assert all(not d.strip() for d in documents) and "no text" in str(err)
            return
    assert documents_of(pieces) == [d for d in documents if d.strip()]
    assert sum(p.source_bytes for p in pieces) == os.path.getsize(path) == total_bytes([str(path)])
    # Where pieces end depends on the text and piece_chars only, not on the blocks it was read in (a resumed
    # preparation skips pieces by counting them).
    assert [(p.text, p.ends_document) for p in pieces_of(path, piece_chars=piece_chars)] == [
        (p.text, p.ends_document) for p in pieces]
    document = []
    for piece in pieces:
        document.append(piece.text)
        if piece.ends_document:
            assert encodes_the_same(pretokenize, document) and encodes_the_same(tok.encode_ordinary, document)
            assert encodes_the_same(tk.encode_ordinary, document)
            document = []
        else:
            assert len(piece.text) >= piece_chars  # no tiny pieces: a cut is searched from piece_chars on


def test_pieces_are_about_piece_chars_long(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(english(200_000), encoding="utf-8")
    pieces = pieces_of(path, piece_chars=10_000)
    assert len(pieces) == 20 and [p.ends_document for p in pieces] == [False] * 19 + [True]
    assert all(10_000 <= len(p.text) <= 10_020 for p in pieces[:-1])  # the next space is a few letters on
    assert "".join(p.text for p in pieces) == path.read_text(encoding="utf-8")


def test_one_document_per_txt_file_in_order(tmp_path):
    (tmp_path / "a.txt").write_text("first file\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("second file", encoding="utf-8")
    pieces = list(iter_pieces([str(tmp_path)]))
    assert pieces == [Piece("first file\n", True, 11), Piece("second file", True, 11)]


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 13, 14, 4096])
def test_separators_anywhere_across_blocks_and_blank_documents_skipped(tmp_path, monkeypatch, block):
    monkeypatch.setattr(sources, "BLOCK_BYTES", block)
    text = f"one{ENDOFTEXT}two <|endo{ENDOFTEXT}{ENDOFTEXT} \n\t {ENDOFTEXT}<|three<|endoftext{ENDOFTEXT}"
    path = tmp_path / "docs.txt"
    path.write_text(text, encoding="utf-8")
    pieces = pieces_of(path)
    assert documents_of(pieces) == ["one", "two <|endo", "<|three<|endoftext"]  # near misses are text
    assert sum(p.source_bytes for p in pieces) == len(text.encode()) == total_bytes([str(path)])


@pytest.mark.parametrize("block", [1, 2, 3, 5])
def test_characters_split_across_blocks_decode_whole(tmp_path, monkeypatch, block):
    monkeypatch.setattr(sources, "BLOCK_BYTES", block)
    text = "é中😀 x" * 50 + ENDOFTEXT + "😀" * 7
    path = tmp_path / "utf8.txt"
    path.write_text(text, encoding="utf-8")
    pieces = pieces_of(path, piece_chars=8)
    assert documents_of(pieces) == text.split(ENDOFTEXT)
    assert sum(p.source_bytes for p in pieces) == len(text.encode())


@pytest.mark.parametrize("block", [1, 2, 4, 1 << 20])
@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"abc\x00def", "looks binary (NUL byte at offset 3)"),
        (b"ab\xc3(cd", "not UTF-8 text (invalid byte 0xc3 at offset 2)"),
        (b"abcd\xff", "not UTF-8 text (invalid byte 0xff at offset 4)"),
        (b"abc\xe2\x82", "not UTF-8 text (invalid byte 0xe2 at offset 3)"),  # a character cut off at the end
        (b"\xe4\xb8\xad\xe4\xb8", "not UTF-8 text (invalid byte 0xe4 at offset 3)"),
    ],
)
def test_binary_and_invalid_utf8_are_one_line_errors_with_the_offset(tmp_path, monkeypatch, block, data, message):
    monkeypatch.setattr(sources, "BLOCK_BYTES", block)
    path = tmp_path / "bad.txt"
    path.write_bytes(data)
    with pytest.raises(UserError) as err:
        pieces_of(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_files_without_any_text_are_an_error(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text(f" \n{ENDOFTEXT}\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="no text to prepare: every document of the 2 source"):
        list(iter_pieces([str(tmp_path)]))


def test_blank_documents_at_the_end_give_their_bytes_to_the_last_piece(tmp_path):
    (tmp_path / "a.txt").write_text("text", encoding="utf-8")
    (tmp_path / "b.txt").write_text("   \n", encoding="utf-8")
    assert list(iter_pieces([str(tmp_path)])) == [Piece("text", True, 8)]


def test_a_30_mb_document_streams_in_bounded_memory(tmp_path):
    """One 30 MB document with no separator: memory stays at a few pieces and blocks, not the file."""
    path = tmp_path / "big.txt"
    chunk = english(1_000_000, seed=3)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(30):
            f.write(chunk)
    size = os.path.getsize(path)
    safe_cut("warm up", 0)  # the cut pattern is built once per process; not the streaming's memory
    tracemalloc.start()
    try:
        n_chars = n_bytes = n_pieces = 0
        for piece in iter_pieces([str(path)], piece_chars=1 << 20):
            n_chars, n_bytes, n_pieces = n_chars + len(piece.text), n_bytes + piece.source_bytes, n_pieces + 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n_chars == size and n_bytes == size and n_pieces == 29
    assert peak < size / 3 and peak < 10 * (1 << 20), f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.0f} MB file"


# --- .jsonl, .jsonl.gz, .parquet, hf: -------------------------------------------------------------------


def jsonl_bytes(rows: list) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


ROWS = [{"text": "first doc", "id": 1}, {"text": "", "id": 2}, {"text": "third\n\ndoc é", "id": 3}]


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz"])
def test_jsonl_documents_and_bytes(tmp_path, name):
    data = jsonl_bytes(ROWS[:1]) + b"\n  \n" + jsonl_bytes(ROWS[1:] * 2000)  # blank lines skipped
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    pieces = pieces_of(path, piece_chars=3)
    assert documents_of(pieces) == ["first doc"] + ["third\n\ndoc é"] * 2000  # the empty documents are skipped
    assert sum(p.source_bytes for p in pieces) == os.path.getsize(path) == total_bytes([str(path)])
    assert min(p.source_bytes for p in pieces) >= 0  # .gz: compressed bytes, as far as gzip has read
    renamed = tmp_path / f"renamed-{name}"
    renamed.write_bytes(path.read_bytes().replace(b'"text"', b'"content"') if name.endswith("l") else
                        gzip.compress(data.replace(b'"text"', b'"content"')))
    assert documents_of(pieces_of(renamed, text_field="content")) == documents_of(pieces)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "rows.jsonl:2: not a JSON line"),
        (b'["a list"]', "rows.jsonl:2: expected a JSON object with a 'text' field, got a list"),
        (b'{"content": "x", "id": 3}', "rows.jsonl:2: no 'text' field (it has 'content', 'id')"),
        (b'{"text": 42}', "rows.jsonl:2: the 'text' field is a int, not a string"),
        (b'{"text": "\xff"}', "rows.jsonl:2: not a JSON line"),
    ],
)
def test_bad_jsonl_lines_name_the_file_and_line(tmp_path, line, message):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "fine"}\n' + line + b"\n")
    with pytest.raises(UserError) as err:
        pieces_of(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_null_text_is_an_empty_document_in_every_format(tmp_path):
    """A missing value is skipped as an empty document: in JSON lines as in parquet (above) and hf: rows."""
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "one"}\n{"text": null}\n{"text": "three"}\n')
    assert documents_of(pieces_of(path)) == ["one", "three"]


def test_a_broken_gzip_file_is_a_user_error(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes(ROWS * 100))[:-20])
    with pytest.raises(UserError, match="rows.jsonl.gz is not a readable gzip file"):
        pieces_of(path)
    path.write_bytes(b"plain text, not gzip")
    with pytest.raises(UserError, match="not a readable gzip file"):
        pieces_of(path)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(UserError, match=r"^reading .*rows.parquet needs pyarrow: pip install pyarrow$"):
        pieces_of(path)


def test_parquet_rows_are_documents_and_share_the_file_size(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = ["row one", None, "", "row four é", "x" * 50]
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": list(range(5)), "text": texts}), path, row_group_size=2)
    pieces = pieces_of(path, piece_chars=20)
    assert documents_of(pieces) == ["row one", "row four é", "x" * 50]
    assert sum(p.source_bytes for p in pieces) == os.path.getsize(path) == total_bytes([str(path)])
    with pytest.raises(UserError, match=r"has no column 'body' \(its columns: id, text\)"):
        pieces_of(path, text_field="body")
    with pytest.raises(UserError, match="the column 'id' holds int64, not strings"):
        pieces_of(path, text_field="id")


@pytest.mark.parametrize("encoding", ["dictionary", "string_view"])
def test_parquet_strings_stored_as_a_dictionary_or_views_are_text(tmp_path, encoding):
    """Columns of repeated strings are often stored dictionary-encoded, and newer writers use string views:
    still a column of text."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    texts = ["row one", "row two", "row one"]
    column = pa.array(texts).dictionary_encode() if encoding == "dictionary" else pa.array(texts, pa.string_view())
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": column}), path, store_schema=True)
    assert documents_of(pieces_of(path, piece_chars=20)) == texts


def fake_datasets(rows=None, error: Exception | None = None, fail_after: int | None = None):
    """A stand-in for the `datasets` package: load_dataset records its arguments and streams `rows`."""
    calls = []

    def load_dataset(name, config=None, split=None, streaming=False):
        calls.append((name, config, split, streaming))
        if error is not None and fail_after is None:
            raise error

        def stream():
            for k, row in enumerate(rows or []):
                if k == fail_after:
                    raise error
                yield row

        return stream()

    return types.SimpleNamespace(load_dataset=load_dataset, calls=calls)


def test_hf_sources_stream_rows(monkeypatch):
    fake = fake_datasets(rows=[{"text": "héllo"}, {"text": " "}, {"text": "world"}])
    monkeypatch.setitem(sys.modules, "datasets", fake)
    pieces = list(iter_pieces(["hf:some/corpus:en"], hf_split="validation"))
    assert pieces == [Piece("héllo", True, 6), Piece("world", True, 6)]  # the blank row's byte goes last
    assert fake.calls == [("some/corpus", "en", "validation", True)]
    list(iter_pieces(["hf:plain"]))
    assert fake.calls[-1] == ("plain", None, "train", True)
    assert total_bytes(["hf:plain"]) is None


@pytest.mark.parametrize("fail_after", [None, 1])
def test_hf_offline_is_one_line_with_the_fix(monkeypatch, fail_after):
    error = ConnectionError("Couldn't reach 'some/corpus' on the Hub (LocalEntryNotFoundError)\nmore detail")
    fake = fake_datasets(rows=[{"text": "a"}, {"text": "b"}], error=error, fail_after=fail_after)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(UserError) as err:
        list(iter_pieces(["hf:some/corpus"]))
    message = str(err.value)
    assert "\n" not in message and "some/corpus" in message and "ConnectionError" in message
    assert "network" in message and "HF_DATASETS_OFFLINE" in message and "pass those" in message


def test_hf_without_the_datasets_package_or_the_field(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(UserError, match="^hf: sources need the datasets package: pip install datasets$"):
        list(iter_pieces(["hf:some/corpus"]))
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(rows=[{"body": "x"}]))
    with pytest.raises(UserError, match="hf:some/corpus, row 1: no 'text' field"):
        list(iter_pieces(["hf:some/corpus"]))


# --- which files: expand_sources ---------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    for name in ["b/z.txt", "a.jsonl", "a/c.txt", "a/d/e.jsonl.gz", "a-b.parquet", ".hidden/x.txt", "a/.x.txt",
                 "README.md", "a/notes.csv"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x", encoding="utf-8")
    return tmp_path


def test_a_folder_gives_its_supported_files_recursively_sorted(tree):
    assert expand_sources([str(tree)]) == [str(tree / p) for p in
                                           ["a/c.txt", "a/d/e.jsonl.gz", "a-b.parquet", "a.jsonl", "b/z.txt"]]


def test_globs_files_and_hf_specs_keep_the_order_given(tree):
    got = expand_sources([str(tree / "b/z.txt"), "hf:org/name:cfg", str(tree / "a*"), str(tree / "b/z.txt")])
    expected = ["b/z.txt", "hf:org/name:cfg", "a/c.txt", "a/d/e.jsonl.gz", "a-b.parquet", "a.jsonl"]
    assert got == [e if e.startswith("hf:") else str(tree / e) for e in expected]  # z.txt once: duplicates go
    assert expand_sources(got) == got  # the result is a valid argument: the other functions expand again
    assert total_bytes(got) is None and not is_token_sources(got)
    assert expand_sources([str(tree / "**" / "*.txt")]) == [str(tree / "a/c.txt"), str(tree / "b/z.txt")]


def test_one_file_named_twice_is_read_once(tree, monkeypatch):
    """A relative and an absolute path, or a link, name one file: read twice, its documents would train twice,
    or land in validation and in training at once."""
    (tree / "link.txt").symlink_to(tree / "b" / "z.txt")
    monkeypatch.chdir(tree)
    assert expand_sources(["b/z.txt", str(tree / "b" / "z.txt"), "link.txt", "./b/../b/z.txt"]) == ["b/z.txt"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("missing.txt", "missing.txt does not exist"),
        ("README.md", r"README.md: unsupported file type \(supported: .txt, .jsonl, .jsonl.gz, .parquet, .bin\)"),
        ("*.nothing", r"nothing matches .*\*.nothing"),
        ("a/n*", r"a/notes.csv: unsupported file type"),
        ("empty", r"the folder .*empty holds no file to read \(supported: .txt"),
        ("hf:", "is not a Hugging Face source: write hf:NAME or hf:NAME:CONFIG"),
    ],
)
def test_bad_sources_are_one_line_errors(tree, source, message):
    (tree / "empty" / ".git").mkdir(parents=True)
    (tree / "empty" / ".git" / "HEAD.txt").write_text("x")  # hidden: does not count
    with pytest.raises(UserError, match=message) as err:
        expand_sources([source if source.startswith("hf:") else str(tree / source)])
    assert "\n" not in str(err.value)


def test_no_sources_at_all():
    with pytest.raises(UserError, match="no sources given"):
        expand_sources([])


# --- llm.c .bin token files --------------------------------------------------------------------------------

EOT_ID = 50256


def rebuild(pieces: list[tuple[np.ndarray, bool]], first_starts: bool = True) -> list[int]:
    """The ids the pieces came from: an end-of-text before each piece that starts a document."""
    ids, starts = [], first_starts
    for piece, ends in pieces:
        ids += [EOT_ID] * starts + piece.tolist()
        starts = ends
    return ids


def test_token_pieces_split_at_each_end_of_text_and_carry_over_between_files(tmp_path):
    """llm.c's fineweb.py fills each file to its size and carries the rest of the last document into the next:
    ids before a file's first eot continue that document, they are not one of their own."""
    a = [EOT_ID, 1, 2, EOT_ID, EOT_ID, 3, EOT_ID, 4, 65535, 6]
    write_llmc_bin(tmp_path / "a.bin", a)
    write_llmc_bin(tmp_path / "b.bin", [7, 8, EOT_ID, 9])  # 7, 8: the rest of a's last document
    write_llmc_bin(tmp_path / "c.bin", [10, 11])  # all of it the rest of b's
    write_llmc_bin(tmp_path / "d.bin", [])
    write_llmc_bin(tmp_path / "e.bin", [EOT_ID, 12])  # starts with eot: c's document ended with c
    paths = expand_sources([str(tmp_path)])
    assert is_token_sources(paths) and total_bytes(paths) == sum(os.path.getsize(p) for p in paths)
    pieces = list(iter_token_pieces(paths, EOT_ID))
    assert all(ids.dtype == np.uint16 for ids, _ in pieces)
    assert [(ids.tolist(), ends) for ids, ends in pieces] == [
        ([1, 2], True), ([], True), ([3], True), ([4, 65535, 6], False), ([7, 8], True), ([9], False),
        ([10, 11], True), ([12], True)]
    assert rebuild(pieces) == a + [7, 8, EOT_ID, 9] + [10, 11] + [EOT_ID, 12]  # every id, in order, once
    first_alone = list(iter_token_pieces(paths[1:], EOT_ID))  # the first file's leading ids: a document
    assert [(ids.tolist(), ends) for ids, ends in first_alone][:2] == [([7, 8], True), ([9], False)]


def test_token_documents_of_a_large_file_without_python_loops_over_ids(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, EOT_ID, size=2_000_000).astype(np.uint16)
    ids[rng.choice(len(ids), size=2_000, replace=False)] = EOT_ID
    ids[0] = EOT_ID
    write_llmc_bin(tmp_path / "big.bin", ids)
    pieces = list(iter_token_pieces([str(tmp_path / "big.bin")], EOT_ID))
    assert len(pieces) == np.count_nonzero(ids == EOT_ID) > 1_900 and all(ends for _, ends in pieces)
    assert np.array_equal(np.concatenate([np.r_[EOT_ID, d].astype(np.uint16) for d, _ in pieces]), ids)


def test_broken_token_files_and_mixing_them_with_text(tmp_path):
    write_llmc_bin(tmp_path / "good.bin", [EOT_ID, 1, 2])
    (tmp_path / "magic.bin").write_bytes(b"\x00" * 2048)
    (tmp_path / "short.bin").write_bytes((tmp_path / "good.bin").read_bytes()[:-1])
    with pytest.raises(UserError, match="magic.bin is not an llm.c token file"):
        list(iter_token_pieces([str(tmp_path / "magic.bin")], EOT_ID))
    with pytest.raises(UserError, match="short.bin is truncated"):
        list(iter_token_pieces([str(tmp_path / "short.bin")], EOT_ID))
    (tmp_path / "notes.txt").write_text("text", encoding="utf-8")
    with pytest.raises(UserError, match="mix llm.c token files .* with text .*notes.txt.*: prepare them separately"):
        expand_sources([str(tmp_path)])
    with pytest.raises(UserError, match="good.bin holds token ids, not text: read it with iter_token_pieces"):
        list(iter_pieces([str(tmp_path / "good.bin")]))


# --- the module stays light -------------------------------------------------------------------------------


def test_importing_sources_does_not_import_torch(repo_root, cli_env):
    """prepare.py's worker processes import this module; loading PyTorch in each would cost seconds."""
    code = "import sys, src.engine.sources; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo_root, env=cli_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
