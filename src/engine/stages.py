"""Stages: the models a training run left behind, named by their place under `--out-dir`.

    "."                      the latest checkpoint (the run's folder itself; or a GPT-2 folder given as --out-dir)
    "best"                   the best one (any checkpoint folder directly under --out-dir is a stage)
    "snapshots/step-000250"  the weights at step 250 (engine/snapshots.py)

A name is a path relative to `--out-dir`, and `load_stage` refuses any that leads outside it ("..", an
absolute path, a symbolic link out), because the playground takes stage names from a web page.

Who uses it: `pictures.py` (`--stage`) and `playground.py` (the stage slider).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from src.engine.checkpoint import load_pretrained, read_training
from src.engine.errors import UserError
from src.engine.gpt2_files import CONFIG
from src.engine.snapshots import SNAPSHOTS, list_snapshots, load_snapshot
from src.tokenizer import Tokenizer

_SNAPSHOT = re.compile(rf"{SNAPSHOTS}/step-(\d{{6,}})")


@dataclass
class Stage:
    name: str  # what `load_stage` takes: a path relative to --out-dir
    label: str  # what a person reads: "step 250", "best (step 1750)", "latest (step 2000)"
    step: int | None  # the training step, where known (None for a folder without training.json)


def is_checkpoint(folder: Path) -> bool:
    return (folder / CONFIG).is_file() and folder.name != SNAPSHOTS


def list_stages(out_dir: str | os.PathLike) -> list[Stage]:
    """Every stage under `out_dir`: snapshots by step, then checkpoint folders, the latest last."""
    out_dir = Path(out_dir)
    stages = [Stage(f"{SNAPSHOTS}/step-{step:06d}", f"step {step}", step) for step in list_snapshots(out_dir)]
    root = out_dir.resolve()
    folders = sorted(p for p in out_dir.iterdir() if p.is_dir() and is_checkpoint(p)
                     and p.resolve().is_relative_to(root)) if out_dir.is_dir() else []  # no links out
    for folder, name in [(p, p.name) for p in folders] + ([(out_dir, ".")] if is_checkpoint(out_dir) else []):
        step = read_training(folder).get("step")
        label = "latest" if name == "." else name
        stages.append(Stage(name, f"{label} (step {step})" if step is not None else label, step))
    return stages


def stage_path(out_dir: str | os.PathLike, name: str) -> Path:
    """The path a stage name stands for, refusing one outside `out_dir` (one line)."""
    if not name:
        raise UserError("no stage name given")
    root = Path(out_dir).resolve()
    target = (root / name).resolve()  # resolves "..", and symbolic links too
    if Path(name).is_absolute() or not target.is_relative_to(root):
        raise UserError(f"stage {name!r} is outside the output folder")
    return target


def load_described(out_dir: str, name: str) -> tuple[torch.nn.Module, Tokenizer, str]:
    """(model, tokenizer, which model it is, in words) of a stage of a run, or, for the stage "." of a path
    that is no folder, a released GPT-2 by name ("gpt2"). The commands that look at a model start here."""
    if not Path(out_dir).is_dir():
        if name == ".":  # a released GPT-2 by name, or a one-line error for a missing folder
            model, tokenizer = load_pretrained(out_dir)
            return model, tokenizer, str(out_dir)
        raise UserError(f"no output folder at {out_dir} (train one with: python src/train.py --out-dir {out_dir})")
    model, tokenizer = load_stage(out_dir, name)
    label = next((s.label for s in list_stages(out_dir) if s.name == name), name)
    return model, tokenizer, f"{out_dir}: {label}"


def load_stage(out_dir: str | os.PathLike, name: str) -> tuple[torch.nn.Module, Tokenizer]:
    """(model, tokenizer) of the stage `name` under `out_dir`."""
    target = stage_path(out_dir, name)
    relative = target.relative_to(Path(out_dir).resolve()).as_posix()
    if match := _SNAPSHOT.fullmatch(relative):
        return load_snapshot(out_dir, int(match.group(1)))
    if target.is_dir() and is_checkpoint(target):
        return load_pretrained(target)
    raise UserError(f"no stage {name!r} in {out_dir} (a checkpoint folder, or snapshots/step-NNNNNN)")

