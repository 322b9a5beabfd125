"""Reading and writing files safely: atomic writes, JSON objects, tensor files.

Every write goes to a temporary file beside the target and is renamed into place, so a crash (even
`kill -9`) in the middle of a save leaves the previous file intact. Every read turns a missing or broken
file into a one-line `UserError` that names the file.

Tensors are stored as safetensors, never pickle: a safetensors file holds only numbers and a JSON header,
so loading one cannot run code. Older Hugging Face folders carry `pytorch_model.bin` (a pickle); it is read
with `weights_only=True`, which refuses anything but tensors and plain containers.

Who uses it: everything that saves or loads: checkpoints, tokenizer files, token caches, metrics, the resume
state, the model's `from_pretrained`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from src.engine.errors import UserError

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported inside the two tensor functions, not here: the tokenizers import this
# module, and the tokenizing worker processes of prepare.py must start without loading PyTorch.


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place.

    A rename within one folder is atomic: a reader (or a crash) sees either the old file or the new
    one, never half of each. `fsync` makes sure the bytes are on disk before the rename. A write that fails
    (a full disk, Ctrl-C) removes its temporary file; only `kill -9` can leave one behind.
    """
    path = Path(path)
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"cannot write {path}: {path.parent} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a read-only folder
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {err.strerror or err}; the previous file is untouched") from None
    except BaseException:  # Ctrl-C: the temporary file goes too
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data: dict) -> None:
    """A JSON object, indented for reading, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike, what: str = "file") -> dict:
    """A JSON object from `path`, or a UserError naming the `what` that is missing or broken."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a {what}: it does not hold a JSON object")
    return data


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Tensors (contiguous, any device) as a safetensors file, atomically; `metadata` goes into its header."""
    from safetensors.torch import save as safetensors_bytes

    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"format": "pt", **(metadata or {})}))


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or of a legacy PyTorch `.bin` (read with weights_only=True).

    A truncated or garbage file, and a pickle that `weights_only` refuses, all end in one UserError.
    """
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # to the user it is all "corrupt"
        raise UserError(f"{path} is corrupt or truncated ({str(err)[:200]}); re-train or restore it") from None
