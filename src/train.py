"""Train a language model on your text: `python src/train.py` (or `python -m src.train`).

The steps, in order (each is a few lines of `train` at the bottom of this file):
1. data: read the text, split it 90/10 into train and validation, build a tokenizer (one token per
   character by default; `--tokenizer bpe` learns one from the training split; `gpt2` is GPT-2's) and turn
   both splits into token ids (dataloader.py); or, with `--data DIR` from prepare.py, stream its shards;
2. model: GPT-2 (model.py), or the bigram baseline (bigram.py); `--init-from gpt2` starts from OpenAI's
   weights. The optimizer is AdamW with weight decay on the matrices only (`--optimizer muon`: Muon for the
   blocks' matrices, engine/muon.py);
3. the loop: set the learning rate (warmup, then cosine decay), take a batch, compute the loss,
   backpropagate, clip the gradient, step the optimizer; every `eval_interval` steps measure train/val
   loss on fixed batches and save a checkpoint;
4. at the end: plot the losses and print a sample of generated text.

Everything lands in `--out-dir`: the latest checkpoint (a Hugging Face GPT-2 folder), the best one by
validation loss in `best/`, the exact training state in `resume.safetensors` (for `--resume`),
`metrics.jsonl` and `loss.png`; `.lock` marks the folder as in use while the run lasts. Ctrl-C (or SIGTERM)
saves and exits cleanly.

What does not teach language modelling (several processes, number formats, resuming, logging, saving)
is one call each into `src/engine/`: skip those on a first read. Several processes:
`torchrun --nproc_per_node=N src/train.py ...` (see engine/distributed.py).
"""

from __future__ import annotations

import inspect
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/train.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from src.bigram import BigramLanguageModel
from src.dataloader import PreparedData, prepare_data
from src.engine.checkpoint import RunLock, folder_tokenizer, gpt2_tokenizer, load_model
from src.engine.config import BETA1, TrainConfig, parse_args
from src.engine.distributed import Distributed
from src.engine.errors import UserError, run_cli
from src.engine.fused_attention import use_fused_attention
from src.engine.fused_gelu import use_fused_gelu
from src.engine.metrics import TrainingLog
from src.engine.muon import Muon, muon_groups
from src.engine.precision import Precision
from src.engine.resume import STATE_FILE, LoopState, StopRequest, TimeBudget, load_state, save_run
from src.engine.shards import is_prepared
from src.engine.snapshots import Snapshots
from src.generate import generate_text
from src.model import GPT, GPTConfig
from src.tokenizer import Tokenizer

# --- the tokenizer, the model and its optimizer -----------------------------------------------------------------


def load_data(cfg: TrainConfig, verbose: bool):
    """The data to train on: a folder that prepare.py wrote (shards streamed from disk, its own tokenizer),
    or a text read into memory and tokenized here (dataloader.prepare_data)."""
    if is_prepared(cfg.data):
        data = PreparedData(cfg.data)
        if verbose:
            print(data.describe())
        if cfg.init_from and folder_tokenizer(cfg.init_from, cfg.cache_dir).to_json() != data.tokenizer.to_json():
            raise UserError(f"{cfg.data} was prepared with another tokenizer than {cfg.init_from}'s: prepare it "
                            "with the model's tokenizer (--tokenizer gpt2 for GPT-2)")
        return data
    return prepare_data(cfg.data, cfg.block_size, cfg.cache_dir, tokenizer=ready_made_tokenizer(cfg),
                        kind=cfg.tokenizer, vocab_size=cfg.vocab_size, verbose=verbose)


def ready_made_tokenizer(cfg: TrainConfig) -> Tokenizer | None:
    """A tokenizer to use as it is: the pretrained model's when fine-tuning (its weights mean its tokens),
    GPT-2's for --tokenizer gpt2. None: prepare_data learns one from the text (char or BPE)."""
    if cfg.init_from:
        return folder_tokenizer(cfg.init_from, cfg.cache_dir)
    return gpt2_tokenizer(cfg.cache_dir) if cfg.tokenizer == "gpt2" else None


def build_model(cfg: TrainConfig, vocab_size: int) -> torch.nn.Module:
    """GPT-2 of the configured size, the bigram baseline, or (--init-from) a pretrained GPT-2 to fine-tune."""
    if cfg.init_from:
        model = load_model(cfg.init_from, block_size=cfg.block_size, dropout=cfg.dropout,
                           attn_dropout=cfg.attn_dropout)
        if model.config.vocab_size < vocab_size:
            raise UserError(f"the model knows {model.config.vocab_size} tokens, the tokenizer {vocab_size}")
        return model
    if cfg.model == "bigram":
        return BigramLanguageModel(vocab_size=vocab_size)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                         d_model=cfg.d_model, dropout=cfg.dropout, attn_dropout=cfg.attn_dropout))


def configure_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device, beta2: float = TrainConfig.beta2,
    kind: str = "adamw", muon_lr: float = 0.02,
) -> torch.optim.Optimizer:
    """AdamW with two parameter groups: >=2-D tensors decay, 1-D tensors (biases, LayerNorm) do not.

    Weight decay pulls weights towards zero, which regularises the large matrices (Linear weights,
    embeddings). Biases and LayerNorm gains are 1-D: decaying them only hurts, so they get none.
    kind="muon": Muon (at `muon_lr`) for the blocks' matrices instead, AdamW for the rest (engine/muon.py).
    """
    if kind == "muon":
        return Muon(muon_groups(model, lr, muon_lr, weight_decay), lr=lr, betas=(BETA1, beta2))
    params = [p for p in model.parameters() if p.requires_grad]  # a tied tensor appears once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel does the whole update in one pass on CUDA; on CPU the default is fine.
    fused = device.type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(groups, lr=lr, betas=(BETA1, beta2), **({"fused": True} if fused else {}))


def lr_at(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int,
          cooldown: float | None = None) -> float:
    """Learning rate at `step` (0-based): linear warmup, a decay to min_lr by `decay_iters`, then min_lr.

    Large steps on a random network can blow it up, so the rate warms up linearly; then it follows a cosine
    from `lr` down to `min_lr`. Step 0 already gets a positive rate (lr / warmup_iters), the peak is reached
    at the end of warmup, and a decay as long as the warmup (nothing to decay) does not divide by zero.
    With `cooldown` (a fraction, 0 < cooldown <= 1) the rate stays at its peak instead and falls in a straight
    line to min_lr over that last fraction of the steps after warmup ("warmup-stable-decay"; 1 = a linear
    decay all the way): most of the run at full speed, and a short run ends decayed as well as a long one.
    """
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    if step >= decay_iters or decay_iters <= warmup_iters:
        return min_lr
    progress = (step - warmup_iters) / (decay_iters - warmup_iters)  # 0 -> 1
    if cooldown:
        return min_lr + min(1.0, (1.0 - progress) / cooldown) * (lr - min_lr)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


# --- one optimizer step, and evaluation ------------------------------------------------------------------------


def train_step(model, optimizer, loader, accum: int, precision: Precision, ddp: Distributed, grad_clip: float):
    """One optimizer step, over `accum` micro-batches. Returns (mean loss, gradient norm, healthy).

    Gradient accumulation: the gradients of several micro-batches are summed before one update, each
    loss scaled by 1/accum, which gives exactly the gradient of one batch `accum` times larger (a test
    checks this). Under DDP the processes average their gradients during backward, on the last
    micro-batch only. The gradient is clipped to norm `grad_clip`; a non-finite one skips the update, and
    the step is reported as not `healthy`.
    """
    losses = []
    for micro in range(accum):
        x, y = loader.next_batch()  # (B, T), (B, T)
        with ddp.sync_gradients(model, sync=micro == accum - 1):
            with precision.autocast_ctx:
                _, loss = model(x, y)
            precision.backward(loss / accum)  # each micro-batch carries 1/accum of the step
        losses.append(loss.detach())  # stays on the device: no GPU sync in the middle of a step
    loss_mean = torch.stack(losses).float().mean()
    grad_norm, stepped = precision.clip_and_step(optimizer, grad_clip)
    optimizer.zero_grad(set_to_none=True)
    return loss_mean, grad_norm, precision.healthy(stepped, loss_mean)


def evaluate(model, eval_batches: dict, autocast_ctx, ddp: Distributed) -> tuple[float, float]:
    """(train loss, val loss), each the mean over the same fixed batches at every evaluation."""
    train_loss = estimate_loss(model, eval_batches["train"], autocast_ctx, ddp)
    val_loss = estimate_loss(model, eval_batches["validation"], autocast_ctx, ddp)
    return train_loss, val_loss


@torch.no_grad()
def estimate_loss(model, batches, autocast_ctx, ddp: Distributed) -> float:
    """Mean loss over fixed batches, in eval mode (dropout off); each process takes its share of them."""
    model.eval()
    mine = batches[ddp.rank :: ddp.world_size]
    total = torch.zeros((), device=mine[0][0].device if mine else "cpu")  # summed where the model runs:
    for x, y in mine:                                                       # no wait for a GPU per batch
        with autocast_ctx:
            _, loss = model(x, y)
        total += loss.float()
    model.train()
    return (ddp.sum(total.cpu()) / ddp.sum(torch.tensor(float(len(mine))))).item()


def print_samples(model, tokenizer, prompts, cfg: TrainConfig, title: str) -> None:
    """What the model writes now, for each prompt (temperature 0.8, top-k 200): the one place samples print."""
    print(f"--- {title} ---")
    for prompt in prompts:
        try:
            text = generate_text(model, tokenizer, prompt, cfg.sample_tokens, temperature=0.8, top_k=200,
                                 seed=cfg.seed)
        except UserError:  # a prompt this vocabulary cannot spell
            continue
        print((prompt + text).strip())
        print("--------------")


FINETUNE_PROMPTS = ("\n", "The")  # before and after fine-tuning, so the change is visible


# --- the training run ----------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> LoopState:
    """Run a whole training job described by `cfg`; returns where the loop ended (step, last losses)."""
    out_dir = Path(cfg.out_dir)
    with Distributed.start(cfg.device) as ddp, RunLock(out_dir, hold=ddp.is_main):  # one process or several
        width = None if cfg.init_from else cfg.d_model  # fine-tuning: the checkpoint's width (GPT-2: wide enough)
        precision = Precision.choose(cfg.device, cfg.dtype, ddp.local_rank, width)  # device, dtype, autocast, scaler
        device = precision.device
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)

        # 1. Data: text -> tokenizer -> train/val token ids -> batches (or shards that prepare.py wrote).
        data = ddp.together(lambda: load_data(cfg, verbose=ddp.is_main))  # if one process cannot, none goes on
        accum = cfg.micro_batches_per_step(ddp.world_size)  # gradient accumulation, from --tokens-per-step
        train_loader = data.train_loader(cfg.block_size, cfg.batch_size, device, seed=cfg.seed, rank=ddp.rank,
                                         world_size=ddp.world_size, accum=accum)  # each process its own windows
        eval_batches = data.evaluation_batches(cfg.block_size, cfg.batch_size, cfg.eval_iters, device)

        # 2. Model and optimizer. `model` is the model itself: evaluated, sampled and saved. `step_model` is
        # what a training step calls: the same model, compiled (--compile) and wrapped for DDP when asked.
        model = build_model(cfg, data.tokenizer.vocab_size).to(device)
        if device.type == "cpu":  # our own C kernels for the MLP's GELU and for attention, faster on a CPU
            use_fused_gelu(model)
            use_fused_attention(model)
        if cfg.activation_checkpointing:  # GPT only (the parser checks): recompute each block in backward
            model.recompute_activations = True
        optimizer = configure_optimizer(model, cfg.lr, cfg.weight_decay, device, cfg.beta2, cfg.optimizer,
                                        cfg.muon_lr)
        compiled = cfg.compile == "on" or (cfg.compile == "auto" and device.type == "cuda")
        step_model = ddp.wrap(torch.compile(model) if compiled else model, device)

        state = LoopState()  # step 0, or where a saved run stopped
        if cfg.resume:
            state = load_state(out_dir / STATE_FILE, model, optimizer, precision.scaler, train_loader,
                               rank=ddp.rank, world_size=ddp.world_size, config=cfg.to_dict())
            ddp.print(f"resumed from {out_dir / STATE_FILE} at step {state.step}")
        if state.step >= cfg.max_iters:
            raise UserError(f"the run in {out_dir} already reached step {state.step}; raise --max-iters to go on")
        if cfg.max_seconds and state.seconds_trained >= cfg.max_seconds:
            raise UserError(f"the run in {out_dir} already trained for its {cfg.max_seconds:.0f} s; raise "
                            "--max-seconds to go on")
        log = TrainingLog(cfg, ddp, precision, model, accum, compiled, start_step=state.step,
                          seconds_trained=state.seconds_trained)
        snapshots = Snapshots(out_dir, model, data.tokenizer, cfg.snapshot_max_params, fresh=not cfg.resume,
                              enabled=ddp.is_main)  # the model at every evaluation, to watch it learn
        if state.step == 0:
            train_loss, val_loss = evaluate(model, eval_batches, precision.autocast_ctx, ddp)
            state.record_eval(train_loss, val_loss, data.tokens_per_byte, data.tokens_per_char)
            snapshots.save(model, state.step)
            log.eval(state)
            vocab = data.tokenizer.vocab_size
            log.say(f"initial loss {val_loss:.4f}; a uniform guess over {vocab} tokens would give "
                    f"ln({vocab}) = {math.log(vocab):.4f}")
        if cfg.init_from and cfg.sample_tokens and ddp.is_main and state.step == 0:
            print_samples(model, data.tokenizer, FINETUNE_PROMPTS, cfg, "samples before fine-tuning")

        # 3. The loop: one optimizer step per iteration; now and then an evaluation and a checkpoint.
        budget = TimeBudget(cfg.max_seconds, state, cfg.max_iters)  # no budget: decay_iters = max_iters
        with StopRequest() as stop:  # Ctrl-C / SIGTERM: finish the step, save, exit 0
            for step in range(state.step + 1, cfg.max_iters + 1):
                lr = lr_at(step - 1, cfg.lr, cfg.final_min_lr, cfg.warmup_iters, budget.decay_iters,  # 0-based
                           cfg.cooldown)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's matrices: their own peak
                loss_mean, grad_norm, healthy = train_step(step_model, optimizer, train_loader, accum, precision,
                                                           ddp, cfg.grad_clip)
                state.record_step(step, healthy)
                state.stop_if_stuck(cfg.max_bad_steps, loss_mean, lr, out_dir)  # NaN/inf step after step
                if step % cfg.log_interval == 0 or step == cfg.max_iters:
                    log.train(step, ddp.mean(loss_mean).item(), lr, grad_norm.item())
                out_of_time = budget.check(step, ddp)  # also fits the decay's end (decay_iters) to the budget
                if step % cfg.eval_interval == 0 or step == cfg.max_iters or out_of_time:
                    with budget.paused():  # evaluating and saving are not training: not counted in --max-seconds
                        train_loss, val_loss = evaluate(model, eval_batches, precision.autocast_ctx, ddp)
                        best = state.record_eval(train_loss, val_loss, data.tokens_per_byte, data.tokens_per_char)
                        save_run(out_dir, model, data.tokenizer, optimizer, precision.scaler, train_loader, state,
                                 cfg.to_dict(), ddp, best=best)
                        snapshots.save(model, step)
                        log.eval(state)
                if out_of_time:
                    log.say(f"\ntime budget of {cfg.max_seconds:.0f} s used up at step {step}")
                    break
                if ddp.any(stop.requested):
                    log.say(f"\nstopped at step {step}: saving to {out_dir} ...")
                    save_run(out_dir, model, data.tokenizer, optimizer, precision.scaler, train_loader, state,
                             cfg.to_dict(), ddp)
                    log.stopped(step)
                    return state

        # 4. The end: the loss curve, and what the model writes now.
        log.finish(state, title=f"{cfg.init_from or cfg.model}, {data.tokenizer.kind} tokens")
        if cfg.sample_tokens and ddp.is_main:
            prompts, title = (FINETUNE_PROMPTS, "samples after fine-tuning") if cfg.init_from else (("",), "sample")
            print_samples(model, data.tokenizer, prompts, cfg, title)
        return state


def main(argv: list[str] | None = None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    run_cli(main)
