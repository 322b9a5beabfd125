"""What a training run reports: the header, a progress bar, `metrics.jsonl`, evaluation lines, `loss.png`.

JSON Lines is easy to read back (`[json.loads(l) for l in open(path)]`), to append to, and to plot with
any tool. Each row has `step` and `tokens` (tokens trained on so far); training rows add `train_loss`,
`lr`, `grad_norm`, `tokens_per_s`, `flops_per_s` and `mfu`; evaluation rows (`"event": "eval"`) add
`val_loss` and bits per character / byte.

Only the main process reports: `TrainingLog` on any other process does nothing, so the training loop
calls it without asking which process it is.

Who uses it: `train.py` (`TrainingLog`).
"""

from __future__ import annotations

import io
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from src.engine.config import BETA1
from src.engine.files import atomic_write_bytes, atomic_write_text
from src.engine.muon import MOMENTUM
from src.engine.perf import describe, peak_flops


def _read_rows(path: Path) -> list[dict]:
    """The rows of a log. Rows are appended, not written atomically: a process killed mid-write leaves its
    last line cut short, and that line (after the last save, so the resumed run writes it again) is left out."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


class MetricsLog:
    """Appends rows to `metrics.jsonl`; keeps them in memory for the plot."""

    def __init__(self, path: str | Path, resume: bool = False, keep_until: int = 0):
        """A fresh log, or with `resume` the existing one up to step `keep_until` (rows logged after the
        last save are dropped: the resumed run will compute them again)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        if resume and self.path.exists():
            self.rows = [r for r in _read_rows(self.path) if r["step"] <= keep_until]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, **row) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self, path: str | Path, title: str = "", vocab_size: int | None = None) -> None:
        """Train and val loss against tokens seen, as a PNG (written atomically), with what a learner needs to
        read it: the loss of a uniform guess, ln V (where training starts), steps on the top axis, and the gap
        between train and validation loss shaded from where the model starts to overfit."""
        import matplotlib

        matplotlib.use("Agg")  # no screen needed
        import matplotlib.pyplot as plt

        train = [(r["tokens"], r["train_loss"]) for r in self.rows if r.get("event") == "train"]
        evals = [r for r in self.rows if r.get("event") == "eval"]
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
        if train:
            ax.plot([t for t, _ in train], [loss for _, loss in train], label="train", alpha=0.6, linewidth=1)
        if evals:
            ax.plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", label="validation",
                    linewidth=2)
        if vocab_size:
            ax.axhline(math.log(vocab_size), color="grey", linestyle=":", linewidth=1,
                       label=f"ln V = {math.log(vocab_size):.2f}: a uniform guess over {vocab_size} tokens")
        overfit = overfitting_start(evals)
        if overfit is not None:
            later = [r for r in evals if r["step"] >= overfit["step"]]
            ax.fill_between([r["tokens"] for r in later], [r["train_loss"] for r in later],
                            [r["val_loss"] for r in later], color="tab:red", alpha=0.15,
                            label="train/validation gap: overfitting")
            ax.axvline(overfit["tokens"], color="tab:red", linestyle="--", linewidth=1)
            ax.annotate(f"best validation (step {overfit['step']}),\nthen it rises: overfitting",
                        (overfit["tokens"], overfit["val_loss"]), textcoords="offset points", xytext=(8, 14),
                        fontsize=8, color="tab:red")
        steps_per_token = _steps_per_token(self.rows)
        if steps_per_token:
            top = ax.secondary_xaxis("top", functions=(lambda t: t * steps_per_token, lambda s: s / steps_per_token))
            top.set_xlabel("optimizer steps")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats per token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())


def overfitting_start(evals: list[dict], tolerance: float = 0.01) -> dict | None:
    """The evaluation row where overfitting starts, or None: the one with the lowest validation loss, when a
    later evaluation has a validation loss more than `tolerance` higher (above the noise of a few batches)
    while its training loss went on falling. From there the model learns its training text by heart."""
    if not evals:
        return None
    best = min(evals, key=lambda r: r["val_loss"])
    later = [r for r in evals if r["step"] > best["step"]]
    if any(r["val_loss"] > best["val_loss"] + tolerance and r["train_loss"] < best["train_loss"] for r in later):
        return best
    return None


def optimizer_line(cfg) -> str:
    """The optimizer, its peak rates and the schedule every rate follows, as the run will use them: what an
    ablation changes, and what to pass to repeat a run."""
    if cfg.optimizer == "muon":
        rates = f"Muon at {cfg.muon_lr:g} for the blocks' matrices, AdamW at {cfg.lr:g} for the rest"
    else:
        rates = f"AdamW at {cfg.lr:g}"
    end = cfg.final_min_lr / cfg.lr  # every group decays by the same factor
    if end == 1:
        decay = "then constant"
    else:
        shape = (f"a linear decay over the last {cfg.cooldown:.0%} of the steps after warmup" if cfg.cooldown
                 else "a cosine decay")
        decay = f"then {shape} to " + (f"{end:g}x the peak" if end else "0")
    betas = f"betas ({BETA1:g}, {cfg.beta2:g})"
    if cfg.optimizer == "muon":
        betas = f"Muon momentum {MOMENTUM:g} (Nesterov), AdamW {betas}"
    clip = f"gradient norm clipped at {cfg.grad_clip:g}" if cfg.grad_clip else "no gradient clipping"
    return (f"optimizer: {rates}; warmup {cfg.warmup_iters} steps, {decay}; weight decay {cfg.weight_decay:g}, "
            f"{betas}, {clip}")


def duration(seconds: float) -> str:
    """480 -> '8 min 0 s', 42.4 -> '42 s'."""
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _steps_per_token(rows: list[dict]) -> float | None:
    """Steps per token of the run (constant: every step trains on the same number of tokens)."""
    last = next((r for r in reversed(rows) if r.get("step") and r.get("tokens")), None)
    return last["step"] / last["tokens"] if last else None


class TrainingLog:
    """The run's reports, from its header to its last line. Created after the model, before the first step."""

    def __init__(self, cfg, ddp, precision, model, accum: int, compiled: bool, start_step: int = 0,
                 seconds_trained: float = 0.0):
        self.enabled = ddp.is_main
        self.out_dir = Path(cfg.out_dir)
        self.device = precision.device
        self.tokens_per_step = cfg.batch_size * cfg.block_size * accum * ddp.world_size
        self.flops_per_token = model.flops_per_token()
        self.vocab_size = model.config.vocab_size
        self.started = time.time()
        if not self.enabled:
            return
        self.peak, peak_source = peak_flops(precision.device, precision.dtype, cfg.cache_dir, cfg.peak_flops)
        self.metrics = MetricsLog(self.out_dir / "metrics.jsonl", resume=cfg.resume, keep_until=start_step)
        self.max_iters = self.bar_total = cfg.max_iters  # the bar's length: with a time budget, the steps that fit
        self.bar = None  # made at the first step, so that what is printed before stays clear of it
        self.bar_step = self.window_step = start_step
        self.window_start = time.time()
        self.seconds_training = 0.0  # since this process started: the training windows' time, no evaluations
        self.say(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
        self.say(f"device: {precision.device}, precision: {precision.reason}, {torch.get_num_threads()} CPU threads, "
                 f"{ddp.world_size} process(es), torch.compile {'on' if compiled else 'off'}")
        self.say(f"model: {cfg.init_from or cfg.model}, {describe(model.num_params())}")
        self.say(optimizer_line(cfg))
        # The forecast waits for a window of steady steps: the first one of a compiled run includes compiling.
        self.seconds_left = cfg.max_seconds - seconds_trained if cfg.max_seconds else None
        self.windows_before_forecast = 2 if compiled else 1
        self.say(f"{self.tokens_per_step:,} tokens per step = {cfg.batch_size} x {cfg.block_size} tokens x {accum} "
                 f"micro-batches x {ddp.world_size} process(es)")
        if self.seconds_left:
            self.say(f"training for {duration(self.seconds_left)} (--max-seconds; at most {cfg.max_iters:,} steps): "
                     "how many steps fit depends on this machine's speed; --max-iters N runs exactly N steps instead, "
                     "the same run on any machine")
        else:
            self.say(f"training for {cfg.max_iters:,} steps (how long: after the first "
                     f"{cfg.log_interval * self.windows_before_forecast} steps)")
        if self.peak:
            self.say(f"peak {self.peak / 1e9:,.0f} GFLOP/s ({peak_source}); "
                     f"model {self.flops_per_token / 1e6:,.1f} MFLOP per token")

    def say(self, text: str) -> None:
        """A line for the person watching (above the progress bar)."""
        if self.enabled:
            tqdm.write(text)

    def _advance(self, step: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.bar_total, initial=self.bar_step, desc="training", unit="step",
                            dynamic_ncols=True, disable=None)  # disable=None: a live bar only in a terminal
        self.bar.update(step - self.bar_step)
        self.bar_step = step

    def train(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        """A training row: loss, learning rate, gradient norm, and the speed since the previous row."""
        if not self.enabled:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the GPU runs ahead of Python: wait for it before reading the clock
        window_seconds = time.time() - self.window_start
        tokens_per_s = (step - self.window_step) * self.tokens_per_step / window_seconds
        self.seconds_training += window_seconds
        self.window_step, self.window_start = step, time.time()
        row = dict(step=step, tokens=step * self.tokens_per_step, train_loss=loss, lr=lr, grad_norm=grad_norm,
                   tokens_per_s=tokens_per_s, flops_per_s=self.flops_per_token * tokens_per_s)
        if self.peak:
            row["mfu"] = self.flops_per_token * tokens_per_s / self.peak
        self.metrics.log(event="train", **row)
        self.windows_before_forecast -= 1
        if self.windows_before_forecast == 0:
            self._forecast(step, tokens_per_s)
        self._advance(step)
        self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")

    def _forecast(self, step: int, tokens_per_s: float) -> None:
        """Once, after the first steps: how long training will take at the speed measured so far."""
        seconds_per_step = self.tokens_per_step / tokens_per_s
        if self.seconds_left:  # what is left of the budget after the steps so far (a compiled run's: compiling too)
            left = max(0.0, self.seconds_left - self.seconds_training)
            steps = self.bar_total = min(self.max_iters, step + int(left / seconds_per_step))
            self.say(f"{tokens_per_s:,.0f} tokens/s: about {steps:,} steps fit into {duration(self.seconds_left)}")
        else:
            left = (self.max_iters - step) * seconds_per_step
            self.say(f"{tokens_per_s:,.0f} tokens/s: {self.max_iters:,} steps take about "
                     f"{duration(left + time.time() - self.started)} (evaluations add a little)")

    def eval(self, state) -> None:
        """An evaluation row and line (the clock for tokens/s restarts: it measures training, not this)."""
        if not self.enabled:
            return
        self.metrics.log(event="eval", step=state.step, tokens=state.step * self.tokens_per_step,
                         train_loss=state.train_loss, val_loss=state.val_loss,
                         val_bits_per_char=state.val_bits_per_char, val_bits_per_byte=state.val_bits_per_byte)
        if state.step > self.bar_step:
            self._advance(state.step)
        self.say(f"step {state.step:>6}: train loss {state.train_loss:.4f}, val loss {state.val_loss:.4f} "
                 f"({state.val_bits_per_byte:.3f} bits/byte, {state.val_bits_per_char:.3f} bits/char)")
        self.window_step, self.window_start = state.step, time.time()

    def stopped(self, step: int) -> None:
        """After a Ctrl-C / SIGTERM stop was saved: the plot so far, and how to go on."""
        if not self.enabled:
            return
        self._advance(step)
        self.bar.close()
        self.metrics.plot(self.out_dir / "loss.png", title=f"stopped at step {step}", vocab_size=self.vocab_size)
        self.say(f"saved; continue with: python src/train.py --resume --out-dir {self.out_dir} (same flags)")

    def finish(self, state, title: str) -> None:
        """The end of training: the loss plot and the final line."""
        if not self.enabled:
            return
        self._advance(state.step)
        self.bar.close()
        self.metrics.plot(self.out_dir / "loss.png", title=title, vocab_size=self.vocab_size)
        self.say(f"done in {time.time() - self.started:.0f} s: val loss {state.val_loss:.4f} "
                 f"({state.val_bits_per_byte:.3f} bits/byte); saved to {self.out_dir}/ "
                 "(checkpoint, best/, metrics.jsonl, loss.png)")
