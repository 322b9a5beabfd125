"""Tests for exercise 1: `pytest tutorial/exercises/test_ex01_tokenizer.py`. The answer key is the project's
`CharTokenizer` (src/tokenizer.py)."""

import pytest

from src.tokenizer import CharTokenizer

EXERCISE = "ex01_tokenizer"

TEXTS = {
    "hello": "hello",
    "hamlet": "To be, or not to be: that is the question.\n",
    "romeo": "ROMEO:\nBut, soft! what light through yonder window breaks?\n\nJULIET:\nAy me!\n",
    "not-ascii": "naïve café — 1597 ✓",  # a character is a character, whatever its alphabet
}
texts = pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())


@texts
def test_the_vocabulary_is_the_sorted_set_of_characters(exercise, text):
    tok = exercise.Tokenizer(text)
    assert list(tok.chars) == CharTokenizer.from_text(text).chars
    assert tok.vocab_size == len(set(text))


@texts
def test_the_same_ids_as_the_project(exercise, text):
    ours, project = exercise.Tokenizer(text), CharTokenizer.from_text(text)
    assert ours.encode(text) == project.encode(text)
    assert ours.encode(text[::-1]) == project.encode(text[::-1])  # any text made of known characters


@texts
def test_the_round_trip_gives_back_the_text(exercise, text):
    tok = exercise.Tokenizer(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)  # one id per character
    assert tok.decode(ids) == text


def test_ids_run_from_zero_to_vocab_size_minus_one(exercise):
    tok = exercise.Tokenizer("banana bread")
    assert sorted(set(tok.encode("banana bread"))) == list(range(tok.vocab_size))
    assert tok.encode(" ") == [0]  # the space sorts before every letter


def test_an_unknown_character_is_an_error_that_names_all_of_them(exercise):
    tok = exercise.Tokenizer("hello world")
    with pytest.raises(ValueError) as caught:
        tok.encode("hello, world!")
    message = str(caught.value)
    assert "','" in message and "'!'" in message  # both strangers, not just the first one met
