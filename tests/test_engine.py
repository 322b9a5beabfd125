"""The training engine (src/train.py): exact resume, clean stops on signals, crash-safe saving, non-finite
steps, gradient accumulation, presets, precision, torch.compile, and what a run records.

Most runs here call `src.train.train(cfg)` in this process (a tiny model trains a step in milliseconds);
the tests about signals, exit codes and crashes start real subprocesses. Everything is written under
pytest's tmp_path: `--data` and `--out-dir` always point there, the token cache is redirected there for
in-process runs, and `--peak-flops` skips the hardware probe (which would write its cache in the repo).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import src.train as train_mod
from src.dataloader import BatchLoader
from src.engine import errors
from src.engine.checkpoint import load_pretrained, read_training, save_checkpoint
from src.engine.config import PRESETS, TrainConfig, parse_args
from src.engine.distributed import Distributed
from src.engine.errors import UserError
from src.engine.metrics import MetricsLog, optimizer_line
from src.engine.precision import Precision, autocast, resolve_dtype
from src.engine.resume import STATE_FILE, LoopState, load_state, save_state
from src.engine.snapshots import list_snapshots, snapshot_file
from src.model import GPT, GPTConfig
from src.tokenizer import CharTokenizer
from src.train import configure_optimizer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A one-layer model on 16-token windows: a step takes a few milliseconds.
TINY = [
    "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "4",
    "--eval-iters", "2", "--sample-tokens", "0", "--dtype", "float32", "--peak-flops", "1e12",
    "--device", "cpu", "--compile", "off", "--log-interval", "1", "--seed", "1234",
]
TIMING_KEYS = ("tokens_per_s", "flops_per_s", "mfu")  # the only fields two identical runs may disagree on


# --- helpers -----------------------------------------------------------------------------------------------


@pytest.fixture
def engine(tmp_path, text_file):
    """`engine(out_dir, *flags)`: run train() in this process on the tiny text; returns its LoopState."""

    def run(out_dir, *flags):  # --cache-dir: the token cache out of the repo
        return train_mod.train(config(text_file, out_dir, "--cache-dir", tmp_path / "cache", *flags))

    return run


def config(text_file, out_dir, *flags) -> TrainConfig:
    return parse_args([*TINY, "--data", str(text_file), "--out-dir", str(out_dir), *map(str, flags)])


def rows(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]


def repeatable(metrics: list[dict]) -> list[dict]:
    """Metrics rows without the timing fields."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in metrics]


def tensors(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def state_meta(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["state"])


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{what}: {different[:5]} differ"


@contextlib.contextmanager
def sigterm_during_step(step: int, accum: int = 1):
    """Deliver a real SIGTERM to this process while the training loop draws the first batch of `step`.

    The loader is the only caller of `next_batch` (evaluation uses fixed batches), so its calls count steps.
    """
    real = BatchLoader.next_batch
    calls = []

    def next_batch(self):
        calls.append(1)
        if len(calls) == (step - 1) * accum + 1:
            signal.raise_signal(signal.SIGTERM)  # StopRequest's handler sets its flag
        return real(self)

    BatchLoader.next_batch = next_batch
    try:
        yield
    finally:
        BatchLoader.next_batch = real


# --- resume is bitwise exact ----------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_bitwise_exact(engine, tmp_path, capsys, optimizer):
    """N steps straight == stop at step k (SIGTERM) + --resume to N: same losses, lr, gradient norms, weights,
    optimizer and random-generator state, bit for bit. Dropout > 0 makes the RNG restore matter, the LR
    changes at every step (warmup 2, cosine to 12), and 2 micro-batches per step exercise accumulation."""
    flags = ["--max-iters", "12", "--eval-interval", "4", "--warmup-iters", "2", "--dropout", "0.1",
             "--lr", "3e-3", "--tokens-per-step", "128", "--optimizer", optimizer]  # 128 = 2 x (4 x 16)
    straight_dir = tmp_path / "straight"
    straight = engine(straight_dir, *flags)
    expected = repeatable(rows(straight_dir))
    train_rows = [r for r in expected if r["event"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 13))
    assert [r["tokens"] for r in train_rows] == [128 * s for s in range(1, 13)]
    lrs = [r["lr"] for r in train_rows]
    assert lrs[0] < lrs[1] and lrs[4] > lrs[8] > lrs[11] and len(set(lrs)) >= 10, lrs  # warmup, then decay

    for stop in (4, 7):  # at an evaluation step, and between two evaluations
        out = tmp_path / f"stopped-{stop}"
        capsys.readouterr()
        with sigterm_during_step(stop, accum=2):
            engine(out, *flags)
        printed = capsys.readouterr().out
        assert f"stopped at step {stop}" in printed and "--resume" in printed, printed
        assert max(r["step"] for r in rows(out)) == stop
        assert state_meta(out / STATE_FILE)["loop"]["step"] == stop
        assert json.loads((out / "training.json").read_text())["step"] == stop  # not the last evaluation's step

        resumed = engine(out, *flags, "--resume")
        assert f"resumed from {out / STATE_FILE} at step {stop}" in capsys.readouterr().out
        assert repeatable(rows(out)) == expected, f"metrics differ after resuming at step {stop}"
        assert resumed.val_loss == straight.val_loss and resumed.train_loss == straight.train_loss
        assert_same_tensors(tensors(out / "model.safetensors"), tensors(straight_dir / "model.safetensors"),
                            f"final weights (resumed at {stop})")
        assert_same_tensors(tensors(out / "best" / "model.safetensors"),
                            tensors(straight_dir / "best" / "model.safetensors"), f"best weights (resumed at {stop})")
        # The whole training state too: optimizer moments and step counts, every RNG, the loader position.
        assert_same_tensors(tensors(out / STATE_FILE), tensors(straight_dir / STATE_FILE), f"state ({stop})")
        assert state_meta(out / STATE_FILE)["loop"] == state_meta(straight_dir / STATE_FILE)["loop"]
        # and the snapshots of every evaluation are the straight run's: the resume neither lost nor mixed any
        assert list_snapshots(out) == list_snapshots(straight_dir) == [0, 4, 8, 12]
        for step in (0, 4, 8, 12):
            assert_same_tensors(tensors(snapshot_file(out, step)), tensors(snapshot_file(straight_dir, step)),
                                f"snapshot {step} (resumed at {stop})")


# --- signals ---------------------------------------------------------------------------------------------------


def wait_for_train_step(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 90) -> None:
    """Poll metrics.jsonl until a training row of `step` or later is there (or fail after `timeout`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended before the signal: {proc.communicate()}")
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            if any(json.loads(x).get("event") == "train" and json.loads(x)["step"] >= step for x in lines[:-1]):
                return  # (the last line may be half-written)
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no training step {step} logged within {timeout} s")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_saves_and_exits_0(sig, tmp_path, text_file, repo_root, cli_env, run_cli):
    out = tmp_path / "out"
    flags = [*TINY, "--data", str(text_file), "--out-dir", str(out), "--max-iters", "1000000",
             "--eval-interval", "1000000"]  # no periodic save: only the signal's save can write a checkpoint
    proc = subprocess.Popen([sys.executable, "src/train.py", *flags], cwd=repo_root, env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_train_step(proc, out / "metrics.jsonl", 3)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    match = re.search(r"stopped at step (\d+)", stdout)
    assert match, stdout
    stopped = int(match.group(1))
    assert 3 <= stopped < 1000000
    assert f"python src/train.py --resume --out-dir {out}" in stdout, stdout

    model, tokenizer = load_pretrained(out)
    assert isinstance(model, GPT) and model.config.n_layer == 1
    assert (out / "loss.png").read_bytes().startswith(PNG_SIGNATURE)
    assert max(r["step"] for r in rows(out) if r["event"] == "train") == stopped  # --log-interval 1
    optimizer = configure_optimizer(model, 1e-3, 0.1, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loader = BatchLoader(torch.zeros(100, dtype=torch.int64).numpy(), 16, 4)
    loop = load_state(out / STATE_FILE, model, optimizer, scaler, loader)
    assert loop.step == stopped
    assert all(int(s["step"]) == stopped for s in optimizer.state.values())  # AdamW took every step

    if sig == signal.SIGINT:  # and --resume picks the run up where it stopped
        more = run_cli("src/train.py", *[f if f != "1000000" else str(stopped + 2) for f in flags], "--resume")
        assert more.returncode == 0, more.stderr
        assert f"at step {stopped}" in more.stdout
        assert [r["step"] for r in rows(out) if r["event"] == "train"] == list(range(1, stopped + 3))


# --- kill -9 while saving ------------------------------------------------------------------------------------

SAVER = """
import sys
sys.path.insert(0, {repo!r})
import torch
from src.engine.checkpoint import load_pretrained, read_training, save_checkpoint
from src.engine.resume import LoopState, save_state
from src.train import configure_optimizer

folder = {folder!r}
model, tokenizer = load_pretrained(folder)
training = read_training(folder)
optimizer = configure_optimizer(model, 1e-3, 0.1, torch.device("cpu"))
for p in model.parameters():
    p.grad = torch.zeros_like(p)
optimizer.step()  # creates AdamW's moments
scaler = torch.amp.GradScaler("cpu", enabled=False)
generator = torch.Generator().manual_seed(0)
i = training["iter"]
print("ready", flush=True)
while True:  # every version i is all-i weights and moments, so a mixture of two versions would show
    i += 1
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(i)
        for s in optimizer.state.values():
            s["exp_avg"].fill_(i)
            s["exp_avg_sq"].fill_(i)
    save_checkpoint(folder, model, tokenizer, {{"iter": i}})
    loader = ({{"loader.generator.0": generator.get_state()}}, {{}})
    save_state(folder + "/resume.safetensors", model, optimizer, scaler, loader, LoopState(step=i))
"""


def only_value(named: dict[str, torch.Tensor]) -> float:
    """The single value every tensor is filled with (fails for a mixture)."""
    values = {float(v) for t in named.values() for v in t.detach().unique()}
    assert len(values) == 1, f"tensors from different versions: {sorted(values)[:5]}"
    return values.pop()


def wait_for_a_save(folder: Path, after: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Poll training.json (replaced atomically) until the saver has completed a save past version `after`."""
    deadline = time.time() + timeout
    while json.loads((folder / "training.json").read_text())["iter"] <= after:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, f"no save within {timeout} s"
        time.sleep(0.01)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_kill_9_while_saving_leaves_a_loadable_checkpoint(tmp_path, repo_root, cli_env):
    folder = tmp_path / "ckpt"
    config = GPTConfig(vocab_size=48, block_size=64, n_layer=3, n_head=4, d_model=160)  # ~1M parameters
    model = GPT(config)
    tokenizer = CharTokenizer.from_text("".join(chr(32 + i) for i in range(48)))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    optimizer = configure_optimizer(model, 1e-3, 0.1, torch.device("cpu"))
    save_checkpoint(folder, model, tokenizer, {"iter": 0})
    save_state(folder / STATE_FILE, model, optimizer, torch.amp.GradScaler("cpu", enabled=False),
               ({"loader.generator.0": torch.Generator().get_state()}, {}), LoopState(step=0))
    assert (folder / "model.safetensors").stat().st_size > 3_000_000
    script = tmp_path / "saver.py"
    script.write_text(SAVER.format(repo=str(repo_root), folder=str(folder)))

    rng = random.Random(0)
    last = 0
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, str(script)], env=cli_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready", proc.communicate()[1]
            # The loop is running, and has saved a whole state: its first checkpoint is version last or last + 1,
            # so one past last + 1 is at least its second, written after its first state. (Killed before that,
            # it could leave the previous round's state two versions behind the weights.)
            wait_for_a_save(folder, after=last + 1, proc=proc)
            time.sleep(rng.uniform(0.0, 0.3))  # ... then a random moment in it
            proc.kill()  # SIGKILL: no handler, no cleanup
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == -signal.SIGKILL

        model, loaded_tokenizer = load_pretrained(folder)  # temp files beside it do no harm
        training = read_training(folder)
        weights_version = only_value(dict(model.named_parameters()))
        assert training["iter"] in (weights_version, weights_version - 1)  # training.json is written after
        assert weights_version >= last  # never rolled back
        assert loaded_tokenizer.vocab_size == 48

        fresh = GPT(config)
        optimizer = configure_optimizer(fresh, 1e-3, 0.1, torch.device("cpu"))
        loop = load_state(folder / STATE_FILE, fresh, optimizer, torch.amp.GradScaler("cpu", enabled=False),
                          BatchLoader(torch.zeros(200, dtype=torch.int64).numpy(), 16, 4))
        state_version = loop.step
        assert state_version in (weights_version, weights_version - 1)  # saved right after the checkpoint
        moments = {f"{i}.{k}": v for i, s in enumerate(optimizer.state.values()) for k, v in s.items()
                   if k.startswith("exp_avg")}
        if state_version > 0:
            assert only_value({**dict(fresh.named_parameters()), **moments}) == state_version
        last = weights_version
    assert last >= 5  # every round saved at least once before its kill


# --- non-finite losses and gradients ----------------------------------------------------------------------


@contextlib.contextmanager
def nan_loss_at(bad_steps, snapshots: dict):
    """Make the training loss NaN at the given steps; snapshot the weights at the start of every step."""
    real_forward, real_next = GPT.forward, BatchLoader.next_batch
    current = {"step": 0}

    def next_batch(self):  # accum 1: one call per step
        current["step"] += 1
        return real_next(self)

    def forward(self, idx, targets=None, **kwargs):
        if self.training and targets is not None and current["step"] not in snapshots:
            snapshots[current["step"]] = {k: v.detach().clone() for k, v in self.named_parameters()}
        logits, loss = real_forward(self, idx, targets, **kwargs)
        if self.training and loss is not None and current["step"] in bad_steps:
            loss = loss * float("nan")
        return logits, loss

    GPT.forward, BatchLoader.next_batch = forward, next_batch
    try:
        yield
    finally:
        GPT.forward, BatchLoader.next_batch = real_forward, real_next


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_non_finite_steps_are_skipped_and_counted(engine, tmp_path):
    out = tmp_path / "out"
    snapshots: dict[int, dict] = {}
    with nan_loss_at({5, 6}, snapshots):
        engine(out, "--max-iters", "8", "--eval-interval", "4", "--max-bad-steps", "3", "--warmup-iters", "2")
    assert sorted(snapshots) == list(range(1, 9))
    assert not all(torch.equal(snapshots[4][k], snapshots[5][k]) for k in snapshots[4])  # step 4 did train
    assert_same_weights(snapshots[5], snapshots[6])  # steps 5 and 6 were skipped: no change at all
    assert_same_weights(snapshots[6], snapshots[7])
    assert not all(torch.equal(snapshots[7][k], snapshots[8][k]) for k in snapshots[7])  # step 7 trained again
    loop = state_meta(out / STATE_FILE)["loop"]
    assert loop["skipped_steps"] == 2 and loop["bad_steps"] == 0
    steps = {int(v) for k, v in tensors(out / STATE_FILE).items() if k.endswith(".step")}
    assert steps == {6}  # AdamW took 8 - 2 steps
    train_rows = {r["step"]: r for r in rows(out) if r["event"] == "train"}
    assert math.isnan(train_rows[5]["train_loss"]) and math.isfinite(train_rows[7]["train_loss"])


def test_persistent_non_finite_steps_stop_with_one_line_and_keep_the_checkpoint(tmp_path, capsys, text_file):
    out = tmp_path / "out"
    argv = [*TINY, "--data", str(text_file), "--out-dir", str(out), "--max-iters", "12", "--eval-interval", "4",
            "--max-bad-steps", "3", "--cache-dir", str(tmp_path / "cache")]
    snapshots: dict[int, dict] = {}
    with nan_loss_at(set(range(5, 13)), snapshots), pytest.raises(SystemExit) as exit_info:
        errors.run_cli(lambda: train_mod.main(argv))
    assert exit_info.value.code == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: 3 steps in a row (up to step 7)"), err
    assert "--lr" in err[0] and str(out) in err[0]
    assert max(snapshots) == 7  # it stopped at once
    assert_same_weights(snapshots[5], snapshots[7])  # the bad steps changed nothing
    model, _ = load_pretrained(out)  # the checkpoint of step 4 = the weights before step 5
    training = read_training(out)
    assert training["step"] == 4
    for name, tensor in model.named_parameters():
        assert torch.equal(tensor, snapshots[5][name]), name
    assert state_meta(out / STATE_FILE)["loop"]["step"] == 4


def test_a_skipped_step_is_reported_as_skipped_with_the_float16_scaler(monkeypatch):
    """train_step with an enabled GradScaler (float16 training; the CPU scaler behaves the same) and a NaN loss:
    the scaler skips the update, and train_step must say so, or a NaN run under float16 would never stop."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=48, block_size=16, n_layer=1, n_head=2, d_model=32))
    real = GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, idx, targets=None, **kw: (
        lambda out: (out[0], out[1] * float("nan")))(real(self, idx, targets, **kw)))
    optimizer = configure_optimizer(model, 1e-3, 0.1, torch.device("cpu"))
    precision = Precision(torch.device("cpu"), torch.float16)
    assert precision.scaler.is_enabled()
    loader = BatchLoader((torch.arange(500) % 48).numpy(), 16, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, grad_norm, healthy = train_mod.train_step(model, optimizer, loader, 1, precision, Distributed(), 1.0)
    assert math.isnan(loss.item()) and not math.isfinite(grad_norm.item())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the scaler did skip it ...
    assert not healthy  # ... so the loop must count it as a bad step


# --- gradient accumulation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_give_the_gradient_of_one_big_batch(k):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=48, block_size=16, n_layer=2, n_head=2, d_model=32, dropout=0.0))
    x = torch.randint(48, (8, 16))
    y = torch.randint(48, (8, 16))
    _, loss = model(x, y)
    loss.backward()
    big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    for xs, ys in zip(x.chunk(k), y.chunk(k), strict=True):
        _, loss = model(xs, ys)
        (loss / k).backward()  # as train.py scales each micro-batch
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, big[name], atol=1e-6, rtol=1e-5, msg=name)
    model.zero_grad(set_to_none=True)
    model(x[: 8 // k], y[: 8 // k])[1].backward()
    assert not torch.allclose(model.transformer.h[0].mlp.c_fc.weight.grad, big["transformer.h.0.mlp.c_fc.weight"])


def test_tokens_per_step_must_be_a_multiple_of_the_micro_batch(run_cli, tmp_path, text_file):
    proc = run_cli("src/train.py", *TINY, "--data", text_file, "--out-dir", tmp_path / "out",
                   "--max-iters", "2", "--tokens-per-step", "100")
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --tokens-per-step 100"), proc.stderr
    assert "64" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "model.safetensors").exists()


# --- presets and the parser --------------------------------------------------------------------------------


def test_gpt2_124m_preset():
    cfg = parse_args(["--preset", "gpt2-124m"])
    assert cfg.preset == "gpt2-124m"
    assert cfg.tokens_per_step == 524288 == 2**19
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.block_size) == (12, 12, 768, 1024)
    assert (cfg.tokenizer, cfg.lr, cfg.min_lr, cfg.beta2, cfg.warmup_iters) == ("gpt2", 6e-4, 6e-5, 0.95, 715)
    assert cfg.tokens_per_step % (cfg.batch_size * cfg.block_size) == 0


def test_defaults_are_the_cpu_preset_and_every_preset_parses():
    assert TrainConfig().n_head == 2  # derived from d_model: 128 -> 2 heads of 64
    assert TrainConfig(d_model=384).n_head == 6 and parse_args(["--d-model", "384"]).n_head == 6
    assert parse_args([]) == TrainConfig(**PRESETS["cpu"])  # TrainConfig() itself: 2,000 steps, no time budget
    for name, values in PRESETS.items():
        cfg = parse_args(["--preset", name])
        for key, value in values.items():
            assert getattr(cfg, key) == value, (name, key)


@pytest.mark.parametrize("order", ["flags-after", "flags-before"])
def test_explicit_flags_override_the_preset(order):
    flags = ["--lr", "1e-4", "--n-layer", "2", "--tokens-per-step", "16384"]
    cfg = parse_args(["--preset", "gpt2-124m", *flags] if order == "flags-after" else [*flags, "--preset", "gpt2-124m"])
    assert (cfg.lr, cfg.n_layer, cfg.tokens_per_step) == (1e-4, 2, 16384)
    assert (cfg.d_model, cfg.block_size) == (768, 1024)  # the rest still from the preset
    assert cfg.min_lr == pytest.approx(1e-5)  # the preset's floor, a tenth of its peak: a tenth of the new one


def test_another_lr_keeps_the_presets_floor_as_a_fraction_of_the_peak():
    """Fine-tuning's rate is constant (floor = peak): a lower --lr must not be refused for a floor above it."""
    assert parse_args(["--init-from", "gpt2", "--lr", "1e-5"]).final_min_lr == pytest.approx(1e-5)
    assert parse_args(["--preset", "shakespeare-char", "--lr", "5e-5"]).final_min_lr == pytest.approx(5e-6)
    assert parse_args(["--preset", "quality-300s", "--lr", "1e-3"]).final_min_lr == 0.0
    assert parse_args(["--preset", "shakespeare-char", "--lr", "5e-5", "--min-lr", "1e-6"]).min_lr == 1e-6


def test_attn_dropout_flag_reaches_the_model():
    """--attn-dropout sets the rate on the attention weights alone; without it, attention follows --dropout."""
    residual_only = train_mod.build_model(parse_args(["--dropout", "0.1", "--attn-dropout", "0"]), 65)
    assert (residual_only.config.dropout, residual_only.config.attn_pdrop) == (0.1, 0.0)
    assert residual_only.transformer.h[0].attn.attn_dropout == 0.0
    assert train_mod.build_model(parse_args(["--dropout", "0.1"]), 65).transformer.h[0].attn.attn_dropout == 0.1


def test_init_from_implies_the_finetune_preset():
    cfg = parse_args(["--init-from", "gpt2"])
    assert cfg.preset == "finetune" and cfg.init_from == "gpt2"
    assert (cfg.lr, cfg.max_iters, cfg.weight_decay) == (3e-5, 300, 0.0)
    assert parse_args(["--init-from", "gpt2", "--lr", "1e-4"]).lr == 1e-4
    explicit = parse_args(["--init-from", "gpt2", "--preset", "cpu"])  # an explicit preset wins
    assert explicit.preset == "cpu" and explicit.lr == 1e-3


@pytest.mark.parametrize("argv", [
    ["--n-layer", "0"], ["--batch-size", "-1"], ["--dropout", "1.0"], ["--attn-dropout", "-0.1"],
    ["--lr", "nan"], ["--lr", "0"], ["--d-model", "30", "--n-head", "4"], ["--lr", "0.1", "--min-lr", "1"],
    ["--preset", "gpt5"],
    ["--tokens-per-step", "0"], ["--dtype", "int8"], ["--max-bad-steps", "0"], ["--compile", "maybe"],
    ["--tokenizer", "bpe", "--vocab-size", "100"], ["--warmup-iters", "-3"],
    ["--cooldown", "0"], ["--cooldown", "1.5"], ["--cooldown", "nan"],
])
def test_parser_rejects_bad_values_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


# --- precision -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "native_bf16", "expected"), [
    ("auto", True, torch.bfloat16),
    ("auto", False, torch.float32),
    ("float32", True, torch.float32),
    ("bfloat16", False, torch.bfloat16),
    ("bfloat16", True, torch.bfloat16),
])
def test_resolve_dtype_on_cpu(monkeypatch, requested, native_bf16, expected):
    monkeypatch.setattr("src.engine.precision.cpu_has_native_bf16", lambda: native_bf16)
    dtype, why = resolve_dtype(requested, torch.device("cpu"))
    assert dtype == expected and why


@pytest.mark.parametrize(("requested", "d_model", "expected"), [
    ("auto", 128, torch.float32),  # too narrow for bf16 to pay
    ("auto", 255, torch.float32),
    ("auto", 256, torch.bfloat16),
    ("auto", 768, torch.bfloat16),
    ("bfloat16", 128, torch.bfloat16),  # asked for: always given
])
def test_auto_on_a_bf16_cpu_keeps_narrow_models_in_float32(monkeypatch, requested, d_model, expected):
    monkeypatch.setattr("src.engine.precision.cpu_has_native_bf16", lambda: True)
    dtype, why = resolve_dtype(requested, torch.device("cpu"), d_model)
    assert dtype == expected
    if requested == "auto" and d_model < 256:
        assert f"d_model {d_model}" in why and "--dtype bfloat16" in why


def test_a_training_run_on_a_bf16_cpu_chooses_by_the_models_width(engine, tmp_path, capsys, monkeypatch):
    """train() hands the model's width to the precision choice: the tiny model (32 wide) stays in float32."""
    monkeypatch.setattr("src.engine.precision.cpu_has_native_bf16", lambda: True)
    engine(tmp_path / "out", "--max-iters", "1", "--dtype", "auto")
    assert "precision: float32: this CPU has bf16 instructions, but at d_model 32" in capsys.readouterr().out


def test_float16_on_cpu_is_a_user_error():
    with pytest.raises(UserError, match="CUDA"):
        resolve_dtype("float16", torch.device("cpu"))


def test_autocast_is_a_no_op_for_float32_and_lowers_matmuls_for_bf16():
    a = torch.randn(4, 4)
    with autocast(torch.device("cpu"), torch.float32):
        assert (a @ a).dtype == torch.float32
    with autocast(torch.device("cpu"), torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16


def test_bf16_training_reaches_the_fp32_loss(engine, tmp_path):
    flags = ["--max-iters", "30", "--eval-interval", "30", "--lr", "3e-3", "--warmup-iters", "2"]
    fp32 = engine(tmp_path / "fp32", *flags, "--dtype", "float32")
    bf16 = engine(tmp_path / "bf16", *flags, "--dtype", "bfloat16")
    initial = rows(tmp_path / "fp32")[0]["val_loss"]
    assert fp32.val_loss < initial - 0.4  # it learned something ...
    assert bf16.val_loss == pytest.approx(fp32.val_loss, abs=0.05)  # ... and bf16 learned the same
    assert bf16.val_loss != fp32.val_loss  # (bf16 really ran in lower precision)


# --- torch.compile -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compiled_training_saves_plain_checkpoints(run_cli, engine, tmp_path, text_file):
    """--compile on (CPU): the step runs compiled, but what is saved has plain names and loads anywhere."""
    out = tmp_path / "compiled"
    flags = ["--max-iters", "3", "--eval-interval", "3", "--warmup-iters", "2"]
    try:
        proc = run_cli("src/train.py", *TINY, "--data", text_file, "--out-dir", out, *flags, "--compile", "on",
                       timeout=150)
    except subprocess.TimeoutExpired:
        pytest.skip("torch.compile of a one-layer model took over 150 s on this machine (no C++ compiler cache?)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.compile on" in proc.stdout
    for file in (out / "model.safetensors", out / "best" / "model.safetensors", out / STATE_FILE):
        names = tensors(file).keys()
        assert names and not any("_orig_mod" in n or n.startswith("module.") for n in names), file
    model, _ = load_pretrained(out)  # in this plain (uncompiled) process
    loop = load_state(out / STATE_FILE, model, configure_optimizer(model, 1e-3, 0.1, torch.device("cpu")),
                      torch.amp.GradScaler("cpu", enabled=False),
                      BatchLoader(torch.zeros(100, dtype=torch.int64).numpy(), 16, 4))
    assert loop.step == 3
    eager = engine(tmp_path / "eager", *flags)  # the compiled step computes the same training
    compiled_rows = [r for r in rows(out) if r["event"] == "train"]
    eager_rows = [r for r in rows(tmp_path / "eager") if r["event"] == "train"]
    for c, e in zip(compiled_rows, eager_rows, strict=True):
        assert c["train_loss"] == pytest.approx(e["train_loss"], abs=1e-4)
    assert json.loads((out / "training.json").read_text())["val_loss"] == pytest.approx(eager.val_loss, abs=1e-4)


# --- what a run records -----------------------------------------------------------------------------------------


def test_a_metrics_line_cut_short_by_a_kill_does_not_block_the_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "val_loss": 4.2}\n{"step": 5, "train_loss": 3.1}\n{"step": 7, "train_lo')
    log = MetricsLog(path, resume=True, keep_until=5)
    assert [r["step"] for r in log.rows] == [0, 5]
    assert path.read_text().splitlines() == ['{"step": 0, "val_loss": 4.2}', '{"step": 5, "train_loss": 3.1}']


def test_metrics_rows_and_loss_plot(engine, tmp_path):
    out = tmp_path / "out"
    engine(out, "--max-iters", "6", "--eval-interval", "3", "--warmup-iters", "2")
    metrics = rows(out)
    train_rows = [r for r in metrics if r["event"] == "train"]
    eval_rows = [r for r in metrics if r["event"] == "eval"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in eval_rows] == [0, 3, 6]
    per_token = load_pretrained(out)[0].flops_per_token()
    for r in train_rows:
        assert {"step", "tokens", "train_loss", "lr", "grad_norm", "tokens_per_s", "flops_per_s", "mfu"} <= r.keys()
        assert r["tokens"] == 64 * r["step"]
        assert r["tokens_per_s"] > 0 and r["grad_norm"] > 0 and r["lr"] > 0 and math.isfinite(r["train_loss"])
        assert r["flops_per_s"] == pytest.approx(per_token * r["tokens_per_s"], rel=1e-4)
        assert r["mfu"] == pytest.approx(r["flops_per_s"] / 1e12, rel=1e-3, abs=2e-6)  # --peak-flops 1e12
    for r in eval_rows:
        assert {"step", "tokens", "train_loss", "val_loss", "val_bits_per_char", "val_bits_per_byte"} <= r.keys()
        # char tokens of an ASCII text: one token per character and per byte
        assert r["val_bits_per_char"] == pytest.approx(r["val_loss"] / math.log(2), abs=1e-5)
        assert r["val_bits_per_byte"] == pytest.approx(r["val_bits_per_char"], abs=1e-6)
    assert (out / "loss.png").read_bytes().startswith(PNG_SIGNATURE)


def test_best_holds_the_checkpoint_with_the_lowest_val_loss(engine, tmp_path, monkeypatch):
    """Scripted validation losses (best at step 4, worse afterwards): best/ must keep step 4's weights."""
    real = train_mod.estimate_loss
    scripted = iter([3.0, 2.5, 2.0, 2.2, 2.1])  # steps 0, 2, 4, 6, 8
    calls, weights_at = [], {}

    def estimate_loss(model, batches, autocast_ctx, ddp):
        loss = real(model, batches, autocast_ctx, ddp)
        calls.append(1)
        if len(calls) % 2:  # evaluate() asks for train, then val
            return loss
        val = next(scripted)
        weights_at[val] = {k: v.detach().clone() for k, v in model.named_parameters()}
        return val

    monkeypatch.setattr(train_mod, "estimate_loss", estimate_loss)
    out = tmp_path / "out"
    engine(out, "--max-iters", "8", "--eval-interval", "2", "--warmup-iters", "2", "--lr", "3e-3")
    eval_rows = [r for r in rows(out) if r["event"] == "eval"]
    assert [r["val_loss"] for r in eval_rows] == [3.0, 2.5, 2.0, 2.2, 2.1]
    best = json.loads((out / "best" / "training.json").read_text())
    assert best["val_loss"] == min(r["val_loss"] for r in eval_rows) == 2.0 and best["step"] == 4
    assert json.loads((out / "training.json").read_text())["val_loss"] == 2.1  # the latest is step 8's
    model, _ = load_pretrained(out / "best")
    for name, tensor in model.named_parameters():
        assert torch.equal(tensor, weights_at[2.0][name]), name
    latest, _ = load_pretrained(out)
    assert not torch.equal(latest.transformer.wte.weight, model.transformer.wte.weight)
    assert state_meta(out / STATE_FILE)["loop"]["best_val_loss"] == 2.0


def test_resume_without_a_saved_state_or_of_a_finished_run_is_a_clear_error(engine, tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        engine(tmp_path / "empty", "--max-iters", "2", "--resume")
    engine(tmp_path / "done", "--max-iters", "2", "--eval-interval", "2")
    with pytest.raises(UserError, match="already reached step 2; raise --max-iters"):
        engine(tmp_path / "done", "--max-iters", "2", "--eval-interval", "2", "--resume")


def test_copied_run_folder_resumes(engine, tmp_path):
    """A run folder is self-contained: copied elsewhere, it resumes from the copy."""
    out = tmp_path / "a"
    engine(out, "--max-iters", "4", "--eval-interval", "2", "--warmup-iters", "2")
    shutil.copytree(out, tmp_path / "b")
    resumed = engine(tmp_path / "b", "--max-iters", "6", "--eval-interval", "2", "--warmup-iters", "2", "--resume")
    assert resumed.step == 6
    assert [r["step"] for r in rows(tmp_path / "b") if r["event"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert rows(tmp_path / "b")[:5] == rows(out)[:5]  # the rows up to step 4 were kept as they were


# --- a time budget ---------------------------------------------------------------------------------------------


def test_a_time_budget_ends_the_run_with_the_learning_rate_decayed(engine, tmp_path):
    """--max-seconds: the run stops by itself when the budget is used up, evaluates and saves there, and the
    cosine schedule was fitted to the budget, so the last steps ran near --min-lr instead of near --lr."""
    out = tmp_path / "out"
    summary = engine(out, "--max-iters", "1000000", "--max-seconds", "3", "--warmup-iters", "2",
                     "--lr", "1e-2", "--min-lr", "1e-3", "--eval-interval", "1000000")
    train_rows = [r for r in rows(out) if r["event"] == "train"]
    last = train_rows[-1]["step"]
    assert 3 < last < 1_000_000  # it trained, and stopped long before max_iters
    assert summary.step == last  # evaluated at the step it stopped at, though eval_interval never came
    assert json.loads((out / "training.json").read_text())["step"] == last  # and saved there
    assert train_rows[-1]["lr"] < 0.2 * 1e-2  # decayed: a fixed schedule would still be at the peak here
    assert max(r["lr"] for r in train_rows) > 0.5 * 1e-2  # the peak was reached on the way


def test_the_default_run_has_a_time_budget_and_an_explicit_max_iters_turns_it_off():
    """`python src/train.py` trains for 8 minutes on any machine; `--max-iters N` is exactly N steps (the same
    run step for step anywhere) unless --max-seconds is given too; --max-seconds 0 means no budget."""
    assert (parse_args([]).max_seconds, parse_args([]).max_iters) == (480.0, 5000)
    assert parse_args(["--max-iters", "300"]).max_seconds is None
    assert parse_args(["--max-iters=300"]).max_seconds is None
    assert parse_args(["--max-iters", "300", "--max-seconds", "60"]).max_seconds == 60.0
    assert parse_args(["--max-seconds", "0"]).max_seconds is None
    assert parse_args(["--preset", "quality-300s"]).max_seconds == 300.0
    assert parse_args(["--preset", "quality-300s", "--max-iters", "50"]).max_seconds is None


@pytest.mark.parametrize("budget", [True, False])
def test_the_run_says_at_the_start_how_long_it_will_take(engine, tmp_path, capsys, budget):
    flags = ["--max-seconds", "2", "--max-iters", "1000000"] if budget else ["--max-iters", "6"]
    engine(tmp_path / "out", *flags, "--log-interval", "2", "--eval-interval", "1000000")
    printed = capsys.readouterr().out
    if budget:
        assert "training for 2 s (--max-seconds; at most 1,000,000 steps)" in printed
        assert "--max-iters N runs exactly N steps instead" in printed
        assert re.search(r"[\d,]+ tokens/s: about [\d,]+ steps fit into 2 s", printed), printed
    else:
        assert "training for 6 steps (how long: after the first 2 steps)" in printed
        assert re.search(r"[\d,]+ tokens/s: 6 steps take about \d+ s", printed), printed


def test_the_forecast_counts_the_time_already_trained(engine, tmp_path, capsys, monkeypatch):
    """Steps of 0.2 s in a 3 s budget: about 15 fit. The forecast comes after 5 steps (1 s); counting the whole
    budget as still ahead would promise 5 + 15 = 20, and a compiled run's forecast would count its compile too."""
    real_step = train_mod.train_step

    def slow_step(*args, **kwargs):
        time.sleep(0.2)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", slow_step)
    state = engine(tmp_path / "out", "--max-seconds", "3", "--max-iters", "1000", "--log-interval", "5",
                   "--eval-interval", "1000000")
    promised = int(re.search(r"about ([\d,]+) steps fit into 3 s", capsys.readouterr().out).group(1))
    assert promised <= state.step + 2, (promised, state.step)


@pytest.mark.parametrize(("flags", "expected"), [
    ([], "optimizer: AdamW at 0.001; warmup 100 steps, then a cosine decay to 0.1x the peak; weight decay 0.1, "
         "betas (0.9, 0.99), gradient norm clipped at 1"),
    (["--optimizer", "muon", "--min-lr", "0", "--grad-clip", "0"],
     "optimizer: Muon at 0.02 for the blocks' matrices, AdamW at 0.001 for the rest; warmup 100 steps, then a "
     "cosine decay to 0; weight decay 0.1, Muon momentum 0.95 (Nesterov), AdamW betas (0.9, 0.99), no gradient "
     "clipping"),
    (["--cooldown", "0.4", "--lr", "2e-3", "--min-lr", "5e-4", "--warmup-iters", "7", "--beta2", "0.95"],
     "optimizer: AdamW at 0.002; warmup 7 steps, then a linear decay over the last 40% of the steps after warmup "
     "to 0.25x the peak; weight decay 0.1, betas (0.9, 0.95), gradient norm clipped at 1"),
    (["--preset", "finetune", "--weight-decay", "0"],
     "optimizer: AdamW at 3e-05; warmup 10 steps, then constant; weight decay 0, betas (0.9, 0.95), gradient "
     "norm clipped at 1"),
])
def test_the_run_header_names_the_optimizer_and_its_schedule(flags, expected):
    """What the run will do with the learning rate, read from the same settings lr_at and the optimizer get."""
    assert optimizer_line(parse_args(flags)) == expected


def test_the_optimizer_line_is_in_the_run_header(engine, tmp_path, capsys):
    engine(tmp_path / "out", "--max-iters", "1", "--optimizer", "muon", "--muon-lr", "0.03")
    assert "optimizer: Muon at 0.03 for the blocks' matrices, AdamW at " in capsys.readouterr().out


def test_gpu_peaks_prefer_the_most_specific_name(monkeypatch):
    from src.engine import perf

    for name, bf16 in [("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200 NVL", 835e12),
                       ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12)]:
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device, n=name: n)
        assert perf.peak_flops(torch.device("cuda"), torch.bfloat16, "unused")[0] == bf16, name


def test_a_time_budget_fits_the_schedule_to_what_is_left_and_resumes_there(monkeypatch):
    """TimeBudget with a fake clock: a run resumed after 6 of its 10 s starts on the schedule it was on
    (decay_iters as saved), then fits the end to the 4 s left at the speed it measures, and stops there."""
    from src.engine import resume

    now = [1000.0]
    monkeypatch.setattr(resume.time, "time", lambda: now[0])
    state = LoopState(step=100, seconds_trained=6.0, decay_iters=180)
    budget = resume.TimeBudget(10.0, state, max_iters=1000)
    assert budget.decay_iters == 180
    now[0] += 2.0  # 20 steps in 2 s: 10 steps/s, 2 s left -> 20 more steps
    assert not budget.check(120, Distributed())
    assert budget.decay_iters == 140 and (state.seconds_trained, state.decay_iters) == (8.0, 140)
    now[0] += 2.0
    assert budget.check(140, Distributed())  # 10 s in all: stop
    fresh = resume.TimeBudget(10.0, LoopState(), max_iters=1000)
    assert fresh.decay_iters == 1000  # nothing measured yet: the longest schedule
    now[0] += 1.0
    fresh.check(50, Distributed())
    assert fresh.decay_iters == 500  # 50 steps/s x 10 s
    assert resume.TimeBudget(None, LoopState(), 77).decay_iters == 77 and not resume.TimeBudget(
        None, LoopState(), 77).check(5, Distributed())


def test_evaluating_and_saving_do_not_count_against_a_time_budget(monkeypatch):
    """The clock stops inside `paused()` (train.py evaluates and saves there): neither the seconds trained
    nor the speed the schedule is fitted with include that time, and an exception inside still restarts it."""
    from src.engine import resume

    now = [0.0]
    monkeypatch.setattr(resume.time, "time", lambda: now[0])
    state = LoopState()
    budget = resume.TimeBudget(10.0, state, max_iters=1000)
    now[0] += 2.0  # 20 steps in 2 s
    with budget.paused():
        now[0] += 30.0  # an evaluation three times longer than the budget
    assert not budget.check(20, Distributed())
    assert state.seconds_trained == 2.0 and budget.decay_iters == 100  # 10 steps/s x 10 s
    with pytest.raises(KeyboardInterrupt), budget.paused():
        now[0] += 5.0
        raise KeyboardInterrupt
    now[0] += 8.0
    assert budget.check(100, Distributed()) and state.seconds_trained == 10.0


def test_a_run_does_not_spend_its_time_budget_on_evaluations(engine, tmp_path, monkeypatch):
    slow = [0.3] * 5  # the evaluations at steps 5 to 20 take 1.2 s in all, more than the whole 1 s budget
    evaluate = train_mod.evaluate

    def slow_evaluate(*args):
        time.sleep(slow.pop() if slow else 0.0)
        return evaluate(*args)

    monkeypatch.setattr(train_mod, "evaluate", slow_evaluate)
    state = engine(tmp_path / "out", "--max-iters", "1000000", "--eval-interval", "5", "--max-seconds", "1")
    assert not slow and state.step > 20  # trained on after them
    assert 1.0 <= state.seconds_trained < 3.0


def test_a_run_that_used_its_time_budget_resumes_only_with_more_time(engine, tmp_path):
    out = tmp_path / "out"
    flags = ["--max-iters", "1000000", "--eval-interval", "1000000", "--warmup-iters", "2"]
    engine(out, *flags, "--max-seconds", "1")
    spent = read_training(out)["seconds_trained"]
    assert 1.0 <= spent < 3.0
    with pytest.raises(UserError, match="already trained for its 1 s; raise --max-seconds"):
        engine(out, *flags, "--max-seconds", "1", "--resume")
    resumed = engine(out, *flags, "--max-seconds", "2", "--resume")
    assert 2.0 <= resumed.seconds_trained < spent + 3.0


def test_muon_trains_at_its_own_rate_and_a_resume_takes_the_new_one(engine, tmp_path):
    out = tmp_path / "out"
    flags = ["--max-iters", "3", "--eval-interval", "3", "--warmup-iters", "1", "--optimizer", "muon", "--lr", "1e-3"]
    engine(out, *flags, "--muon-lr", "0.02")
    last_lr = [r for r in rows(out) if r["event"] == "train"][-1]["lr"]
    muon, *adamw = state_meta(out / STATE_FILE)["optimizer"]["param_groups"]
    assert muon["use_muon"] and muon["lr"] == pytest.approx(last_lr * 20)
    assert all(group["lr"] == pytest.approx(last_lr) for group in adamw)
    engine(out, "--max-iters", "4", *flags[2:], "--muon-lr", "0.04", "--resume")
    last_lr = [r for r in rows(out) if r["event"] == "train"][-1]["lr"]
    assert state_meta(out / STATE_FILE)["optimizer"]["param_groups"][0]["lr"] == pytest.approx(last_lr * 40)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_a_resume_trains_with_its_own_weight_decay_and_betas(engine, tmp_path, optimizer):
    """The saved groups carry the first run's settings; the resumed run's flags must win (not silently drop)."""
    out = tmp_path / "out"
    flags = ["--max-iters", "2", "--eval-interval", "2", "--warmup-iters", "1", "--optimizer", optimizer]
    engine(out, *flags, "--weight-decay", "0.1", "--beta2", "0.99")
    engine(out, *flags, "--max-iters", "3", "--weight-decay", "0.3", "--beta2", "0.9", "--resume")
    groups = state_meta(out / STATE_FILE)["optimizer"]["param_groups"]
    assert {g["weight_decay"] for g in groups} == {0.0, 0.3}  # the 1-D weights never decay
    assert all(tuple(g["betas"]) == (0.9, 0.9) for g in groups)


@pytest.mark.parametrize("cooldown", [None, 0.5])
def test_the_loop_trains_on_the_schedule_it_was_given(engine, tmp_path, cooldown):
    flags = ["--max-iters", "12", "--eval-interval", "12", "--warmup-iters", "2", "--log-interval", "1",
             "--lr", "1e-3", "--min-lr", "1e-4"]
    engine(tmp_path / "out", *flags, *(["--cooldown", cooldown] if cooldown else []))
    logged = [r["lr"] for r in rows(tmp_path / "out") if r["event"] == "train"]
    expected = [train_mod.lr_at(s, 1e-3, 1e-4, 2, 12, cooldown) for s in range(12)]
    assert logged == [pytest.approx(lr, rel=5e-3) for lr in expected]  # the log keeps 3 digits
    assert (logged[5] == pytest.approx(1e-3)) == (cooldown is not None)  # held at the peak, or already decaying


def test_resuming_with_another_optimizer_or_fine_tuning_with_muon_is_refused(engine, tmp_path, capsys):
    engine(tmp_path / "out", "--max-iters", "2", "--eval-interval", "2")
    with pytest.raises(UserError, match="used --optimizer adamw, this command --optimizer muon"):
        engine(tmp_path / "out", "--max-iters", "3", "--eval-interval", "2", "--optimizer", "muon", "--resume")
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--init-from", "gpt2", "--optimizer", "muon"])
    assert exit_info.value.code == 2 and "fine-tune (--init-from) with AdamW" in capsys.readouterr().err
