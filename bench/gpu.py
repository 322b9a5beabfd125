"""GPU figures in one run: GPT-2 124M training speed and MFU, the shakespeare-char time to nanoGPT's 1.4697,
and decoding speed. Written to fit about 10 minutes of a borrowed GPU; every part runs the project's own code.

    python bench/gpu.py [--out FILE.json] [--parts train decode shakespeare] [--batch-size 16] [--budget 240]
    python bench/gpu.py --quick --device cpu     # smoke test on a CPU: tiny sizes, about 20 s

1. **train**: GPT-2 124M (12 layers, 12 heads, 768 wide, context 1,024, vocabulary 50,257) built as train.py
   builds it (`parse_args(["--preset", "gpt2-124m", ...])`, `build_model`, `configure_optimizer`: fused AdamW
   on CUDA; `Precision.choose`: bf16 autocast and TF32; `torch.compile`; attention through
   `F.scaled_dot_product_attention`, i.e. flash attention), trained by `train_step` on random tokens (no data
   needed: the speed does not depend on which ids a batch holds), one micro-batch of 16 x 1,024 tokens per
   optimizer step (`--batch-size`, `--accum`). 3 warm-up steps (the first one compiles), then 20 timed
   steps between `torch.cuda.synchronize()` calls. Reported: ms/step, tokens/s, MFU = `flops_per_token()` x
   tokens/s / peak, against the data sheet's dense bf16 peak (src/engine/perf.py's table: 989 TFLOP/s for
   an H100/H200 SXM) and against a bf16 8192^3 matmul measured here (what the card really reaches: the best
   of three rounds of half a second each).
   Estimate on an H200: 1-2 min (compiling forward + backward takes most of it; the steps, ~40 ms each).
2. **shakespeare**: `python src/train.py --preset shakespeare-char` (nanoGPT's recipe: 6 layers, 384 wide,
   context 256, batch 64, dropout 0.2, 5,000 steps, an evaluation of 200 batches every 250 steps) on tiny
   Shakespeare, as a subprocess. Its output is echoed; the clock is read as each evaluation line arrives
   (metrics.jsonl has no time field). Reported: the first evaluation with validation loss <= 1.4697
   (nanoGPT's best on one A100, in about 3 minutes by its README) and the seconds of training until then,
   the final and best validation loss, tokens/s and MFU (medians of the run's own log rows). `--budget`
   (240 s) is handed to train.py as `--max-seconds`: if 5,000 steps do not fit, the run's cosine schedule is
   shortened to end in time (the table says so). The budget counts compiling, so early in the run the fitted
   schedule decays a little faster than nanoGPT's even when all 5,000 steps fit; `--budget 0` leaves the
   schedule untouched (the run is then stopped only after 420 s). Estimate on an H200: 2-4 min, compiling
   included.
   The text: `--data PATH`, else ../shared/data/tinyshakespeare.txt or out-gpu/tinyshakespeare.txt (relative
   to the repo root); without one the part is skipped, with a message.
3. **decode**: GPT-2 124M with random weights, batch 1, a 1-token prompt, 200 new tokens sampled at
   temperature 1 by `model.generate` (KV cache), in float32 (TF32 matmuls) and with bf16 weights, the two
   taking turns run by run; median of 3 runs after a warm-up, and bf16's ratio to float32. Estimate: under 30 s.

The parts run in the order train, decode, shakespeare: the long one last, so that a run cut short by the
device's 10-minute limit still has the other two in its JSON, which is rewritten after every part.
Every part is guarded: one that fails prints one line (`error: <part> failed: ...`), the others still run,
the JSON records the error and its traceback, and the exit status is 1. A train.py run that dies half-way
keeps the evaluations it logged (status "partial", its table printed), and each line it prints is stamped
with the seconds since it started, so that a log cut short still says when each evaluation came. Where
torch.compile fails, the train part times the model uncompiled and the shakespeare part trains uncompiled
(both say so) rather than losing the figures. The text and every count are checked before anything runs.
The JSON (`--out`, default out-gpu/gpu.json, written atomically after every part) holds every number with
the GPU's name, torch's version and CUDA's.

How to run it. On a GPU machine with a network: `pip install -r requirements.txt && python bench/gpu.py`.
On the borrowed H200 there is no network, so no `pip install` (it would stop at the torch pin): its image's
`python3` already has torch with CUDA, numpy, safetensors, tqdm, matplotlib and regex, all this needs. The
text must travel with the repo; out-*/ is git-ignored, so copy it there here and carry that folder along:

    mkdir -p out-gpu && cp ../shared/data/tinyshakespeare.txt out-gpu/

then, on the GPU machine (carrying out-gpu/, with a 600 s limit):

    set -o pipefail; PYTHONUNBUFFERED=1 python3 bench/gpu.py --out $OUT/gpu.json 2>&1 | tee $OUT/gpu.log

Total estimate: 5-7 minutes, machine start not included. `--quick` shrinks every part (2-layer 64-wide model,
context 64, 30 training steps, 20 decoded tokens; no compile on a CPU) to check the script, not to measure.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from src.dataloader import BatchLoader  # noqa: E402
from src.engine.config import PRESETS, parse_args  # noqa: E402
from src.engine.distributed import Distributed  # noqa: E402
from src.engine.errors import ArgumentParser, positive_int  # noqa: E402
from src.engine.files import atomic_write_text  # noqa: E402
from src.engine.perf import peak_flops  # noqa: E402
from src.engine.precision import Precision  # noqa: E402
from src.model import GPT, GPTConfig  # noqa: E402
from src.train import build_model, configure_optimizer, lr_at, train_step  # noqa: E402

NO_GPU = "no CUDA GPU: run this on a GPU machine (bench/gpu.py --quick --device cpu smoke-tests it here)"
PARTS = ("train", "decode", "shakespeare")  # the long one last: a run cut short keeps the other two
VOCAB = 50257  # GPT-2's vocabulary
NANOGPT_TARGET = 1.4697  # nanoGPT's best validation loss for shakespeare-char (one A100, ~3 minutes)
DATA_CANDIDATES = ("../shared/data/tinyshakespeare.txt", "out-gpu/tinyshakespeare.txt")  # from the repo root
GPT2_124M = GPTConfig(vocab_size=VOCAB, block_size=1024, n_layer=12, n_head=12, d_model=768)
QUICK_MODEL_FLAGS = ["--n-layer", "2", "--n-head", "2", "--d-model", "64", "--block-size", "64"]
QUICK_SHAKESPEARE_FLAGS = [
    "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "32", "--batch-size", "8",
    "--max-iters", "30", "--eval-interval", "10", "--eval-iters", "2", "--log-interval", "5",
    "--warmup-iters", "3", "--compile", "off",
]
QUICK_TARGET = 3.7  # tiny model, 30 steps (starts at ~3.9): a loose target, to exercise the bookkeeping
EVAL_LINE = re.compile(r"^step\s+(\d+): train loss ([\d.]+), val loss ([\d.]+)")


def sync(device: torch.device) -> None:
    """Wait for the GPU: it runs ahead of Python, so a clock read without this measures only the launches."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    """Give the memory of the part that just ended back, so that the next one starts from an empty card."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def measured_matmul_peak(device: torch.device, n: int = 8192, seconds: float = 0.5, rounds: int = 3) -> float:
    """bf16 FLOP/s of an n x n x n matrix product on this GPU: what the card really reaches, next to the data
    sheet's figure. The best of `rounds` rounds of at least `seconds` each, after a warm-up: one product takes
    about 1.5 ms on an H100-class card, so a handful would measure launches and clock ramps, not the card."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    best = 0.0
    for _ in range(rounds):
        reps, start = 0, time.perf_counter()
        while reps < 10 or time.perf_counter() - start < seconds:
            for _ in range(10):  # ten launches between clock reads: the queue stays full
                a @ b
            reps += 10
            sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def compiler_failed(err: BaseException) -> bool:
    """Was `err` raised by torch.compile's own machinery (dynamo, inductor, Triton), not by the step it runs?"""
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor", "triton"))


# --- 1. training throughput of GPT-2 124M ------------------------------------------------------------------


def flash_attention_runs(model, loader, precision: Precision) -> bool:
    """Does this model's forward pass run with PyTorch's flash-attention kernel alone (bf16 under autocast)?

    `F.scaled_dot_product_attention` silently falls back to slower kernels when flash cannot take its inputs;
    allowing only flash turns that fallback into an error, so this proves the timed steps could use it.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    x, y = loader.next_batch()
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]), precision.autocast_ctx:
            model(x[:1], y[:1])
        return True
    except RuntimeError as err:
        print(f"flash attention unavailable: {str(err).splitlines()[0][:200]}", flush=True)
        return False


def train_throughput(args, device: torch.device) -> dict:
    """Tokens/s and MFU of `train_step` on GPT-2 124M, random tokens, as train.py builds and compiles it."""
    flags = ["--preset", "gpt2-124m", "--device", device.type, "--dtype", args.dtype, "--dropout", "0"]
    if args.quick:
        flags += QUICK_MODEL_FLAGS
    batch = args.batch_size or (4 if args.quick else 16)
    block = 64 if args.quick else GPT2_124M.block_size
    flags += ["--batch-size", str(batch), "--tokens-per-step", str(batch * block * args.accum)]
    cfg = parse_args(flags)
    precision = Precision.choose(cfg.device, cfg.dtype)  # cuda:0, bf16 autocast and TF32 on a GPU
    device = precision.device
    torch.manual_seed(cfg.seed)
    tokens = np.random.default_rng(0).integers(0, VOCAB, 4_000_000).astype(np.uint16)
    loader = BatchLoader(tokens, cfg.block_size, cfg.batch_size, device, seed=cfg.seed)  # pinned copies on CUDA
    model = build_model(cfg, VOCAB).to(device)
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, device, cfg.beta2)  # fused on CUDA
    compiled = device.type == "cuda" and not args.no_compile  # on a CPU compiling costs more than it gives
    ddp = Distributed()  # one process
    step_model = ddp.wrap(torch.compile(model) if compiled else model, device)
    accum = cfg.micro_batches_per_step(ddp.world_size)
    warmup, steps = (1, 3) if args.quick else (args.warmup, args.steps)
    flash = flash_attention_runs(model, loader, precision) if device.type == "cuda" else None

    def step(i: int) -> float:
        lr = lr_at(i, cfg.lr, cfg.final_min_lr, cfg.warmup_iters, cfg.max_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, _, healthy = train_step(step_model, optimizer, loader, accum, precision, ddp, cfg.grad_clip)
        if not healthy:
            raise RuntimeError(f"a non-finite loss or gradient at benchmark step {i}")
        return loss

    sync(device)
    start = time.perf_counter()
    compile_error = None
    try:
        step(0)  # compiles
    except Exception as err:  # noqa: BLE001 - a compiler that fails here (no Triton, no C compiler) costs the
        if not (compiled and compiler_failed(err)):  # compiled figures, not the part: the same steps, uncompiled
            raise  # anything else (out of memory, a non-finite loss) is the part's failure
        compile_error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
        print(f"torch.compile failed ({compile_error}); timing the model uncompiled", flush=True)
        args.compile_failed = True  # the shakespeare part then trains uncompiled too
        compiled, step_model = False, ddp.wrap(model, device)
        step(0)
    sync(device)
    first_step_s = time.perf_counter() - start
    for i in range(1, warmup):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        loss = step(i)
    sync(device)
    elapsed = time.perf_counter() - start

    tokens_per_step = cfg.batch_size * cfg.block_size * accum
    tokens_per_s = steps * tokens_per_step / elapsed
    flops_per_token = model.flops_per_token()
    result = dict(
        model=f"{cfg.n_layer}L/{cfg.n_head}H/{cfg.d_model}, ctx {cfg.block_size}, vocab {VOCAB}",
        params=model.num_params(), batch_size=cfg.batch_size, block_size=cfg.block_size, accum=accum,
        dtype=str(precision.dtype).removeprefix("torch."), precision=precision.reason, compiled=compiled,
        compile_error=compile_error,
        fused_adamw=bool(optimizer.defaults.get("fused")), flash_attention=flash, warmup_steps=warmup,
        timed_steps=steps,
        first_step_s=first_step_s, ms_per_step=1e3 * elapsed / steps, tokens_per_s=tokens_per_s,
        flops_per_token=flops_per_token, model_flops_per_s=flops_per_token * tokens_per_s,
        final_loss=float(loss), peak_flops=None, peak_source=None, mfu=None, matmul_peak_flops=None,
        mfu_vs_matmul=None, max_memory_gb=None,
    )
    if args.peak_flops or device.type == "cuda" or not args.quick:  # a CPU peak is a 1-2 s probe: not in --quick
        peak, source = peak_flops(device, precision.dtype, cfg.cache_dir, args.peak_flops)
        result.update(peak_flops=peak, peak_source=source, mfu=peak and result["model_flops_per_s"] / peak)
    if device.type == "cuda":
        matmul = measured_matmul_peak(device)
        result.update(matmul_peak_flops=matmul, max_memory_gb=torch.cuda.max_memory_allocated(device) / 1e9,
                      mfu_vs_matmul=result["model_flops_per_s"] / matmul if precision.dtype == torch.bfloat16
                      else None)  # the probe multiplies in bf16: no yardstick for a float32 or float16 run
        if result["peak_flops"] is None and result["mfu_vs_matmul"] is not None:  # missing from perf.py's table
            result.update(peak_flops=matmul, peak_source="measured bf16 8192^3 matmul", mfu=result["mfu_vs_matmul"])
    return result  # the model, optimizer and compiled graph go with this frame (free() collects them)


def train_table(r: dict, gpu: str) -> str:
    def pct(x):
        return "-" if x is None else f"{x:.1%}"

    peak = "-" if r["peak_flops"] is None else f"{r['peak_flops'] / 1e12:,.0f} TFLOP/s ({r['peak_source']})"
    matmul = "-" if r["matmul_peak_flops"] is None else f"{r['matmul_peak_flops'] / 1e12:,.0f} TFLOP/s"
    memory = "-" if r["max_memory_gb"] is None else f"{r['max_memory_gb']:.1f} GB"
    flash = {True: "the fused kernel runs", False: "NOT available", None: "not checked (CPU)"}[r["flash_attention"]]
    return "\n".join([
        "| device | model | batch x ctx | dtype | compile | fused AdamW | ms/step | tokens/s | model TFLOP/s "
        "| MFU (peak) | MFU (measured matmul) | first step | max memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {gpu} | {r['model']} | {r['batch_size']} x {r['block_size']} x {r['accum']} | {r['dtype']} "
        f"| {'on' if r['compiled'] else 'off'} | {'yes' if r['fused_adamw'] else 'no'} | {r['ms_per_step']:.1f} "
        f"| {r['tokens_per_s']:,.0f} | {r['model_flops_per_s'] / 1e12:.2f} | {pct(r['mfu'])} "
        f"| {pct(r['mfu_vs_matmul'])} "
        f"| {r['first_step_s']:.1f} s | {memory} |",
        "",
        f"peak: {peak}; measured bf16 matmul: {matmul}; {r['flops_per_token'] / 1e6:,.0f} MFLOP per token "
        f"(6N + 12LCT); {r['timed_steps']} timed steps after {r['warmup_steps']} warm-up step(s)"
        f"{' (the first one compiles)' if r['compiled'] else ''}; flash attention: {flash}; loss "
        f"{r['final_loss']:.3f} on random tokens (ln {VOCAB} = {math.log(VOCAB):.3f})"
        + (f"; torch.compile FAILED ({r['compile_error']}), so uncompiled" if r.get("compile_error") else ""),
    ])


# --- 2. shakespeare-char: time to nanoGPT's validation loss ------------------------------------------------


def find_data(args) -> Path | None:
    """The text of the shakespeare part: --data, else the first of DATA_CANDIDATES that exists, else None.
    Looked for before any part runs, so that a missing text is known at once, not minutes into the run."""
    if args.data:
        path = Path(args.data)
        if not path.is_file():
            raise SystemExit(f"error: --data {args.data} is not a file")
        return path.resolve()
    for candidate in DATA_CANDIDATES:
        path = REPO_ROOT / candidate
        if path.exists():
            return path.resolve()
    return None


def shakespeare_time(args, device: torch.device) -> dict:
    """Run train.py's shakespeare-char preset; when did validation first reach the target, and where did it end?"""
    data = args.text
    if data is None:
        return {"status": "skipped", "reason": f"tiny Shakespeare not found at {' or '.join(DATA_CANDIDATES)} "
                                               "(relative to the repo root); pass --data PATH"}
    target = args.target if args.target is not None else (QUICK_TARGET if args.quick else NANOGPT_TARGET)
    budget = args.budget if args.budget is not None else (60.0 if args.quick else 240.0)
    with tempfile.TemporaryDirectory(prefix="gpu-bench-shakespeare-") as tmp:
        flags = ["--preset", "shakespeare-char", "--data", str(data), "--out-dir", tmp, "--sample-tokens", "0",
                 "--device", device.type]
        if budget > 0:  # --max-seconds re-fits the cosine to the budget as the run goes
            flags += ["--max-seconds", str(budget)]
        elif not args.quick:  # nanoGPT's schedule untouched: an explicit --max-iters is an exact length
            flags += ["--max-iters", str(PRESETS["shakespeare-char"]["max_iters"])]
        if args.quick:
            flags += QUICK_SHAKESPEARE_FLAGS
        if getattr(args, "compile_failed", False):  # the train part found torch.compile broken on this machine
            flags += ["--compile", "off"]
        print("$ python src/train.py " + " ".join(flags), flush=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if args.quick and device.type == "cpu":
            env["OMP_NUM_THREADS"] = "1"  # a smoke test on a shared CPU: stay out of the others' way
        launched = time.time()
        proc = subprocess.Popen([sys.executable, "src/train.py", *flags], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env)
        clock: dict[str, float] = {}
        eval_times: dict[int, float] = {}  # step -> wall clock when its evaluation line was printed
        tail: list[str] = []

        def echo() -> None:  # print the run's output as it comes, and note when each evaluation arrives
            for line in proc.stdout:
                now = time.time()  # each line stamped: if the whole run is cut short, the log still has the times
                print(f"    [{now - launched:6.1f} s] " + line, end="", flush=True)
                tail[:] = [*tail[-19:], line.rstrip()]
                match = EVAL_LINE.match(line)
                if match:
                    eval_times[int(match.group(1))] = now
                elif line.startswith("initial loss") and "started" not in clock:
                    clock["started"] = now  # the training loop (and train.py's own --max-seconds clock) starts

        reader = threading.Thread(target=echo, daemon=True)
        reader.start()
        terminated, limit = False, budget if budget > 0 else 300.0
        while proc.poll() is None:  # the run keeps to --max-seconds itself; these are safety nets
            waited = time.time() - launched
            if not terminated and waited > limit + 120:
                print(f"--- {waited:.0f} s: SIGTERM (the run saves and exits) ---", flush=True)
                proc.send_signal(signal.SIGTERM)
                terminated = True
            elif waited > limit + 180:
                proc.kill()
            time.sleep(0.2)
        reader.join(timeout=10)
        finished = time.time()
        error = None
        if proc.returncode != 0:  # what it logged before it stopped is still worth its device time
            last = next((line for line in reversed(tail) if line.strip()), "")
            error = f"train.py exited with status {proc.returncode}: {last}"
        metrics = Path(tmp) / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the last line, cut short by a kill
                pass
        cfg = parse_args(flags)

    started = clock.get("started", launched)
    evals = [dict(step=r["step"], val_loss=r["val_loss"], train_loss=r["train_loss"],
                  training_s=max(0.0, eval_times[r["step"]] - started) if r["step"] in eval_times else None)
             for r in rows if r.get("event") == "eval"]
    if not evals:
        raise RuntimeError(error or "train.py logged no evaluation")
    trains = [r for r in rows if r.get("event") == "train"][1:]  # the first row holds the compile
    reached = next((e for e in evals if e["val_loss"] <= target), None)
    last = evals[-1]
    return dict(
        status="partial" if error else "ok", error=error, stopped_by_safety_net=terminated,
        data=str(data), flags=flags, target=target, budget_s=budget, max_iters=cfg.max_iters,
        reached=reached is not None, target_step=reached and reached["step"],
        target_training_s=reached and reached["training_s"],
        final_step=last["step"], final_val_loss=last["val_loss"], final_train_loss=last["train_loss"],
        best_val_loss=min(e["val_loss"] for e in evals),
        ended_by_budget=last["step"] < cfg.max_iters and not terminated and not error,
        training_s=last["training_s"], total_s=finished - launched, startup_s=started - launched,
        tokens_per_s=statistics.median(r["tokens_per_s"] for r in trains) if trains else None,
        mfu=statistics.median(r["mfu"] for r in trains) if trains and "mfu" in trains[0] else None,
        evals=evals,
    )


def shakespeare_table(r: dict) -> str:
    def num(x, fmt):
        return "-" if x is None else format(x, fmt)

    at = (f"step {r['target_step']}, {num(r['target_training_s'], '.0f')} s" if r["reached"] else "not reached")
    stopped = (" (time budget)" if r["ended_by_budget"] else " (stopped by the safety net)"
               if r.get("stopped_by_safety_net") else " (the run failed)" if r.get("error") else "")
    end = f"step {r['final_step']} of {r['max_iters']}" + stopped
    return "\n".join([
        "",
        "| target val loss | reached at | final | final val loss | best val loss | training s | startup s "
        "| tokens/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {r['target']} | {at} | {end} | {r['final_val_loss']:.4f} | {r['best_val_loss']:.4f} "
        f"| {num(r['training_s'], '.0f')} | {r['startup_s']:.0f} | {num(r['tokens_per_s'], ',.0f')} "
        f"| {'-' if r['mfu'] is None else format(r['mfu'], '.1%')} |",
        "",
        "seconds of training from the first step (the initial evaluation done; compiling included) to the "
        f"evaluation line; startup: process start, data, model. --max-seconds {r['budget_s'] or 'none'}. nanoGPT: best "
        f"{NANOGPT_TARGET} in about 3 minutes on one A100 (its README).",
    ])


# --- 3. decoding speed ---------------------------------------------------------------------------------------


def decode_speed(args, device: torch.device) -> dict:
    """Tokens/s of `model.generate` (KV cache, sampling) at batch 1, float32 and bf16 weights, median of 3; the
    two take turns run by run, so that the card's clocks and temperature treat them alike."""
    config = GPTConfig(vocab_size=VOCAB, block_size=64, n_layer=2, n_head=2, d_model=64) if args.quick else GPT2_124M
    new_tokens = 20 if args.quick else args.new_tokens
    if device.type == "cuda":
        Precision.choose("cuda", "auto")  # TF32 matmuls for float32, as in training
    torch.manual_seed(0)
    model = GPT(config).to(device).eval()
    prompt = torch.zeros((1, 1), dtype=torch.long, device=device)
    models = {"float32": model, "bfloat16": copy.deepcopy(model).to(torch.bfloat16)}

    def run(m) -> float:
        sync(device)
        start = time.perf_counter()
        out = m.generate(prompt, new_tokens)
        sync(device)
        assert out.shape == (1, 1 + new_tokens)
        return time.perf_counter() - start

    for m in models.values():
        run(m)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            seconds[name].append(run(m))
    rows = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        rows[name] = dict(tokens_per_s=new_tokens / median, ms_per_token=1e3 * median / new_tokens)
    for row in rows.values():
        row["vs_float32"] = row["tokens_per_s"] / rows["float32"]["tokens_per_s"]
    del model, models
    return dict(model=f"{config.n_layer}L/{config.n_head}H/{config.d_model}, ctx {config.block_size}, vocab "
                      f"{config.vocab_size}", new_tokens=new_tokens, repeats=args.repeats, weights=rows)


def decode_table(r: dict) -> str:
    lines = ["| model | weights | new tokens | tokens/s | ms/token | / float32 |", "|---|---|---|---|---|---|"]
    for name, row in r["weights"].items():
        lines.append(f"| {r['model']} | {name} | {r['new_tokens']} | {row['tokens_per_s']:,.1f} "
                     f"| {row['ms_per_token']:.2f} | {row['vs_float32']:.2f}x |")
    lines += ["", f"batch 1, a 1-token prompt, sampling at temperature 1, KV cache; median of {r['repeats']} runs "
                  "after a warm-up, the two weights taking turns run by run"]
    return "\n".join(lines)


# --- the run --------------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict:
    info = dict(device=str(device), gpu=None, torch=torch.__version__, cuda=torch.version.cuda,
                python=platform.python_version(), numpy=np.__version__, cpu=platform.processor() or platform.machine(),
                cpu_threads=torch.get_num_threads())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gb=props.total_memory / 1e9,
                    multiprocessors=props.multi_processor_count, capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported())
    return info


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python bench/gpu.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke test, not a measurement")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: for the --quick smoke test only")
    p.add_argument("--out", default=str(REPO_ROOT / "out-gpu" / "gpu.json"), help="the JSON file of all numbers")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which parts to run")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="train: sequences per micro-batch (default 16)")
    p.add_argument("--accum", type=positive_int, default=1, help="train: micro-batches per optimizer step")
    p.add_argument("--warmup", type=positive_int, default=3,
                   help="train: untimed steps first, at least 1 (the first one compiles)")
    p.add_argument("--steps", type=positive_int, default=20, help="train: timed steps")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto",
                   help="train: autocast precision (auto: bf16 where the GPU has it)")
    p.add_argument("--no-compile", action="store_true", help="train: without torch.compile")
    p.add_argument("--peak-flops", type=float, default=None, help="train: the hardware's peak for MFU")
    p.add_argument("--data", default=None, help="shakespeare: the text (default: tiny Shakespeare, see above)")
    p.add_argument("--target", type=float, default=None, help=f"shakespeare: target val loss ({NANOGPT_TARGET})")
    p.add_argument("--budget", type=float, default=None,
                   help="shakespeare: train.py --max-seconds (240; 0: none, SIGTERM after 420 s)")
    p.add_argument("--new-tokens", type=positive_int, default=200, help="decode: tokens to generate")
    p.add_argument("--repeats", type=positive_int, default=3, help="decode: timed runs (median)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.quick:
        print("warning: --device cpu measures nothing useful without --quick (bench/train_speed.py measures a CPU)",
              file=sys.stderr)
    if args.quick and args.device == "cpu":
        torch.set_num_threads(1)  # tiny models, a shared machine
    device = torch.device("cuda", 0) if args.device == "cuda" else torch.device("cpu")
    args.text = find_data(args) if "shakespeare" in args.parts else None
    env = environment(device)
    name = env["gpu"] or f"CPU ({env['cpu']})"
    print(f"{name}; torch {env['torch']}, CUDA {env['cuda']}, python {env['python']}"
          f"{'; --quick: tiny sizes, not a measurement' if args.quick else ''}", flush=True)
    if "shakespeare" in args.parts:
        print(f"shakespeare: {args.text or 'NO TEXT FOUND (the part will be skipped; --data PATH)'}", flush=True)
    report = {**env, "quick": args.quick, "argv": sys.argv[1:] if argv is None else argv, "parts": {}}
    failed = False
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        run, table = {"train": (train_throughput, lambda r: train_table(r, name)),
                      "shakespeare": (shakespeare_time, shakespeare_table),
                      "decode": (decode_speed, decode_table)}[part]
        print(f"\n## {part}\n", flush=True)
        start = time.perf_counter()
        try:
            result = run(args, device)
        except Exception as err:  # noqa: BLE001 - one broken part must not cost the others their device time
            message = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            print(f"error: {part} failed: {message}", flush=True)
            result = {"status": "failed", "error": message, "traceback": traceback.format_exc()}
            failed = True
        result.setdefault("status", "ok")
        result["seconds"] = time.perf_counter() - start
        report["parts"][part] = result
        if result["status"] in ("ok", "partial"):
            print(table(result), flush=True)
        if result["status"] == "partial":  # the figures up to where it stopped are above
            print(f"error: {part} ended early: {result['error']}", flush=True)
            failed = True
        elif result["status"] == "skipped":
            print(f"skipped: {result['reason']}", flush=True)
        free(device)
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")  # after every part: a later crash keeps the rest
    print(f"\nnumbers in {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
