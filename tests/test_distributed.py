"""Training on two CPU processes (torchrun + gloo) is the same as one process with twice the accumulation.

With W processes, rank r trains on `BatchLoader(train, block, batch, seed=seed + r, rank=r, world_size=W)`
(its own contiguous slice of the data) and DDP averages the gradients. The reference below rebuilds that
with the library pieces in one process: the same data preparation and model initialisation, one loader
per shard, every micro-batch's loss divided by the total number of micro-batches, clipping, and the LR
schedule -- train.py's loop, written out. Only rank 0 may write files, and a run saved by 2 processes
must refuse to resume with 1.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import src.train as train_mod
from src.dataloader import BatchLoader, prepare_data
from src.engine.checkpoint import load_pretrained, read_training
from src.engine.config import parse_args
from src.engine.distributed import Distributed
from src.engine.errors import UserError
from src.engine.resume import STATE_FILE
from src.train import configure_optimizer, lr_at

WORLD = 2
ACCUM = 2  # micro-batches per process per step
FLAGS = [
    "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "4",
    "--tokens-per-step", str(4 * 16 * ACCUM * WORLD), "--max-iters", "4", "--eval-interval", "2",
    "--eval-iters", "3", "--log-interval", "1", "--warmup-iters", "2", "--lr", "1e-3", "--dropout", "0",
    "--sample-tokens", "0", "--dtype", "float32", "--peak-flops", "1e12", "--device", "cpu",
    "--compile", "off", "--seed", "1234",
]


def test_each_rank_reads_a_disjoint_contiguous_shard():
    tokens = np.arange(1000, dtype=np.int32)  # token value == position: batches reveal where they come from
    for world_size in (2, 3):
        shard = len(tokens) // world_size
        seen = []
        for rank in range(world_size):
            loader = BatchLoader(tokens, 8, 16, seed=rank, rank=rank, world_size=world_size)
            values = set()
            for _ in range(100):
                x, y = loader.next_batch()
                assert torch.equal(x[:, 1:], y[:, :-1])
                values |= set(x.flatten().tolist()) | set(y.flatten().tolist())
            assert min(values) >= rank * shard and max(values) < (rank + 1) * shard, (world_size, rank)
            assert len(values) > shard * 0.9  # and it does cover its shard
            seen.append(values)
        for a in range(world_size):
            for b in range(a + 1, world_size):
                assert not seen[a] & seen[b]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, repo_root, cli_env, tiny_text):
    """4 steps of `torchrun --nproc_per_node=2 src/train.py` on CPU (gloo). Returns (out_dir, data, proc)."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this PyTorch has no gloo backend")
    root = tmp_path_factory.mktemp("ddp")
    data = root / "input.txt"
    data.write_text(tiny_text, encoding="utf-8")
    out_dir = root / "out"
    env = {**cli_env, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "src/train.py", *FLAGS, "--data", str(data), "--out-dir", str(out_dir)]
    proc = subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out_dir, data, proc


def reference_run(data, out_dir, cache_dir) -> tuple[torch.nn.Module, list[float], list[float]]:
    """train.py's loop for 2 ranks x 2 micro-batches, in one process. Returns (model, losses, grad norms)."""
    cfg = parse_args([*FLAGS, "--data", str(data), "--out-dir", str(out_dir), "--cache-dir", str(cache_dir)])
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    prepared = prepare_data(cfg.data, cfg.block_size, cfg.cache_dir, None, cfg.tokenizer, cfg.vocab_size)
    loaders = [BatchLoader(prepared.train, cfg.block_size, cfg.batch_size, seed=cfg.seed + rank, rank=rank,
                           world_size=WORLD) for rank in range(WORLD)]
    model = train_mod.build_model(cfg, prepared.tokenizer.vocab_size)  # right after manual_seed, as in train.py
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, torch.device("cpu"), cfg.beta2)
    losses, norms = [], []
    for step in range(1, cfg.max_iters + 1):
        lr = lr_at(step - 1, cfg.lr, cfg.final_min_lr, cfg.warmup_iters, cfg.max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for loader in loaders:  # what the ranks do side by side
            for _ in range(ACCUM):
                x, y = loader.next_batch()
                _, loss = model(x, y)
                (loss / (ACCUM * WORLD)).backward()
                total += loss.item() / (ACCUM * WORLD)
        norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip).item())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(total)
    return model, losses, norms


def test_two_processes_equal_one_process_with_twice_the_accumulation(ddp_run, tmp_path):
    out_dir, data, proc = ddp_run
    assert "2 process(es)" in proc.stdout
    reference, losses, norms = reference_run(data, tmp_path / "unused", tmp_path / "cache")
    trained, _ = load_pretrained(out_dir)
    training = read_training(out_dir)
    assert training["step"] == 4
    for name, tensor in reference.named_parameters():
        torch.testing.assert_close(dict(trained.named_parameters())[name], tensor, atol=1e-6, rtol=1e-5, msg=name)
    train_rows = [r for r in rows(out_dir) if r["event"] == "train"]
    # The logged loss is the mean over both ranks, the gradient norm that of the averaged gradient: both
    # would be off by the factor if a micro-batch's loss were not divided by the number of micro-batches.
    assert [r["train_loss"] for r in train_rows] == pytest.approx(losses, abs=1e-5)
    assert [r["grad_norm"] for r in train_rows] == pytest.approx(norms, rel=1e-4)
    assert [r["tokens"] for r in train_rows] == [step * 256 for step in range(1, 5)]
    # Sanity: training moved the weights away from the initialisation.
    torch.manual_seed(1234)
    initial = train_mod.build_model(parse_args([*FLAGS]), reference.config.vocab_size)
    assert not torch.allclose(initial.transformer.h[0].mlp.c_fc.weight, reference.transformer.h[0].mlp.c_fc.weight)


def test_evaluation_under_ddp_is_the_mean_over_all_eval_batches(ddp_run, tmp_path):
    """Each rank evaluates its share of the fixed batches (2 + 1 here); the logged loss must still be the plain
    mean over all of them, as one process computes it -- not the mean of the ranks' means."""
    out_dir, data, _ = ddp_run
    cfg = parse_args([*FLAGS, "--data", str(data), "--out-dir", str(tmp_path / "unused"),
                      "--cache-dir", str(tmp_path / "cache")])
    val_tokens = prepare_data(cfg.data, cfg.block_size, cfg.cache_dir, None, cfg.tokenizer, cfg.vocab_size).val
    batches = BatchLoader(val_tokens, cfg.block_size, cfg.batch_size, split="validation").fixed_batches(cfg.eval_iters)
    assert len(batches) == 3  # not a multiple of the 2 processes
    model, _ = load_pretrained(out_dir)  # the final weights: the last evaluation row measured them
    expected = train_mod.estimate_loss(model, batches, contextlib.nullcontext(), Distributed())
    logged = [r for r in rows(out_dir) if r["event"] == "eval"][-1]["val_loss"]
    assert logged == pytest.approx(expected, abs=2e-5)


def rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def test_only_rank_0_writes_and_prints(ddp_run):
    out_dir, _, proc = ddp_run
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted([".lock", "best", "config.json", "loss.png", "metrics.jsonl", "model.safetensors",
                            STATE_FILE, "scratch_tokenizer.json", "snapshots", "training.json"])  # no second copy,
    assert sorted(p.name for p in (out_dir / "snapshots").iterdir()) == [  # no temp file: one snapshot per evaluation
        "config.json", "scratch_tokenizer.json", "step-000000.safetensors", "step-000002.safetensors",
        "step-000004.safetensors"]
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines))
    assert [r["step"] for r in rows(out_dir) if r["event"] == "train"] == [1, 2, 3, 4]
    assert [r["step"] for r in rows(out_dir) if r["event"] == "eval"] == [0, 2, 4]
    assert proc.stdout.count("training text:") == 1 and proc.stdout.count("step      4:") == 1
    # The resume state holds every rank's loader position, and they differ (different seeds and shards).
    from safetensors.torch import load_file

    state = load_file(str(out_dir / STATE_FILE))
    generators = sorted(k for k in state if k.startswith("loader.generator."))
    assert generators == ["loader.generator.0", "loader.generator.1"]
    assert not torch.equal(state["loader.generator.0"], state["loader.generator.1"])


def test_resume_with_another_process_count_is_a_clear_error(ddp_run, run_cli, tmp_path, digest):
    out_dir, data, _ = ddp_run
    copy = tmp_path / "out"
    shutil.copytree(out_dir, copy)
    before = digest(copy)
    proc = run_cli("src/train.py", *FLAGS, "--max-iters", "6", "--data", data, "--out-dir", copy, "--resume")
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "2 process(es)" in lines[0] and "resume with 2, not 1" in lines[0], lines[0]
    after = digest(copy)
    assert after.keys() == before.keys()  # no file added or removed
    # Nothing was overwritten but .lock: the refused run held the folder, and its lock file names the holder.
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


def test_world_size_is_part_of_the_accumulation_arithmetic(run_cli, tmp_path, ddp_run):
    """--tokens-per-step must divide by batch x block x processes: 2 processes cannot do 3 micro-batches."""
    _, data, _ = ddp_run
    flags = list(FLAGS)
    flags[flags.index("--tokens-per-step") + 1] = str(4 * 16 * 3)
    proc = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "src/train.py", *flags,
                   "--data", data, "--out-dir", tmp_path / "out", timeout=180)
    assert proc.returncode != 0
    assert "is not a multiple of batch_size x block_size x processes = 128" in proc.stderr + proc.stdout


class TwoProcesses(Distributed):
    """Rank 0 of two, where the other process's answer to `any` is given: no process group needed."""

    def __init__(self, other_failed: bool):
        super().__init__(rank=0, local_rank=0, world_size=2)
        self.other_failed = other_failed

    def any(self, flag: bool) -> bool:
        return flag or self.other_failed


def test_an_error_on_one_process_stops_every_process():
    """A data folder missing on one machine: its processes raise, and so do the others, instead of waiting in
    the next collective call for processes that have left."""
    assert TwoProcesses(other_failed=False).together(lambda: 42) == 42
    with pytest.raises(UserError, match="another training process stopped"):
        TwoProcesses(other_failed=True).together(lambda: 42)

    def fails():
        raise UserError("data file not found: x.txt")

    with pytest.raises(UserError, match="data file not found"):
        TwoProcesses(other_failed=False).together(fails)
    assert Distributed().together(lambda: "one process") == "one process"
