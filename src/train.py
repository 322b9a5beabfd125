"""Train a language model on your text: `python src/train.py` (or `python -m src.train`).

The steps, in order:
1. read the text, split it 90/10 into train and validation, and build a tokenizer (one token per
   character by default; `--tokenizer bpe` learns one from the training split; `gpt2` is GPT-2's);
2. turn both splits into token ids (cached on disk, so a second run skips this);
3. build the model (GPT-2, or the bigram baseline; `--init-from gpt2` starts from OpenAI's weights)
   and the AdamW optimizer;
4. loop: take a batch, compute the loss, backpropagate, clip the gradient, step the optimizer;
   every `eval_interval` steps measure train/val loss on fixed batches and save a checkpoint;
5. at the end: save, plot the losses, and print a sample of generated text.

Everything lands in `--out-dir`: the latest checkpoint (a Hugging Face GPT-2 folder), the best one by
validation loss in `best/`, the exact training state in `resume.safetensors` (for `--resume`),
`metrics.jsonl` and `loss.png`. Ctrl-C (or SIGTERM) saves and exits cleanly.

Several processes: `torchrun --nproc_per_node=N src/train.py ...` (see `distributed.py`).
"""

from __future__ import annotations

import contextlib
import math
import platform
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/train.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from src import distributed
from src.bigram import BigramLanguageModel
from src.bpe import ENDOFTEXT, BPETokenizer
from src.checkpoint import folder_tokenizer, load_model, save_checkpoint
from src.config import TrainConfig, parse_args
from src.corpus import CACHE_DIR, read_documents, resolve_data
from src.dataloader import BatchLoader, cached_tokens, check_length, train_val_split
from src.device import autocast, resolve_device, resolve_dtype
from src.errors import UserError, run_cli
from src.estimate import describe, flops_per_token
from src.hardware import peak_flops
from src.metrics import MetricsLog, bits
from src.model import GPT, GPTConfig
from src.optim import configure_optimizer, lr_at
from src.resume import STATE_FILE, load_state, save_state
from src.sample import prompt_ids
from src.tokenizer import CharTokenizer

# --- data --------------------------------------------------------------------------------------------------


def build_tokenizer(cfg: TrainConfig, train_text: str, full_text: str):
    """The tokenizer --tokenizer asks for (fine-tuning uses the pretrained folder's own instead)."""
    if cfg.tokenizer == "gpt2":
        return BPETokenizer.gpt2()
    if cfg.tokenizer == "bpe":  # learned from the training split only: validation stays unseen
        return BPETokenizer.train(train_text, cfg.vocab_size, special_tokens=[ENDOFTEXT], verbose=True)
    return CharTokenizer.from_text(full_text)  # every character of the text, so validation has no unknowns


def split_text(text: str, separator: str) -> tuple[str, str]:
    """90/10 train/val split by characters, moved back to the start of a separator that the cut would
    split in two (half an "<|endoftext|>" on each side would be two pieces of plain text)."""
    train_text, _ = train_val_split(text)
    cut = len(train_text)
    start = text.rfind(separator, 0, cut + len(separator) - 1)  # a separator that begins before the cut...
    if start != -1 and start < cut < start + len(separator):  # ...and ends after it
        cut = start
    return text[:cut], text[cut:]


def prepare_data(cfg: TrainConfig, is_main: bool = True):
    """Text -> tokenizer, train/val token arrays, and how many tokens a character and a byte are worth."""
    path, description = resolve_data(cfg.data)
    if is_main:
        print(f"training text: {description}")
    documents = read_documents(path)
    # Fine-tuning keeps the tokenizer the weights were trained with; otherwise it is built below.
    tokenizer = folder_tokenizer(cfg.init_from) if cfg.init_from else None
    # Documents are joined by GPT-2's "<|endoftext|>" token for BPE tokenizers (it teaches the model where
    # a text ends), and by a blank line for a char tokenizer, which has no special tokens.
    separator = "\n\n" if (tokenizer.kind if tokenizer else cfg.tokenizer) == "char" else ENDOFTEXT
    joined = separator.join(documents)
    train_text, val_text = split_text(joined, separator)
    if tokenizer is None:
        tokenizer = build_tokenizer(cfg, train_text, joined)
    cache = CACHE_DIR / "tokens"
    train_tokens = cached_tokens(train_text, tokenizer, cache)
    val_tokens = cached_tokens(val_text, tokenizer, cache)
    check_length(train_tokens, cfg.block_size, "train")
    check_length(val_tokens, cfg.block_size, "validation")
    units = {
        "tokens_per_char": len(val_tokens) / len(val_text),
        "tokens_per_byte": len(val_tokens) / len(val_text.encode("utf-8")),
    }
    if is_main:
        print(f"{len(joined):,} characters, {tokenizer.kind} tokenizer with {tokenizer.vocab_size} tokens, "
              f"{len(train_tokens):,} train / {len(val_tokens):,} val tokens "
              f"({1 / units['tokens_per_byte']:.2f} bytes per token)")
    return tokenizer, train_tokens, val_tokens, units


# --- model -------------------------------------------------------------------------------------------------


def build_model(cfg: TrainConfig, vocab_size: int) -> torch.nn.Module:
    if cfg.init_from:
        return load_model(cfg.init_from, block_size=cfg.block_size, dropout=cfg.dropout)
    if cfg.model == "bigram":
        return BigramLanguageModel(vocab_size=vocab_size)
    config = GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                       n_head=cfg.n_head, d_model=cfg.d_model, dropout=cfg.dropout)
    return GPT(config)


@torch.no_grad()
def estimate_loss(model, batches, ctx, info: distributed.Dist) -> float:
    """Mean loss over fixed batches, in eval mode (dropout off); each process takes its share of them."""
    model.eval()
    total, count = torch.zeros(()), torch.zeros(())
    for x, y in batches[info.rank :: info.world_size]:
        with ctx:
            _, loss = model(x, y)
        total += loss.float().cpu()
        count += 1
    model.train()
    return (distributed.sum_across(total, info) / distributed.sum_across(count, info)).item()


def sample_text(model, tokenizer, prompt: str, n_tokens: int, seed: int) -> str:
    ids = prompt_ids(tokenizer, prompt)[-model.block_size :]
    out = model.generate(ids, max_new_tokens=n_tokens, temperature=0.8, top_k=200, seed=seed)
    return tokenizer.decode(out[len(ids) :])


def train_step(step_model, optimizer, scaler, loader, accum: int, ctx, info, grad_clip: float):
    """One optimizer step, over `accum` micro-batches. Returns (mean loss, gradient norm, stepped?).

    Gradient accumulation: the gradients of several micro-batches are summed before one update, each
    loss scaled by 1/accum, which gives exactly the gradient of one batch `accum` times larger (a test
    checks this). Under DDP the processes average their gradients during backward; doing that only on
    the last micro-batch (`no_sync` for the others) saves accum - 1 rounds of communication.
    The gradient is clipped to norm `grad_clip`; a non-finite one skips the update instead.
    """
    losses = []
    for micro in range(accum):
        x, y = loader.next_batch()  # (B, T), (B, T)
        last = micro == accum - 1
        sync = step_model.no_sync() if info.enabled and not last else contextlib.nullcontext()
        with sync:
            with ctx:
                _, loss = step_model(x, y)
            scaler.scale(loss / accum).backward()  # each micro-batch carries 1/accum of the step
        losses.append(loss.detach())  # stays on the device: no GPU sync in the middle of a step
    loss_mean = torch.stack(losses).float().mean()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    scaler.unscale_(optimizer)  # clip the true gradient, not the loss-scaled one (float16)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
    finite = bool(torch.isfinite(grad_norm))
    scale = scaler.get_scale()
    if finite or scaler.is_enabled():  # float16: the scaler itself skips the update on inf/NaN gradients
        scaler.step(optimizer)
    scaler.update()  # float16: lowers the scale exactly when it skipped the update
    stepped = finite if not scaler.is_enabled() else scaler.get_scale() >= scale
    optimizer.zero_grad(set_to_none=True)
    return loss_mean, grad_norm, stepped


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


# --- the training run --------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> dict:
    """Run a whole training job described by `cfg`; returns a summary (final losses, timings)."""
    device = resolve_device(cfg.device)
    info = distributed.setup(device.type)
    try:
        return _train(cfg, device, info)
    finally:
        distributed.teardown(info)


def _train(cfg: TrainConfig, device: torch.device, info: distributed.Dist) -> dict:
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~8x float32 speed, ample precision
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    dtype, why_dtype = resolve_dtype(cfg.dtype, device)
    out_dir = Path(cfg.out_dir)
    say = print if info.is_main else (lambda *a, **k: None)

    tokenizer, train_tokens, val_tokens, units = prepare_data(cfg, info.is_main)
    micro_tokens = cfg.batch_size * cfg.block_size
    tokens_per_step = cfg.tokens_per_step or micro_tokens * info.world_size
    if tokens_per_step % (micro_tokens * info.world_size):
        raise UserError(f"--tokens-per-step {tokens_per_step} is not a multiple of batch_size x block_size x "
                        f"processes = {micro_tokens * info.world_size}")
    accum = tokens_per_step // (micro_tokens * info.world_size)  # micro-batches per optimizer step
    # Each process reads its own slice of the training data, with its own random sequence of windows.
    train_loader = BatchLoader(train_tokens, cfg.block_size, cfg.batch_size, device, seed=cfg.seed + info.rank,
                               rank=info.rank, world_size=info.world_size)
    eval_batches = {
        "train": BatchLoader(train_tokens, cfg.block_size, cfg.batch_size, device).fixed_batches(cfg.eval_iters),
        "val": BatchLoader(val_tokens, cfg.block_size, cfg.batch_size, device, split="validation").fixed_batches(
            cfg.eval_iters),
    }

    model = build_model(cfg, tokenizer.vocab_size).to(device)  # the plain model: eval, sampling, saving
    if model.config.vocab_size < tokenizer.vocab_size:
        raise UserError(f"the model knows {model.config.vocab_size} tokens, the tokenizer {tokenizer.vocab_size}")
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, device, cfg.beta2)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # only fp16 needs loss scaling
    ctx = autocast(device, dtype)
    compiled = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
    step_model = torch.compile(model) if compiled else model  # the training step may run compiled
    if info.enabled:
        step_model = DDP(step_model, device_ids=[info.local_rank] if device.type == "cuda" else None)

    start_step, loop = 0, {"best_val_loss": math.inf, "bad_steps": 0}
    if cfg.resume:
        loop = load_state(out_dir / STATE_FILE, model, optimizer, scaler, train_loader, info.rank, info.world_size)
        start_step = loop["step"]
        say(f"resumed from {out_dir / STATE_FILE} at step {start_step}")

    if start_step >= cfg.max_iters:
        raise UserError(f"the run in {out_dir} already reached step {start_step}; raise --max-iters to go on")
    peak, peak_source = peak_flops(device, dtype, cfg.peak_flops)
    flops_token = flops_per_token(model.config) if isinstance(model, GPT) else 0.0
    say(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    say(f"device: {device}, precision: {why_dtype}, {torch.get_num_threads()} CPU threads, "
        f"{info.world_size} process(es), torch.compile {'on' if compiled else 'off'}")
    size = describe(model.config, cfg.batch_size) if isinstance(model, GPT) else f"{model.num_params():,} parameters"
    say(f"model: {cfg.init_from or cfg.model}, {size}")
    say(f"{tokens_per_step:,} tokens per step = {cfg.batch_size} x {cfg.block_size} tokens x {accum} micro-batches"
        f" x {info.world_size} process(es); {cfg.max_iters} steps")
    if peak:
        say(f"peak {peak / 1e9:,.0f} GFLOP/s ({peak_source}); model {flops_token / 1e6:,.1f} MFLOP per token")

    log = MetricsLog(out_dir / "metrics.jsonl", resume=cfg.resume, keep_until=start_step) if info.is_main else None
    summary: dict = {}

    def evaluate(step: int) -> None:
        train_loss = estimate_loss(model, eval_batches["train"], ctx, info)
        val_loss = estimate_loss(model, eval_batches["val"], ctx, info)
        improved = val_loss < loop["best_val_loss"]
        loop["best_val_loss"] = min(loop["best_val_loss"], val_loss)
        summary.update(step=step, train_loss=train_loss, val_loss=val_loss, best_val_loss=loop["best_val_loss"],
                       val_bits_per_byte=bits(val_loss, units["tokens_per_byte"]),
                       val_bits_per_char=bits(val_loss, units["tokens_per_char"]))
        if not info.is_main:
            return
        log.log(event="eval", step=step, tokens=step * tokens_per_step, train_loss=train_loss, val_loss=val_loss,
                val_bits_per_char=summary["val_bits_per_char"], val_bits_per_byte=summary["val_bits_per_byte"])
        tqdm.write(f"step {step:>6}: train loss {train_loss:.4f}, val loss {val_loss:.4f} "
                   f"({summary['val_bits_per_byte']:.3f} bits/byte, {summary['val_bits_per_char']:.3f} bits/char)")
        if improved and step > 0:
            save_checkpoint(out_dir / "best", model, tokenizer, {**summary, "config": cfg.to_dict()})

    def save(step: int) -> None:
        """The latest checkpoint (an HF folder) and the exact training state, written by the main process."""
        loader_states = distributed.gather_to_main(train_loader.state_dict()["generator"], info)
        if info.is_main:
            save_checkpoint(out_dir, model, tokenizer, {**summary, "step": step, "config": cfg.to_dict()})
            save_state(out_dir / STATE_FILE, model, optimizer, scaler, loader_states, {**loop, "step": step})

    if start_step == 0:
        evaluate(0)
        say(f"initial loss {summary['val_loss']:.4f}; a uniform guess over {tokenizer.vocab_size} tokens "
            f"would give ln({tokenizer.vocab_size}) = {math.log(tokenizer.vocab_size):.4f}")
    if cfg.init_from and info.is_main and cfg.sample_tokens:
        prompts = fixed_prompts(tokenizer)
        say("--- samples before fine-tuning ---")
        for prompt in prompts:
            say(repr(prompt) + " -> " + repr(sample_text(model, tokenizer, prompt, cfg.sample_tokens, cfg.seed)))

    step, started = start_step, time.time()
    bar = tqdm(total=cfg.max_iters, initial=start_step, desc="training", unit="step", dynamic_ncols=True,
               disable=None if info.is_main else True)  # disable=None: a live bar only in a terminal
    window_start, window_tokens = time.time(), 0
    with StopRequest() as stop:
        decay_iters = cfg.max_iters  # where the cosine ends; a time budget moves it (see below)
        for step in range(start_step + 1, cfg.max_iters + 1):
            lr = lr_at(step - 1, cfg.lr, cfg.final_min_lr, cfg.warmup_iters, decay_iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum, grad_norm, stepped = train_step(step_model, optimizer, scaler, train_loader, accum, ctx, info,
                                                      cfg.grad_clip)
            if stepped:
                loop["bad_steps"] = 0
            elif scaler.is_enabled() and torch.isfinite(loss_sum):
                pass  # float16 overflow: the scaler lowered its scale and goes on; normal loss scaling
            else:  # a NaN/inf loss or gradient would have poisoned the weights: the step was skipped
                loop["bad_steps"] += 1
                loop["skipped_steps"] = loop.get("skipped_steps", 0) + 1
                if loop["bad_steps"] >= cfg.max_bad_steps:
                    raise UserError(
                        f"{loop['bad_steps']} steps in a row (up to step {step}) had a non-finite loss or gradient "
                        f"(loss {loss_sum.item()}, lr {lr:.2e}): lower --lr, use --dtype float32, or check the data;"
                        f" the last good checkpoint is in {out_dir}"
                    )
            window_tokens += tokens_per_step
            bar.update(1)

            if step % cfg.log_interval == 0 or step == cfg.max_iters:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                train_loss = distributed.mean_across(loss_sum, info).item()
                tokens_per_s = window_tokens / (time.time() - window_start)
                window_start, window_tokens = time.time(), 0
                if info.is_main:
                    row = dict(step=step, tokens=step * tokens_per_step, train_loss=train_loss, lr=lr,
                               grad_norm=grad_norm.item(), tokens_per_s=tokens_per_s,
                               flops_per_s=flops_token * tokens_per_s)
                    if peak:
                        row["mfu"] = flops_token * tokens_per_s / peak
                    log.log(event="train", **row)
                    bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            out_of_time = False
            if cfg.max_seconds:
                # A time budget: project how many steps fit into it at the speed so far, and end the cosine
                # there, so the learning rate has decayed when time runs out, on a fast machine or a slow one.
                elapsed = time.time() - started
                projected = int((step - start_step) * cfg.max_seconds / elapsed) + start_step
                decay_iters = min(cfg.max_iters, max(step + 1, projected))
                out_of_time = distributed.any_across(elapsed >= cfg.max_seconds, info)
            if step % cfg.eval_interval == 0 or step == cfg.max_iters or out_of_time:
                evaluate(step)
                save(step)
                window_start, window_tokens = time.time(), 0  # tokens/s measures training, not evaluation
            if out_of_time:
                say(f"\ntime budget of {cfg.max_seconds:.0f} s used up at step {step}")
                break
            if distributed.any_across(stop.requested, info):
                bar.close()
                say(f"\nstopped at step {step}: saving to {out_dir} ...")
                save(step)
                if info.is_main:
                    log.plot(out_dir / "loss.png", title=f"stopped at step {step}")
                say(f"saved; continue with: python src/train.py --resume --out-dir {out_dir} (same flags)")
                return summary
    bar.close()
    summary["train_seconds"] = time.time() - started
    if not info.is_main:
        return summary
    log.plot(out_dir / "loss.png", title=f"{cfg.init_from or cfg.model}, {tokenizer.kind} tokens")
    say(f"done in {summary['train_seconds']:.0f} s: val loss {summary['val_loss']:.4f} "
        f"({summary['val_bits_per_byte']:.3f} bits/byte); saved to {out_dir}/ "
        "(checkpoint, best/, metrics.jsonl, loss.png)")
    if cfg.sample_tokens:
        if cfg.init_from:
            say("--- samples after fine-tuning ---")
            for prompt in fixed_prompts(tokenizer):
                say(repr(prompt) + " -> " + repr(sample_text(model, tokenizer, prompt, cfg.sample_tokens, cfg.seed)))
        else:
            say("--- sample ---\n" + sample_text(model, tokenizer, "", cfg.sample_tokens, cfg.seed).strip()
                + "\n--------------")
    return summary


def fixed_prompts(tokenizer) -> list[str]:
    """The prompts shown before and after fine-tuning, so the change is visible."""
    return ["\n", "The"] if tokenizer.kind != "char" else ["\n"]


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
