"""Train a language model on a text file: `python src/train.py` (or `python -m src.train`).

The steps, in order:
1. read the text and build a tokenizer from it (one token per character);
2. turn the text into token ids, split 90/10 into train and validation;
3. build the model (GPT-2, or the bigram baseline) and the AdamW optimizer;
4. loop: take a random batch, compute the loss, backpropagate, clip the gradient, step the optimizer;
   every `eval_interval` steps measure train/val loss on fixed batches and save a checkpoint;
5. at the end: save, plot the losses, and print a sample of generated text.

Everything lands in `--out-dir`: the checkpoint (a Hugging Face GPT-2 folder), `metrics.jsonl`, `loss.png`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/train.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from tqdm import tqdm

from src.bigram import BigramLanguageModel
from src.checkpoint import save_checkpoint
from src.config import TrainConfig, parse_args
from src.corpus import read_text, resolve_data
from src.dataloader import BatchLoader, check_length, token_array, train_val_split
from src.device import autocast, resolve_device, resolve_dtype
from src.errors import UserError, run_cli
from src.metrics import MetricsLog, bits
from src.model import GPT, GPTConfig
from src.optim import configure_optimizer, lr_at
from src.sample import prompt_ids
from src.tokenizer import CharTokenizer


def prepare_data(cfg: TrainConfig):
    """Text -> tokenizer, train/val token arrays, and how many tokens a character and a byte are worth."""
    path, description = resolve_data(cfg.data)
    print(f"training text: {description}")
    text = read_text(path)
    tokenizer = CharTokenizer.from_text(text)
    tokens = token_array(tokenizer.encode(text), tokenizer.vocab_size)
    train_tokens, val_tokens = train_val_split(tokens)
    check_length(train_tokens, cfg.block_size, "train")
    check_length(val_tokens, cfg.block_size, "validation")
    units = {"tokens_per_char": len(tokens) / len(text), "tokens_per_byte": len(tokens) / len(text.encode())}
    print(f"{len(text):,} characters, vocabulary of {tokenizer.vocab_size} tokens, "
          f"{len(train_tokens):,} train / {len(val_tokens):,} val tokens")
    return tokenizer, train_tokens, val_tokens, units


def build_model(cfg: TrainConfig, vocab_size: int) -> torch.nn.Module:
    if cfg.model == "bigram":
        return BigramLanguageModel(vocab_size=vocab_size)
    return GPT(
        GPTConfig(
            vocab_size=vocab_size,
            block_size=cfg.block_size,
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            d_model=cfg.d_model,
            dropout=cfg.dropout,
        )
    )


@torch.no_grad()
def estimate_loss(model, batches, ctx) -> float:
    """Mean loss over fixed batches, in eval mode (dropout off)."""
    model.eval()
    losses = []
    for x, y in batches:
        with ctx:
            _, loss = model(x, y)
        losses.append(loss.item())
    model.train()
    return sum(losses) / len(losses)


def train(cfg: TrainConfig) -> dict:
    """Run a whole training job described by `cfg`; returns a summary (final losses, timings)."""
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    dtype, why = resolve_dtype(cfg.dtype, device)
    out_dir = Path(cfg.out_dir)

    tokenizer, train_tokens, val_tokens, units = prepare_data(cfg)
    # The model reads the first `block_size` tokens at most: the bigram model only needs one.
    block_size = 1 if cfg.model == "bigram" else cfg.block_size
    train_loader = BatchLoader(train_tokens, cfg.block_size, cfg.batch_size, device, seed=cfg.seed)
    val_loader = BatchLoader(val_tokens, cfg.block_size, cfg.batch_size, device, seed=cfg.seed, split="validation")
    eval_batches = {
        "train": train_loader.fixed_batches(cfg.eval_iters),
        "val": val_loader.fixed_batches(cfg.eval_iters),
    }

    model = build_model(cfg, tokenizer.vocab_size).to(device)
    optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # only fp16 needs loss scaling
    ctx = autocast(device, dtype)
    tokens_per_step = cfg.batch_size * cfg.block_size
    print(f"model: {cfg.model}, {model.num_params():,} parameters, context {block_size}")
    print(f"device: {device}, precision: {why}, {torch.get_num_threads()} CPU threads")
    print(f"{cfg.max_iters} steps x {tokens_per_step:,} tokens = {cfg.max_iters * tokens_per_step:,} tokens")

    log = MetricsLog(out_dir / "metrics.jsonl")
    summary = {"best_val_loss": math.inf}

    def evaluate(step: int) -> None:
        train_loss = estimate_loss(model, eval_batches["train"], ctx)
        val_loss = estimate_loss(model, eval_batches["val"], ctx)
        summary.update(step=step, train_loss=train_loss, val_loss=val_loss)
        summary["best_val_loss"] = min(summary["best_val_loss"], val_loss)
        log.log(
            event="eval", step=step, tokens=step * tokens_per_step, train_loss=train_loss, val_loss=val_loss,
            val_bits_per_char=bits(val_loss, units["tokens_per_char"]),
            val_bits_per_byte=bits(val_loss, units["tokens_per_byte"]),
        )
        tqdm.write(f"step {step:>6}: train loss {train_loss:.4f}, val loss {val_loss:.4f} "
                   f"({bits(val_loss, units['tokens_per_char']):.3f} bits/char)")

    def save(step: int) -> None:
        save_checkpoint(out_dir, model, tokenizer, {"step": step, **summary, "config": cfg.to_dict()})

    evaluate(0)
    print(f"initial loss {summary['val_loss']:.4f}; a uniform guess over {tokenizer.vocab_size} tokens "
          f"would give ln({tokenizer.vocab_size}) = {math.log(tokenizer.vocab_size):.4f}")

    step, started = 0, time.time()
    # disable=None: a live bar in a terminal, none in a log file or a pipe.
    bar = tqdm(total=cfg.max_iters, desc="training", unit="step", dynamic_ncols=True, disable=None)
    try:
        window_start, window_tokens = time.time(), 0
        for step in range(1, cfg.max_iters + 1):
            lr = lr_at(step - 1, cfg.lr, cfg.final_min_lr, cfg.warmup_iters, cfg.max_iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = train_loader.next_batch()  # (B, T), (B, T)
            with ctx:
                _, loss = model(x, y)
            if not torch.isfinite(loss):
                raise UserError(f"the loss became {loss.item()} at step {step}: lower --lr and try again")
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradient, not the scaled one
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            window_tokens += tokens_per_step
            bar.update(1)

            if step % cfg.log_interval == 0 or step == cfg.max_iters:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                tokens_per_s = window_tokens / (time.time() - window_start)
                window_start, window_tokens = time.time(), 0
                log.log(event="train", step=step, tokens=step * tokens_per_step, train_loss=loss.item(),
                        lr=lr, grad_norm=grad_norm.item(), tokens_per_s=tokens_per_s)
                bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens_per_s:,.0f}")
            if step % cfg.eval_interval == 0 or step == cfg.max_iters:
                evaluate(step)
                save(step)
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted at step {step}: saving the checkpoint to {out_dir} ...")
        save(step)
        log.plot(out_dir / "loss.png", title=f"{cfg.model}, interrupted at step {step}")
        print("saved; bye")
        return summary
    bar.close()
    summary["train_seconds"] = time.time() - started
    log.plot(out_dir / "loss.png", title=f"{cfg.model} on {Path(resolve_data(cfg.data)[0]).name}")
    print(f"done in {summary['train_seconds']:.0f} s: val loss {summary['val_loss']:.4f} "
          f"({bits(summary['val_loss'], units['tokens_per_char']):.3f} bits/char); "
          f"saved to {out_dir}/ (checkpoint, metrics.jsonl, loss.png)")

    if cfg.sample_tokens:
        prompt = prompt_ids(tokenizer, "")
        ids = model.generate(prompt, max_new_tokens=cfg.sample_tokens, temperature=0.8, seed=cfg.seed)
        print("--- sample ---\n" + tokenizer.decode(ids[len(prompt):]).strip() + "\n--------------")
    return summary


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
