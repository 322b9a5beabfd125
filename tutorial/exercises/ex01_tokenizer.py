"""Exercise 1 (chapter 1): the character tokenizer, written by you.

Fill in the four places marked TODO, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex01_tokenizer.py

The tests compare your tokenizer with the project's `CharTokenizer` (src/tokenizer.py) on texts you have not
seen. Try not to look at either until your tests pass.
"""


class Tokenizer:
    """One token per character. The vocabulary is the sorted list of the distinct characters of `text`."""

    def __init__(self, text: str):
        # TODO: self.chars = the vocabulary (a sorted list of characters)
        # TODO: self.stoi = {character: id} and self.itos = {id: character}
        raise NotImplementedError("Tokenizer.__init__: build the vocabulary (chapter 1)")

    @property
    def vocab_size(self) -> int:
        # TODO: how many tokens there are
        raise NotImplementedError("Tokenizer.vocab_size (chapter 1)")

    def encode(self, s: str) -> list[int]:
        """Text -> list of ids. A character that is not in the vocabulary raises a ValueError whose message
        names *every* unknown character of `s` (not just the first one met), each quoted with `repr`: ',' and
        '!' for "hello, world!". (The project's `CharTokenizer` raises its own `UserError` instead; a plain
        ValueError is enough here.)"""
        # TODO
        raise NotImplementedError("Tokenizer.encode (chapter 1)")

    def decode(self, ids: list[int]) -> str:
        """List of ids -> text."""
        # TODO
        raise NotImplementedError("Tokenizer.decode (chapter 1)")
