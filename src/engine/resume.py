"""Stopping a run and continuing it exactly: the loop state, the state file, Ctrl-C, a time budget.

Continuing "exactly" means the resumed run computes bit for bit the same losses and weights as an
uninterrupted one (a test checks this). That needs more than the weights:
- the optimizer state (AdamW's two running averages per parameter, and its step count);
- the gradient scaler (float16 training only);
- the loop's own counters, `LoopState`: step, best validation loss, non-finite steps, the last losses;
- every random generator: Python's, NumPy's, PyTorch's (CPU and each GPU; dropout draws from these);
- the data loader's position: for random windows of a text, each process's own random generator; for the
  shards of a prepared folder, one number (the windows read by all processes), so that run resumes on any
  number of processes at the same tokens per step;
- the settings that shape the weights, so that `--resume` with other model flags says which one differs.

All of it goes into ONE safetensors file: tensors as tensors, everything else as JSON in the file's
header metadata. One file is written atomically (temp file + rename), so the saved state is always
consistent: never new weights with an old optimizer. No pickle is involved.

A run stops early in two ways, both finishing the current step first: Ctrl-C or SIGTERM (`StopRequest`:
save and exit 0), and a time budget (`TimeBudget`: evaluate, save and end as if it were the last step,
with the learning-rate schedule fitted to the steps that fit).

Who uses it: `train.py` (all of it: `save_run` saves the checkpoint folders too, through engine/checkpoint.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import safe_open

from src.engine.checkpoint import save_checkpoint
from src.engine.config import SHAPE_SETTINGS
from src.engine.errors import UserError
from src.engine.files import load_tensors, save_tensors
from src.engine.perf import bits


@dataclass
class LoopState:
    """Where the training loop stands; saved with every checkpoint and restored by `--resume`."""

    step: int = 0  # optimizer steps taken
    best_val_loss: float = math.inf
    bad_steps: int = 0  # non-finite steps in a row (skipped); too many stop the run
    skipped_steps: int = 0  # non-finite steps in all
    # the last evaluation
    train_loss: float | None = None
    val_loss: float | None = None
    val_bits_per_byte: float | None = None
    val_bits_per_char: float | None = None
    # with a time budget (--max-seconds): the seconds trained so far and the step the schedule ends at
    seconds_trained: float = 0.0
    decay_iters: int | None = None

    def record_step(self, step: int, healthy: bool) -> None:
        """Count one optimizer step; an unhealthy one (a NaN/inf loss or gradient) was skipped."""
        self.step = step
        self.bad_steps = 0 if healthy else self.bad_steps + 1
        self.skipped_steps += not healthy

    def stop_if_stuck(self, max_bad_steps: int, loss: torch.Tensor, lr: float, out_dir: Path) -> None:
        """After `max_bad_steps` skipped steps in a row the run will not recover by itself: stop, and say why."""
        if self.bad_steps >= max_bad_steps:
            raise UserError(
                f"{self.bad_steps} steps in a row (up to step {self.step}) had a non-finite loss or gradient "
                f"(loss {loss.item()}, lr {lr:.2e}): lower --lr, use --dtype float32, or check the data; the last "
                f"good checkpoint is in {out_dir}"
            )

    def record_eval(self, train_loss: float, val_loss: float, tokens_per_byte: float, tokens_per_char: float) -> bool:
        """Keep an evaluation's losses (and validation bits per byte and per character); True if it is the best."""
        improved = val_loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val_loss)
        self.train_loss, self.val_loss = train_loss, val_loss
        self.val_bits_per_byte = bits(val_loss, tokens_per_byte)
        self.val_bits_per_char = bits(val_loss, tokens_per_char)
        return improved

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
        """From a saved state; keys this version does not know are ignored, missing ones keep their default."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class StopRequest:
    """Turns Ctrl-C and SIGTERM into a polite request: the loop finishes its step, saves, and exits 0.

    Stopping in the middle of an optimizer step could save a half-updated model, so the signal only sets
    a flag. A second Ctrl-C stops at once (the last saved checkpoint is still intact).
    """

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class TimeBudget:
    """`--max-seconds`: end training when the time is used up, with the learning rate decayed by then.

    After every step it projects how many steps fit into what is left of the budget at the speed so far,
    and moves the end of the decay (`decay_iters`) there, so the schedule ends fully decayed on a
    fast machine or a slow one. The seconds spent and the fitted end are kept in the loop state, so a
    resumed run trains for what is left, on the schedule it was on. All processes go by the slowest
    clock, so they fit the same schedule and stop at the same step. Without a budget it never ends the run
    and `decay_iters` stays at `max_iters`. Evaluations and checkpoints are not training: inside `paused()`
    the clock stops, so the budget buys the same steps however often the run evaluates.
    """

    def __init__(self, seconds: float | None, state: LoopState, max_iters: int):
        self.seconds, self.max_iters, self.state = seconds, max_iters, state
        self.start_step, self.spent_before = state.step, state.seconds_trained
        self.decay_iters = (state.decay_iters or max_iters) if seconds else max_iters
        self.started = time.time()

    @contextlib.contextmanager
    def paused(self):
        """The time spent inside does not count against the budget (nor into the speed it fits with)."""
        started = time.time()
        try:
            yield
        finally:
            self.started += time.time() - started

    def check(self, step: int, ddp) -> bool:
        """Called after `step`: re-fit `decay_iters`; True once the budget is spent."""
        if not self.seconds:
            return False
        elapsed = ddp.max(time.time() - self.started)  # the same number in every process
        left = self.seconds - self.spent_before - elapsed
        rate = (step - self.start_step) / elapsed  # steps per second
        self.decay_iters = min(self.max_iters, max(step + 1, step + int(left * rate)))
        self.state.seconds_trained, self.state.decay_iters = self.spent_before + elapsed, self.decay_iters
        return left <= 0


STATE_FILE = "resume.safetensors"
STATE_VERSION = 1


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The state of every global random generator, as (tensors, JSON-able values)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available():
        # The generator of the GPU this process trains on. Every process seeds the same and draws the same
        # numbers on its own GPU, so rank 0's state is every rank's (the other GPUs' generators in rank 0's
        # view were never used: restoring those would rewind ranks 1..N-1).
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    values = {
        "numpy": [np_kind, int(np_pos), int(np_has_gauss), float(np_gauss)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, values


def set_rng_state(tensors: dict[str, torch.Tensor], values: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    np_kind, np_pos, np_has_gauss, np_gauss = values["numpy"]
    np.random.set_state((np_kind, tensors["rng.numpy"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    py_version, py_state, py_gauss = values["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    if torch.cuda.is_available():
        state = tensors.get("rng.cuda", tensors.get("rng.cuda.0"))  # "rng.cuda.0": files of earlier versions
        if state is not None:
            torch.cuda.set_rng_state(state)  # onto this process's GPU (see rng_state)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """optimizer.state_dict() -> (tensors named 'optim.<param>.<key>', JSON for the rest)."""
    tensors, scalars = {}, {}
    for param_id, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{key}"] = value
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], values: dict) -> dict:
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith("optim."):
            _, param_id, key = name.split(".", 2)
            state.setdefault(int(param_id), {})[key] = tensor
    for name, value in values["scalars"].items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": values["param_groups"]}


def save_run(
    out_dir: Path, model, tokenizer, optimizer, scaler, loader, state: LoopState, config: dict, ddp,
    best: bool = False,
) -> None:
    """Save a run: the latest checkpoint (a Hugging Face folder), the exact training state for --resume, and
    with `best` the best/ folder too. The main process writes; every process gives its data-loader position."""
    loader_state = loader.checkpoint(ddp)  # a collective call: every process takes part
    if not ddp.is_main:
        return
    training = {**state.to_dict(), "config": config}
    if best and state.step > 0:
        save_checkpoint(out_dir / "best", model, tokenizer, training)
    save_checkpoint(out_dir, model, tokenizer, training)
    save_state(out_dir / STATE_FILE, model, optimizer, scaler, loader_state, state, config)


def save_state(
    path: str | Path, model: torch.nn.Module, optimizer, scaler, loader_state: tuple[dict[str, torch.Tensor], dict],
    state: LoopState, config: dict | None = None,
) -> None:
    """Write the complete training state to `path` (one file, atomically).

    `loader_state`: (tensors, values) from the data loader's `checkpoint`, its position on every process.
    `config`: the run's settings, which `load_state` compares with the resuming run's.
    """
    tensors = {f"model.{k}": v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    optim_tensors, optim_values = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    rng_tensors, rng_values = rng_state()
    tensors.update(rng_tensors)
    loader_tensors, loader_values = loader_state
    tensors.update(loader_tensors)  # named "loader.*"
    meta = {
        "version": STATE_VERSION,
        "loop": state.to_dict(),
        "config": config,
        "optimizer": optim_values,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": rng_values,
        "loader": loader_values,
    }
    save_tensors(path, tensors, metadata={"state": json.dumps(meta)})


def load_state(
    path: str | Path, model: torch.nn.Module, optimizer, scaler, loader, rank: int = 0, world_size: int = 1,
    config: dict | None = None,
) -> LoopState:
    """Restore everything `save_state` wrote into live objects; return the loop state.

    `rank` and `world_size` go to the data loader's `restore`, which checks the position fits this run.
    `config` (the resuming run's settings) must agree with the saved run's on every `SHAPE_SETTINGS` entry.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist (train without --resume first)")
    tensors = load_tensors(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
    except Exception as err:  # a safetensors file, but not ours
        raise UserError(f"{path} is not a resume file ({str(err)[:160]})") from None
    if meta.get("version") != STATE_VERSION:
        raise UserError(f"{path} has resume-state version {meta.get('version')}, this code reads {STATE_VERSION}")
    _check_same_run(path, meta.get("config"), config)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    _check_same_shapes(path, weights, model)
    device = next(model.parameters()).device
    model.load_state_dict(weights, strict=False)  # strict=False: lm_head is tied to wte
    optim = {k: v.to(device) for k, v in tensors.items() if k.startswith("optim.")}  # only these go to the GPU
    # load_state_dict brings back the saved groups' settings too (weight decay, betas, Muon's rate ratio), but
    # only the state (moments, momentum) belongs to the saved run: the settings are this run's flags.
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(_unflatten_optimizer(optim, meta["optimizer"]))
    except ValueError as err:  # another optimizer (a file from before --optimizer was recorded)
        raise UserError(f"{path} holds another optimizer's state than this run's ({err}); resume with the saved "
                        "run's --optimizer") from None
    for group, own in zip(optimizer.param_groups, settings, strict=True):
        group.update(own)
    if meta["scaler"] is not None:
        scaler.load_state_dict(meta["scaler"])
    loader.restore({k: v for k, v in tensors.items() if k.startswith("loader.")}, meta.get("loader") or {}, path,
                   rank, world_size)
    set_rng_state(tensors, meta["rng"])
    return LoopState.from_dict(meta["loop"])


def _flag(setting: str) -> str:
    return "--" + setting.replace("_", "-")


def _check_same_run(path: Path, saved: dict | None, config: dict | None) -> None:
    """A setting that shapes the weights must be what the saved run used (files of older versions: unchecked)."""
    if not saved or not config:
        return
    for setting in SHAPE_SETTINGS:
        if setting in saved and saved[setting] != config.get(setting):
            raise UserError(
                f"--resume: the run saved in {path.parent} used {_flag(setting)} {saved[setting]}, this command "
                f"{_flag(setting)} {config.get(setting)}; resume with the saved run's flags "
                f"(or start a new run in another --out-dir)"
            )


def _check_same_shapes(path: Path, weights: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Every saved weight must fit the model built now (a changed text can change the vocabulary, for one)."""
    expected = {k: v.shape for k, v in model.state_dict().items() if k != "lm_head.weight"}
    for name in sorted(expected.keys() | weights.keys()):
        saved, now = weights.get(name), expected.get(name)
        if saved is None or now is None or saved.shape != now:
            saved_shape = "missing" if saved is None else tuple(saved.shape)
            now_shape = "missing" if now is None else tuple(now)
            raise UserError(
                f"--resume: {path} does not fit this model: {name} is {saved_shape} there and {now_shape} here "
                "(did --data, --tokenizer or a model flag change?)"
            )
