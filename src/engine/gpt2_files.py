"""GPT-2's files: the names in a model folder, the tokenizer's byte alphabet and its two file layouts.

A Hugging Face GPT-2 folder holds `config.json` (the sizes, under GPT-2's names) and `model.safetensors` (or,
in older folders, `pytorch_model.bin`: a pickle, read only with weights_only=True).

OpenAI released GPT-2's tokenizer as two files, and Hugging Face renamed them:

    OpenAI            Hugging Face     what
    encoder.json      vocab.json       {"token string": id, ...}: 50,257 entries ("<|endoftext|>" is 50256)
    vocab.bpe         merges.txt       "#version: 0.2", then one merge per line, "Ġ t", in rank order

Why the odd characters ("Ġthe" for " the", "Ċ" for a newline): merges.txt separates a pair's two tokens
by a space, so a token may not contain one, nor any other invisible byte. GPT-2 therefore writes each of
the 256 byte values as one printable stand-in character (`BYTE_TO_UNICODE`). Our own tokenizer files use
the same alphabet, so a token reads the same in both.

Who uses it: `bpe.py` (spelling tokens in its JSON file), `model.py` (the folder's file names),
`engine/tokenizers.py` (`gpt2_tokenizer`), `engine/checkpoint.py` (folders), `engine/hub.py` (which files to download).
"""

from __future__ import annotations

from pathlib import Path

from src.engine.errors import UserError
from src.engine.files import read_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "pytorch_model.bin"  # older Hugging Face folders
ENDOFTEXT = "<|endoftext|>"  # GPT-2's only special token
LAYOUTS = (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe"))  # Hugging Face, OpenAI


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte value.

    Bytes that are printable Latin-1 characters other than space ('!'..'~', '¡'..'¬', '®'..'ÿ') stand
    for themselves. The other 68 (control bytes, space, 0x7f..0xa0, soft hyphen 0xad) get U+0100,
    U+0101, ... in byte order, so space (0x20) becomes 'Ġ' (U+0120) and newline (0x0a) 'Ċ' (U+010A).
    """
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    mapping = {}
    n_stand_ins = 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + n_stand_ins)
            n_stand_ins += 1
    return mapping


BYTE_TO_UNICODE = _bytes_to_unicode()
UNICODE_TO_BYTE = {char: byte for byte, char in BYTE_TO_UNICODE.items()}


def token_to_str(token: bytes) -> str:
    """A token's bytes in GPT-2's readable alphabet: b" the" -> "Ġthe"."""
    return "".join(BYTE_TO_UNICODE[byte] for byte in token)


def str_to_token(text: str) -> bytes:
    """Inverse of `token_to_str`: "Ġthe" -> b" the". Raises KeyError for characters outside the alphabet."""
    return bytes(UNICODE_TO_BYTE[char] for char in text)


def find_layout(folder: str | Path) -> tuple[Path, Path] | None:
    """(vocabulary file, merges file) in `folder`, in either layout, or None if neither is complete."""
    folder = Path(folder)
    for vocab_name, merges_name in LAYOUTS:
        if (folder / vocab_name).is_file() and (folder / merges_name).is_file():
            return folder / vocab_name, folder / merges_name
    return None


def read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt / vocab.bpe: a "#version: 0.2" line, then one merge per line: "Ġ t", "h e", ..."""
    merges = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        line = line.rstrip("\r")
        if not line or (number == 1 and line.startswith("#version")):
            continue
        pair = line.split(" ")
        if len(pair) != 2:
            raise UserError(f"{path}, line {number}: expected two tokens separated by one space, got {line!r}")
        merges.append((pair[0], pair[1]))
    return merges


def read_tokenizer_files(folder: str | Path) -> tuple[dict[str, int], list[tuple[str, str]], dict[str, int]]:
    """(vocabulary, merges, special tokens) of GPT-2's tokenizer files in `folder`, tokens as GPT-2 spells them.

    "<|endoftext|>", if the vocabulary has it, is taken out of it and returned as the special token.
    """
    files = find_layout(folder)
    if files is None:
        raise UserError(
            f"{folder} does not hold GPT-2 tokenizer files: expected vocab.json + merges.txt "
            "(Hugging Face layout) or encoder.json + vocab.bpe (OpenAI layout)"
        )
    vocab_path, merges_path = files
    vocab = read_json(vocab_path, "GPT-2 vocabulary file")
    specials = {ENDOFTEXT: vocab.pop(ENDOFTEXT)} if ENDOFTEXT in vocab else {}
    return vocab, read_merges(merges_path), specials
