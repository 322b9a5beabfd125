"""Tests for src/tokenizer.py: the character tokenizer, its file format (read back by
`engine/checkpoint.py`'s `load_tokenizer`), and the module-level API."""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import src.tokenizer as tokenizer_module
from src.engine.checkpoint import load_tokenizer
from src.engine.errors import UserError
from src.tokenizer import CharTokenizer, default_tokenizer

# Any Unicode text (hypothesis leaves out lone surrogates, which UTF-8 cannot hold): emoji, CJK, combining
# marks, control characters, "\r\n" and whitespace runs all come up.
any_text = st.text(min_size=1, max_size=200)


@given(st.data())
@settings(max_examples=150, deadline=None, database=None)
def test_round_trip_on_text_drawn_from_the_vocabulary(data):
    vocab_text = data.draw(any_text, label="training text")
    tok = CharTokenizer.from_text(vocab_text)
    s = data.draw(st.text(alphabet=sorted(set(vocab_text)), max_size=300), label="text to encode")
    ids = tok.encode(s)
    assert len(ids) == len(s)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == s


@given(any_text)
@settings(max_examples=100, deadline=None, database=None)
def test_vocabulary_is_the_sorted_distinct_characters(text):
    tok = CharTokenizer.from_text(text)
    assert tok.chars == sorted(set(text))
    assert all(a < b for a, b in pairwise(tok.chars))  # strictly increasing: distinct and sorted
    assert tok.vocab_size == len(set(text))
    assert tok.decode(tok.encode(text)) == text


def test_docstring_example_ids_are_stable():
    tok = CharTokenizer.from_text("hello")
    assert tok.chars == ["e", "h", "l", "o"]
    assert tok.encode("hole") == [1, 3, 2, 0]
    assert tok.decode([1, 0, 2, 2, 3]) == "hello"
    assert CharTokenizer.from_text("olleh").encode("hole") == [1, 3, 2, 0]  # order of the text does not matter


def test_duplicate_characters_are_refused():
    with pytest.raises(ValueError):
        CharTokenizer(["a", "b", "a"])


def test_unknown_characters_raise_a_user_error_listing_them():
    tok = CharTokenizer.from_text("abc ")
    with pytest.raises(UserError) as err:
        tok.encode("a bx yz x")
    message = str(err.value)
    assert "3 character(s)" in message
    for ch in ("'x'", "'y'", "'z'"):
        assert ch in message
    assert "'a'" not in message


def test_many_unknown_characters_are_listed_up_to_twenty():
    tok = CharTokenizer.from_text("a")
    unknown = "".join(chr(ord("A") + i) for i in range(26))
    with pytest.raises(UserError) as err:
        tok.encode(unknown)
    message = str(err.value)
    assert "26 character(s)" in message and "..." in message
    assert "'T'" in message and "'U'" not in message  # the first 20, sorted


def test_unknown_replace_maps_to_space_or_id_zero():
    tok = CharTokenizer.from_text("ab c")
    assert tok.encode("a?c!", unknown="replace") == [tok.stoi["a"], tok.stoi[" "], tok.stoi["c"], tok.stoi[" "]]
    no_space = CharTokenizer.from_text("xyz")
    assert no_space.encode("x~z", unknown="replace") == [0, 0, 2]
    assert tok.encode("abc", unknown="replace") == tok.encode("abc")


def test_decode_accepts_a_tensor_and_rejects_ids_outside_the_vocabulary():
    import torch

    tok = CharTokenizer.from_text("abc")
    assert tok.decode(torch.tensor([2, 1, 0])) == "cba"
    with pytest.raises(UserError, match="outside the vocabulary"):
        tok.decode([0, 3])


def test_save_and_load_round_trip(tmp_path):
    text = "Hello, world!\nnaïve 日本語 🎉\r\n\ttabs"
    tok = CharTokenizer.from_text(text)
    path = tmp_path / "tok.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data == {"type": "char", "version": 1, "chars": tok.chars}
    assert "🎉" in path.read_text(encoding="utf-8")  # human-readable, not \\u-escaped
    for loaded in (CharTokenizer.load(path), load_tokenizer(path)):
        assert isinstance(loaded, CharTokenizer)
        assert loaded.chars == tok.chars
        assert loaded.encode(text) == tok.encode(text)
        assert loaded.decode(tok.encode(text)) == text
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp file left behind


def test_load_tokenizer_dispatches_on_type_and_rejects_unknown_types(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"type": "char", "version": 1, "chars": ["a", "b"]}))
    assert isinstance(load_tokenizer(path), CharTokenizer)
    path.write_text(json.dumps({"type": "sentencepiece", "version": 1}))
    with pytest.raises(UserError, match="unknown tokenizer type 'sentencepiece'"):
        load_tokenizer(path)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"type": "char", "version": 2, "chars": ["a"]}, "version-1 char tokenizer"),
        ({"type": "bpe", "version": 1, "chars": ["a"]}, "type='bpe'"),
        ({"version": 1, "chars": ["a"]}, "char tokenizer"),
    ],
)
def test_char_tokenizer_load_rejects_other_versions_and_types(tmp_path, content, match):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=match):
        CharTokenizer.load(path)


@pytest.mark.parametrize(
    "raw, match",
    [
        (None, "not found"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "not a tokenizer"),
    ],
)
def test_unreadable_tokenizer_files_raise_user_errors(tmp_path, raw, match):
    path = tmp_path / "t.json"
    if raw is not None:
        path.write_bytes(raw)
    with pytest.raises(UserError, match=match):
        load_tokenizer(path)


def test_char_tokenizer_file_without_chars_is_a_user_error(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"type": "char", "version": 1}))
    with pytest.raises(UserError):
        load_tokenizer(path)


def test_module_level_api_agrees_with_default_tokenizer():
    from src.tokenizer import decode, encode, vocab_size  # vocab_size comes from the module's __getattr__

    tok = default_tokenizer()
    assert isinstance(tok, CharTokenizer)
    assert vocab_size == tok.vocab_size == tokenizer_module.vocab_size
    assert vocab_size > 20
    text = "".join(tok.chars[:: max(1, tok.vocab_size // 10)])
    assert encode(text) == tok.encode(text)
    assert decode(encode(text)) == text
    assert default_tokenizer() is tok  # built once
    with pytest.raises(AttributeError):
        tokenizer_module.no_such_name  # noqa: B018


def test_importing_the_module_does_not_read_the_corpus(repo_root):
    code = "import src.tokenizer as t; print(t.default_tokenizer.cache_info().currsize)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0"
