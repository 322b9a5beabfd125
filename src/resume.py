"""Everything an interrupted training run needs to continue exactly as if it had never stopped.

Continuing "exactly" means the resumed run computes bit for bit the same losses and weights as an
uninterrupted one (a test checks this). That needs more than the weights:
- the optimizer state (AdamW's two running averages per parameter, and its step count);
- the gradient scaler (float16 training only);
- the loop's own counters: step, best validation loss, number of skipped steps;
- every random generator: Python's, NumPy's, PyTorch's (CPU and each GPU; dropout draws from these),
  and the data loader's own generator, which *is* the loader's position in its random sequence.

All of it goes into ONE safetensors file: tensors as tensors, everything else as JSON in the file's
header metadata. One file is written atomically (temp file + rename), so the saved state is always
consistent: never new weights with an old optimizer. No pickle is involved.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from src.corpus import atomic_write_bytes
from src.errors import UserError

STATE_FILE = "resume.safetensors"
STATE_VERSION = 1


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """The state of every global random generator, as (tensors, JSON-able values)."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    tensors = {"rng.torch": torch.get_rng_state(), "rng.numpy": torch.from_numpy(np_keys.astype(np.int64))}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
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
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)


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


def save_state(
    path: str | Path, model: torch.nn.Module, optimizer, scaler, loader_states: list[torch.Tensor], loop: dict
) -> None:
    """Write the complete training state to `path` (one file, atomically).

    `loader_states`: the data loader's generator state of every process (one entry for one process).
    """
    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    optim_tensors, optim_values = _flatten_optimizer(optimizer.state_dict())
    tensors.update({k: v.detach().cpu() for k, v in optim_tensors.items()})
    rng_tensors, rng_values = rng_state()
    tensors.update(rng_tensors)
    for rank, state in enumerate(loader_states):
        tensors[f"loader.generator.{rank}"] = state
    meta = {
        "version": STATE_VERSION,
        "loop": loop,
        "optimizer": optim_values,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": rng_values,
    }
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={"format": "pt", "state": json.dumps(meta)}))


def load_state(
    path: str | Path, model: torch.nn.Module, optimizer, scaler, loader, rank: int = 0, world_size: int = 1
) -> dict:
    """Restore everything `save_state` wrote into live objects; return the loop counters.

    `rank` picks this process's data-loader position; resuming needs as many processes as were saved.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"nothing to resume: {path} does not exist (train without --resume first)")
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            meta = json.loads(f.metadata()["state"])
    except Exception as err:  # truncated or foreign file
        raise UserError(f"{path} is corrupt or not a resume file ({str(err)[:160]})") from None
    if meta.get("version") != STATE_VERSION:
        raise UserError(f"{path} has resume-state version {meta.get('version')}, this code reads {STATE_VERSION}")
    device = next(model.parameters()).device
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights, strict=False)  # strict=False: lm_head is tied to wte
    except RuntimeError as err:
        raise UserError(f"{path} was saved by a model of another shape: {str(err).splitlines()[1:2]}") from None
    optimizer.load_state_dict(_unflatten_optimizer({k: v.to(device) for k, v in tensors.items()}, meta["optimizer"]))
    if meta["scaler"] is not None:
        scaler.load_state_dict(meta["scaler"])
    saved_ranks = sum(1 for k in tensors if k.startswith("loader.generator."))
    if saved_ranks != world_size:  # each process's slice of the data depends on the number of processes
        raise UserError(f"{path} was saved by {saved_ranks} process(es); resume with {saved_ranks}, not {world_size}")
    loader.load_state_dict({"generator": tensors[f"loader.generator.{rank}"]})
    set_rng_state(tensors, meta["rng"])
    return meta["loop"]
