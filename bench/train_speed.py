"""Training speed on this CPU, next to nanoGPT's figures; and (--quality) the loss reached in 300 s.

    python bench/train_speed.py [--steps 10] [--warmup 3] [--threads N] [--dtypes float32 bfloat16]
    python bench/train_speed.py --quality [--budget 300]

Speed: for two shapes -- the user's (6 layers, 6 heads, d_model 384, context 256, batch 16) and nanoGPT's
laptop configuration (4 layers, 4 heads, 128 wide, context 64, batch 12) -- in float32 and under bf16
autocast, dropout 0: 3 warm-up steps, then `--steps` timed optimizer steps of `src.train.train_step` (the
very function the training loop calls: forward, backward, clipping, AdamW) on the model, optimizer and
data loader that train.py builds. Reported: ms per step (median), tokens/s, model GFLOP/s (the model's
`flops_per_token()` x tokens/s) and that as a fraction of this CPU's measured fp32 and bf16 matmul
peaks (src.engine.perf.cpu_peaks), with nanoGPT's times on a 2-core machine (the project lead's
measurements) and the ratio ours / nanoGPT (> 1: we are faster). nanoGPT runs in float32 on a CPU.

Quality (--quality): `python src/train.py --preset quality-300s --data ../shared/data/tinyshakespeare.txt`
with a wall-clock budget for training (from the first step, evaluations included), kept by the run itself
(`--max-seconds`: the cosine schedule is fitted to the budget, so it has decayed when time runs out); a
SIGTERM 60 s later is only a safety net, after which the saved model is measured on train.py's own
validation batches. Goal: <= 1.50; nanoGPT's laptop configuration stretched to 300 s
reaches 1.577.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from src.dataloader import BatchLoader, prepare_data  # noqa: E402
from src.engine.config import parse_args  # noqa: E402
from src.engine.corpus import CACHE_DIR  # noqa: E402
from src.engine.distributed import Distributed  # noqa: E402
from src.engine.perf import cpu_peaks  # noqa: E402
from src.engine.precision import Precision  # noqa: E402
from src.train import build_model, configure_optimizer, estimate_loss, train_step  # noqa: E402

VOCAB = 65  # tiny Shakespeare's characters; the speed does not depend on which ids the batches hold
QUALITY_DATA = "../shared/data/tinyshakespeare.txt"  # relative to the repo root
QUALITY_GOAL, NANOGPT_300S = 1.50, 1.577

# name -> (train.py flags, nanoGPT's seconds per step on the project lead's 2-core machine, dropout 0)
SHAPES = {
    "user 6L/6H/384, ctx 256, B 16": (
        ["--n-layer", "6", "--n-head", "6", "--d-model", "384", "--block-size", "256", "--batch-size", "16"], 1.57),
    "nanoGPT laptop 4L/4H/128, ctx 64, B 12": (
        ["--n-layer", "4", "--n-head", "4", "--d-model", "128", "--block-size", "64", "--batch-size", "12"], 0.033),
}
NOTES = (
    "nanoGPT reference (2-core machine, float32): user shape 1.57 s/step with dropout 0 (1.92 s = 2,100 tokens/s "
    "with dropout 0.2); laptop shape 33 ms/step = 23,200 tokens/s."
)


def time_steps(flags: list[str], dtype: str, steps: int, warmup: int):
    """(seconds of each timed optimizer step, the TrainConfig, the model) for this shape and precision."""
    cfg = parse_args([*flags, "--dropout", "0", "--dtype", dtype, "--device", "cpu", "--compile", "off"])
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    tokens = np.random.default_rng(0).integers(0, VOCAB, 1_000_000).astype(np.uint16)
    loader = BatchLoader(tokens, cfg.block_size, cfg.batch_size, device, seed=cfg.seed)
    model = build_model(cfg, VOCAB).to(device)
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, device, cfg.beta2)
    precision = Precision(device, torch.bfloat16 if dtype == "bfloat16" else torch.float32)  # no scaler
    ddp = Distributed()  # one process
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        _, _, healthy = train_step(model, optimizer, loader, 1, precision, ddp, cfg.grad_clip)
        if i >= warmup:
            times.append(time.perf_counter() - start)
        assert healthy, "a non-finite gradient in the benchmark"
    return times, cfg, model


def speed_table(steps: int, warmup: int, dtypes: list[str]) -> str:
    peaks = cpu_peaks(CACHE_DIR)
    header = (f"{'shape':<40} {'dtype':<9} {'ms/step':>8} {'best ms':>8} {'tokens/s':>9} {'GFLOP/s':>8} {'%fp32pk':>8} "
              f"{'%bf16pk':>8} {'nanoGPT ms':>10} {'ours/nGPT':>9}")
    lines = [header, "-" * len(header)]
    for name, (flags, nanogpt_s) in SHAPES.items():
        for dtype in dtypes:
            times, cfg, model = time_steps(flags, dtype, steps, warmup)
            per_step = statistics.median(times)
            tokens_per_s = cfg.batch_size * cfg.block_size / per_step
            flops = model.flops_per_token() * tokens_per_s
            lines.append(
                f"{name:<40} {dtype:<9} {per_step * 1e3:>8.1f} {min(times) * 1e3:>8.1f} {tokens_per_s:>9,.0f} "
                f"{flops / 1e9:>8.1f} {flops / peaks['fp32']:>8.1%} {flops / peaks['bf16']:>8.1%} "
                f"{nanogpt_s * 1e3:>10.0f} {nanogpt_s / per_step:>9.2f}"
            )
            print(lines[-1], file=sys.stderr, flush=True)  # progress while the rest runs
    lines.append("")
    lines.append(f"ms/step: median of {steps} steps after {warmup} warm-up steps (best: the fastest of them); "
                 "tokens/s, GFLOP/s and ours/nGPT use the median")
    lines.append(f"{torch.get_num_threads()} threads; "
                 f"measured matmul peaks: fp32 {peaks['fp32'] / 1e9:,.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:,.0f} "
                 f"GFLOP/s; load average {os.getloadavg()[0]:.1f} (other work on the machine slows every row)")
    lines.append(NOTES)
    return "\n".join(lines)


def quality_run(budget: float, extra: list[str]) -> None:
    data = (REPO_ROOT / QUALITY_DATA).resolve()
    if not data.exists():
        sys.exit(f"error: --quality needs tiny Shakespeare at {QUALITY_DATA} (relative to the repo root: {data}); "
                 "put the file there (https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
                 "input.txt)")
    with tempfile.TemporaryDirectory(prefix="quality-300s-") as tmp:
        flags = ["--preset", "quality-300s", "--data", QUALITY_DATA, "--out-dir", tmp, "--sample-tokens", "0",
                 "--max-seconds", str(budget), *extra]
        print("$ python src/train.py " + " ".join(flags), flush=True)
        proc = subprocess.Popen([sys.executable, "src/train.py", *flags], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        clock: dict[str, float] = {}

        def echo() -> None:  # print the run's output as it comes; note when the training loop starts
            for line in proc.stdout:
                print(line, end="", flush=True)
                if "started" not in clock and line.startswith("initial loss"):
                    clock["started"] = time.time()

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        stopped = False
        while proc.poll() is None:
            # The run keeps to --max-seconds itself; SIGTERM is only a safety net for a run that overshoots.
            if not stopped and "started" in clock and time.time() - clock["started"] > budget + 60:
                print(f"--- {budget + 60:.0f} s passed: SIGTERM (the run saves and exits) ---", flush=True)
                clock["stopped"] = time.time()
                proc.send_signal(signal.SIGTERM)
                stopped = True
            time.sleep(0.2)
        reader.join()
        started = clock.get("started")
        if proc.returncode != 0:
            sys.exit(f"error: training failed with exit status {proc.returncode}")
        elapsed = clock.get("stopped", time.time()) - started if started else float("nan")
        cfg = parse_args(flags)
        if stopped:  # measure the saved model on train.py's validation batches
            from src.engine.checkpoint import load_pretrained

            model, tokenizer = load_pretrained(tmp)
            val_tokens = prepare_data(str(data), cfg.block_size, cfg.cache_dir, tokenizer).val
            batches = BatchLoader(val_tokens, cfg.block_size, cfg.batch_size,
                                  split="validation").fixed_batches(cfg.eval_iters)
            precision = Precision.choose("cpu", cfg.dtype)
            val = estimate_loss(model, batches, precision.autocast_ctx, Distributed())
        else:
            rows = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines() if x.strip()]
            val = [r for r in rows if r.get("event") == "eval"][-1]["val_loss"]
        verdict = "meets" if val <= QUALITY_GOAL else "misses"
        print(f"\nquality-300s: val loss {val:.4f} after {elapsed:.0f} s of training "
              f"({'stopped by the budget' if stopped else 'finished within the budget'}); {verdict} the goal "
              f"<= {QUALITY_GOAL} (nanoGPT's laptop configuration in 300 s: {NANOGPT_300S})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per row")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                        help="precisions to time (bf16 on a CPU without bf16 instructions takes minutes a step)")
    parser.add_argument("--quality", action="store_true", help="run the 300 s time-to-quality check instead")
    parser.add_argument("--budget", type=float, default=300.0, help="--quality: seconds of training")
    args, extra = parser.parse_known_args()
    if extra and not args.quality:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quality:
        quality_run(args.budget, extra)
    else:
        print(speed_table(args.steps, args.warmup, args.dtypes))


if __name__ == "__main__":
    main()
