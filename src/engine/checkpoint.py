"""Checkpoint folders: saving a model with its tokenizer, loading both back, and a run's hold on its folder.

A checkpoint folder holds:
    config.json              GPT-2's config, as Hugging Face writes it (model_type "gpt2"; a bigram's
                             folder: "bigram", which only this project reads)
    model.safetensors        the weights, under Hugging Face's names and layout
    scratch_tokenizer.json   our tokenizer (char or BPE), so sampling needs nothing but this folder
    training.json            our training metadata: step, losses, the training settings

So `transformers.GPT2LMHeadModel.from_pretrained(folder)` loads the GPT that `train.py` saved, and
`load_pretrained(folder)` here loads a folder that Hugging Face saved, or a released GPT-2 by name
("gpt2", downloaded once). How GPT-2's weights map onto our model (the Conv1D transposes, the tied head)
is model.py's business (`GPT.export`, `GPT.from_pretrained`); this file only moves folders. It is also the
one place that looks at what kind of model or tokenizer a folder holds ("model_type", "type"), to build
the right class.

(Our tokenizer file is not named `tokenizer.json`, because that name means a Hugging Face `tokenizers` file.)

Every file is written to a temporary name and renamed into place, so a crash in the middle of a save
leaves each file whole, the previous one or the new one, never a broken one (a crash between two renames
can leave the new weights beside the previous save's training.json); and weights that are not finite are
never saved at all.

`RunLock`: a training run holds its output folder, so a second run started on the same folder is refused
instead of interleaving its metrics and checkpoints with the first one's.

Who uses it: `train.py` (saving, `--init-from`, the lock), `sample.py` (`load_pretrained`), the README.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

from src.bigram import BigramConfig, BigramLanguageModel
from src.bpe import load_tokenizer
from src.engine.corpus import CACHE_DIR
from src.engine.errors import UserError
from src.engine.files import load_tensors, read_json, save_tensors, write_json
from src.engine.gpt2_files import CONFIG, LEGACY_WEIGHTS, WEIGHTS
from src.engine.hub import resolve_pretrained
from src.engine.quantize import is_quantized
from src.engine.tokenizers import gpt2_tokenizer
from src.model import GPT, config_from_hf
from src.tokenizer import Tokenizer

try:
    import fcntl  # POSIX file locks
except ImportError:  # Windows
    fcntl = None

TOKENIZER = "scratch_tokenizer.json"
TRAINING = "training.json"


# --- saving ------------------------------------------------------------------------------------------------


def save_checkpoint(out_dir: str | os.PathLike, model, tokenizer: Tokenizer, training: dict | None = None) -> None:
    """Write model, tokenizer and training metadata into `out_dir` (each file atomically).

    Refuses an int8-quantized model (its weights are not what a GPT-2 folder holds) and weights that are
    not all finite (a diverged run must not overwrite the last good checkpoint).
    """
    out_dir = Path(out_dir)
    if is_quantized(model):
        raise ValueError("an int8-quantized model is for generation only: save the float model instead")
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise UserError(
            f"the weights are no longer finite numbers (the training diverged: lower --lr?); not saving them, "
            f"so {out_dir} keeps its last good checkpoint"
        )
    config, tensors = model.export(eos_token_id=tokenizer.eot_token_id)
    save_tensors(out_dir / WEIGHTS, tensors)
    write_json(out_dir / CONFIG, config)
    tokenizer.save(out_dir / TOKENIZER)
    write_json(out_dir / TRAINING, training or {})


# --- loading -----------------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike, block_size: int | None = None, dropout: float | None = None,
               attn_dropout: float | None = None):
    """The model of a checkpoint folder (ours or a Hugging Face GPT-2 folder), or of a released GPT-2 by name.

    For fine-tuning, `block_size` can shorten the context (GPT-2's is 1024; see `GPT.crop_block_size`) and
    `dropout` replaces the saved dropout rates, the attention weights' too unless `attn_dropout` sets that.
    """
    path = resolve_pretrained(path)
    if not path.is_dir():
        raise UserError(f"no checkpoint folder at {path} (train one with: python src/train.py --out-dir {path})")
    if not (path / CONFIG).exists() or not any((path / name).exists() for name in (WEIGHTS, LEGACY_WEIGHTS)):
        raise UserError(
            f"no checkpoint in {path}: expected {CONFIG} and {WEIGHTS} "
            f"(train one with: python src/train.py --out-dir {path})"
        )
    config = read_json(path / CONFIG, "model config")
    if config.get("model_type") == "bigram":
        return model_from_export(config, load_tensors(path / WEIGHTS), path / WEIGHTS)
    return GPT.from_pretrained(path, block_size=block_size, dropout=dropout, attn_dropout=attn_dropout)


def model_from_export(config: dict, tensors: dict[str, torch.Tensor], source: str | os.PathLike):
    """The inverse of `model.export()`: a model (in float32) from its config.json and its tensors.

    `source` names the weights in an error. Used for the bigram's folders and for training snapshots.
    """
    tensors = {name: tensor.float() for name, tensor in tensors.items()}
    try:
        if config.get("model_type") == "bigram":
            model = BigramLanguageModel(BigramConfig(config["vocab_size"], config.get("block_size", 1)))
            model.load_state_dict(tensors)
            return model
        model = GPT(config_from_hf(config))
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise UserError(f"{source} does not match its config.json: {str(err).splitlines()[0]}") from None
    model.load_hf_state_dict(tensors)
    return model


def folder_tokenizer(path: str | os.PathLike, cache_dir: str | os.PathLike = CACHE_DIR) -> Tokenizer:
    """The tokenizer a model folder was trained with: ours if the folder holds one, else GPT-2's (a Hugging
    Face GPT-2 folder, or a released model's name, carries no tokenizer of ours)."""
    path = Path(path)
    if (path / TOKENIZER).exists():
        return load_tokenizer(path / TOKENIZER)
    return gpt2_tokenizer(cache_dir)


def load_pretrained(path: str | os.PathLike) -> tuple[torch.nn.Module, Tokenizer]:
    """(model, tokenizer) of a checkpoint folder, a Hugging Face GPT-2 folder, or a released GPT-2 by name.

        model, tokenizer = load_pretrained("out")
        ids = tokenizer.encode("ROMEO:")
        print(tokenizer.decode(model.generate(ids, max_new_tokens=100)))

    Decoding with the folder's own tokenizer matters: the module-level `decode` of `src.tokenizer` knows
    only the default text's characters, not a BPE vocabulary or another text's characters.
    """
    folder = resolve_pretrained(path)
    model = load_model(folder)
    if not (folder / TOKENIZER).exists() and not isinstance(model, GPT):
        raise UserError(f"tokenizer file not found: {folder / TOKENIZER}")
    tokenizer = folder_tokenizer(folder)
    if tokenizer.vocab_size != model.config.vocab_size:
        source = folder / TOKENIZER if (folder / TOKENIZER).exists() else "GPT-2's tokenizer"
        raise UserError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model {model.config.vocab_size}: "
            f"{source} does not belong to this checkpoint"
        )
    return model, tokenizer


def read_training(path: str | os.PathLike) -> dict:
    """The training metadata of a checkpoint folder (step, losses, settings); {} for a folder without any."""
    file = Path(path) / TRAINING
    return read_json(file, "training metadata file") if file.exists() else {}


# --- a run holds its folder ----------------------------------------------------------------------------------


class RunLock:
    """Holds `out_dir/.lock` while a training run writes into `out_dir`; a second run there is refused.

    The lock is an operating-system file lock (`flock`), so it dies with its process: a lock left behind by a
    killed run (kill -9, a crash, a power cut) is stale, and the next run simply takes it over. The file also
    says who holds it (process id, machine, start time, command), for the message a refused run prints.
    Where `flock` does not exist (Windows, some network file systems), the process id decides: a lock whose
    process is gone is stale.
    """

    NAME = ".lock"

    def __init__(self, out_dir: str | os.PathLike, hold: bool = True):
        """`hold=False` (the other processes of a multi-process run): a lock that does nothing."""
        self.path = Path(out_dir) / self.NAME
        self.hold = hold
        self.file = None

    def __enter__(self) -> RunLock:
        if not self.hold:
            return self
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # the folder, or a folder above it, is a file
            raise UserError(f"--out-dir {folder} is a file, or inside one: choose another --out-dir") from None
        except OSError as err:
            raise UserError(f"cannot create --out-dir {folder}: {err.strerror}") from None
        try:
            self.file = open(self.path, "a+", encoding="utf-8")  # held open until __exit__
        except OSError as err:  # a read-only folder, someone else's
            raise UserError(f"cannot write in --out-dir {folder}: {err.strerror}") from None
        if not self._acquire():
            holder = self._holder()
            self.file.close()
            raise UserError(
                f"{folder} is in use by another training run ({holder}); wait for it to finish, stop it, "
                "or choose another --out-dir"
            )
        self.file.seek(0)
        self.file.truncate()
        self.file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                    "command": " ".join(sys.argv)}) + "\n")
        self.file.flush()
        return self

    def _acquire(self) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError as err:
                if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    return False  # another process holds it
                # a file system without flock (some network mounts): fall back to the process id
        holder = self._read()
        return not holder or holder.get("pid") == os.getpid() or not _process_alive(holder.get("pid"))

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}

    def _holder(self) -> str:
        holder = self._read()
        if not holder:
            return "no details recorded"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
        return f"process {holder.get('pid')} on {holder.get('host')}, started {started}: {holder.get('command')}"

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()  # releases the flock; the file stays, harmless, for the next run to take
            self.file = None


def _process_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True
