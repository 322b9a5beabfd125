"""Snapshots: the model as it was at each evaluation, so that a learner can watch it learn.

The checkpoint in `--out-dir` is the model at the end (and `best/` the best one); a snapshot keeps the
weights of every evaluation too, so the pictures and the playground can show the same prompt through the
model at step 0 (random letters), 250 (words appear), 500, ... A run writes:

    out/snapshots/config.json               the model's config, once per run
    out/snapshots/scratch_tokenizer.json    its tokenizer, once per run
    out/snapshots/step-000250.safetensors   the weights at step 250, in float16: half the bytes of float32,
                                            and closer than a learner can see (the logits move by under 0.01)

Weights only, so a snapshot cannot resume a run (`training_state.safetensors` does that) and nothing reads
it during training. Only models up to `--snapshot-max-params` (default 50 million parameters) keep them:
the default model (0.8M parameters) keeps one of 1.7 MB per evaluation, 9 in 2,000 steps; GPT-2 124M
would keep 250 MB per evaluation, so it keeps none. A fresh run (not `--resume`) first removes the previous
run's snapshots, which belong to another model; a resumed run keeps them and overwrites the steps it
computes again.

Who uses it: `train.py` (saves one per evaluation), `pictures.py` and `playground.py` (list, load).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from src.engine.checkpoint import TOKENIZER, load_tokenizer, model_from_export
from src.engine.errors import UserError
from src.engine.files import load_tensors, read_json, save_tensors, write_json
from src.engine.gpt2_files import CONFIG
from src.tokenizer import Tokenizer

SNAPSHOTS = "snapshots"  # the folder under --out-dir
DEFAULT_MAX_PARAMS = 50_000_000
_NAME = re.compile(r"step-(\d{6,})\.safetensors")


def snapshot_file(out_dir: str | os.PathLike, step: int) -> Path:
    return Path(out_dir) / SNAPSHOTS / f"step-{step:06d}.safetensors"


class Snapshots:
    """Writes a run's snapshots. Does nothing for a model above `max_params` or on a process other than the
    main one, so the training loop calls `save` without asking."""

    def __init__(self, out_dir: str | os.PathLike, model, tokenizer: Tokenizer, max_params: int, fresh: bool,
                 enabled: bool = True):
        self.folder = Path(out_dir) / SNAPSHOTS
        self.enabled = enabled and model.num_params() <= max_params
        if not enabled:
            return
        if fresh:  # the previous run's snapshots show another model: never mix the two
            for old in [*self.folder.glob("step-*.safetensors"), self.folder / CONFIG, self.folder / TOKENIZER]:
                old.unlink(missing_ok=True)
        if self.enabled:
            config, _ = model.export(eos_token_id=tokenizer.eot_token_id)
            write_json(self.folder / CONFIG, config)
            tokenizer.save(self.folder / TOKENIZER)

    def save(self, model, step: int) -> None:
        """The weights at `step`, in float16 (written atomically)."""
        if not self.enabled:
            return
        _, tensors = model.export()
        save_tensors(snapshot_file(self.folder.parent, step), {k: v.half() for k, v in tensors.items()})


def list_snapshots(out_dir: str | os.PathLike) -> list[int]:
    """The steps of the snapshots in `out_dir`, in order ([] when there are none)."""
    folder = Path(out_dir) / SNAPSHOTS
    if not (folder / CONFIG).exists():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.fullmatch(p.name)))


def load_snapshot(out_dir: str | os.PathLike, step: int) -> tuple[torch.nn.Module, Tokenizer]:
    """(model in float32, tokenizer) as they were at `step` of the run in `out_dir`."""
    file = snapshot_file(out_dir, step)
    if not file.exists():
        steps = list_snapshots(out_dir)
        raise UserError(f"no snapshot of step {step} in {file.parent} (there are: {steps or 'none'})")
    folder = file.parent
    model = model_from_export(read_json(folder / CONFIG, "model config"), load_tensors(file), file)
    return model, load_tokenizer(folder / TOKENIZER)
