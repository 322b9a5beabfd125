"""Character-level tokenizer: every distinct character of the training text is one token.

The vocabulary is the sorted set of characters in the text, so token ids are stable: the same text
always gives the same ids. `encode` maps a string to a list of ids and `decode` maps ids back.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.chars
    ['e', 'h', 'l', 'o']
    >>> tok.encode("hole")
    [1, 3, 2, 0]
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'

A model trained with this tokenizer can only read characters it saw in training: `encode` raises an
error listing the unknown characters, unless you pass `unknown="replace"`, which maps them to a
replacement character that is in the vocabulary (a space when there is one).

Module-level `encode`, `decode` and `vocab_size` use the vocabulary of the default training text
(`data/data.txt` if present, else the Shakespeare corpus), so that this works:

    from src.tokenizer import encode, decode, vocab_size

The vocabulary is built on first use, not at import, so importing this module stays instant. These know
only the default text's characters: a trained model carries its own tokenizer in its folder, and
`load_pretrained` (engine/checkpoint.py) returns the two together.

Every tokenizer (this one and the byte-level BPE one in `bpe.py`) implements the `Tokenizer` interface
below, so the rest of the project (data preparation, training, generation, checkpoints) never needs to
know which kind it holds.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from functools import lru_cache

from src.engine.corpus import read_text, resolve_data
from src.engine.errors import UserError
from src.engine.files import atomic_write_text, read_json

FORMAT_VERSION = 1


class Tokenizer(ABC):
    """What every tokenizer offers. `CharTokenizer` (below) and `BPETokenizer` (bpe.py) implement it.

        encode(text) -> ids            text to token ids
        decode(ids) -> text            and back
        decode_bytes(ids) -> bytes     the raw bytes the ids stand for (printing tokens one at a time needs
                                       them: a BPE token can end in the middle of a character)
        vocab_size                     one more than the largest id: the size of a model's embedding table
        eot_token_id                   the id of GPT-2's "<|endoftext|>" token (where a text ends), or None
        document_separator             what goes between two documents of a training text
        to_dict() / from_dict(data)    the tokenizer as JSON, saved beside every checkpoint
    """

    kind: str  # the "type" field of the saved file: "char" or "bpe"
    document_separator: str = "\n\n"  # a blank line, unless the tokenizer has an end-of-text token

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    def eot_token_id(self) -> int | None:
        return None

    @abstractmethod
    def encode(self, text: str, allowed_special="none_raise") -> list[int]:
        """Text -> ids. `allowed_special="all"` encodes special-token strings as their tokens (see bpe.py)."""

    @abstractmethod
    def decode_bytes(self, ids) -> bytes:
        """Ids (a list, or a 1-D tensor) -> the bytes they stand for."""

    def decode(self, ids) -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (a BPE model can produce them) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    @abstractmethod
    def to_dict(self) -> dict:
        """Everything that defines the tokenizer, as JSON-able values, with "type" and "version"."""

    @classmethod
    @abstractmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """Inverse of `to_dict`; a UserError for a file that is not a valid tokenizer of this kind."""
        raise NotImplementedError("a tokenizer file of either kind: bpe.load_tokenizer")

    def to_json(self) -> str:
        """`to_dict` as human-readable JSON."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer file (atomically)."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Tokenizer:
        return cls.from_dict(read_json(path, "tokenizer file"))


class CharTokenizer(Tokenizer):
    """Maps characters to ids (`stoi`) and ids back to characters (`itos`)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars):
            raise ValueError("characters in a vocabulary must be unique")
        self.chars = list(chars)
        self.stoi = {ch: i for i, ch in enumerate(self.chars)}  # string -> id
        self.itos = dict(enumerate(self.chars))  # id -> string

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from a training text: its sorted distinct characters."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, allowed_special="none_raise", unknown: str = "error") -> list[int]:
        """Text -> list of ids. `unknown`: "error" (default) or "replace" for unseen characters.

        (`allowed_special` is accepted so that both tokenizers can be called alike; a char vocabulary
        has no special tokens.)
        """
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            pass  # find *all* the unknown characters, so the message can list them
        missing = sorted(set(text) - self.stoi.keys())
        if unknown == "replace":
            replacement = self.stoi.get(" ", 0)
            return [self.stoi.get(ch, replacement) for ch in text]
        shown = ", ".join(repr(ch) for ch in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise UserError(
            f"{len(missing)} character(s) not in the tokenizer's vocabulary: {shown} "
            "(the model only knows characters from its training text)"
        )

    def decode(self, ids) -> str:
        """List (or 1-D tensor) of ids -> text."""
        try:
            return "".join(self.itos[int(i)] for i in ids)
        except KeyError as err:
            raise UserError(f"token id {err.args[0]} is outside the vocabulary (size {self.vocab_size})") from None

    def decode_bytes(self, ids) -> bytes:
        return self.decode(ids).encode("utf-8")

    def to_dict(self) -> dict:
        return {"type": self.kind, "version": FORMAT_VERSION, "chars": self.chars}

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        if data.get("type") != cls.kind or data.get("version") != FORMAT_VERSION:
            raise UserError(f"not a version-{FORMAT_VERSION} char tokenizer: type={data.get('type')!r}")
        chars = data.get("chars")
        if not isinstance(chars, list) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise UserError("a char tokenizer file needs a list of single characters under \"chars\"")
        if len(set(chars)) != len(chars):
            raise UserError("a char tokenizer file lists the same character twice")
        return cls(chars)


# ---------------------------------------------------------------------------------------------------
# The module-level API of the original project: encode/decode/vocab_size on the default training text.


@lru_cache(maxsize=1)
def default_tokenizer() -> CharTokenizer:
    """The char tokenizer of the default training text (built once, on first use)."""
    path, _ = resolve_data()
    return CharTokenizer.from_text(read_text(path))


def encode(text: str) -> list[int]:
    """Encode with the default training text's vocabulary."""
    return default_tokenizer().encode(text)


def decode(ids) -> str:
    """Decode with the default training text's vocabulary."""
    return default_tokenizer().decode(ids)


def __getattr__(name: str):
    # PEP 562: computes `vocab_size` only when someone asks for it (`from src.tokenizer import vocab_size`).
    if name == "vocab_size":
        return default_tokenizer().vocab_size
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
