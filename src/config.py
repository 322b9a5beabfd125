"""Training settings: one dataclass holds them, argparse fills it from the command line.

Every field has a default, so `python src/train.py` runs as is; `python src/train.py --help` lists the
flags. The parser rejects impossible values (a negative size, d_model not divisible by n_head) before any
work starts. The resolved settings are saved with every checkpoint (`training.json`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields


@dataclass
class TrainConfig:
    # data and output
    data: str | None = None  # None: data/data.txt if present, else the default Shakespeare corpus
    out_dir: str = "out"
    # model
    model: str = "gpt"  # "gpt" or "bigram"
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    block_size: int = 256  # context length
    dropout: float = 0.0
    # optimisation
    batch_size: int = 16
    lr: float = 1e-3  # peak learning rate of AdamW
    min_lr: float | None = None  # end of the cosine decay; None = lr / 10
    warmup_iters: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # clip the gradient norm to this (0 = off)
    max_iters: int = 2000
    # evaluation, logging and sampling
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    sample_tokens: int = 500  # characters/tokens printed as a sample at the end (0 = none)
    # machine
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 1337

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def final_min_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="python src/train.py",
        description="Train a character-level GPT (or the bigram baseline) on a text file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("data and output")
    g.add_argument("--data", default=d.data, help="training text (UTF-8); default: data/data.txt, else Shakespeare")
    g.add_argument("--out-dir", default=d.out_dir, help="checkpoint, metrics.jsonl and loss.png go here")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["gpt", "bigram"], default=d.model, help="GPT-2 or the bigram baseline")
    g.add_argument("--n-layer", type=_positive_int, default=d.n_layer, help="number of transformer blocks")
    g.add_argument("--n-head", type=_positive_int, default=d.n_head, help="attention heads per block")
    g.add_argument("--d-model", type=_positive_int, default=d.d_model, help="embedding width (divisible by n_head)")
    g.add_argument("--block-size", type=_positive_int, default=d.block_size, help="context length in tokens")
    g.add_argument("--dropout", type=_probability, default=d.dropout, help="dropout probability while training")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=_positive_int, default=d.batch_size, help="sequences per step")
    g.add_argument("--lr", type=_positive_float, default=d.lr, help="peak learning rate (AdamW)")
    g.add_argument("--min-lr", type=_non_negative_float, default=d.min_lr, help="final LR (default lr/10)")
    g.add_argument("--warmup-iters", type=_non_negative_int, default=d.warmup_iters, help="linear LR warmup steps")
    g.add_argument("--weight-decay", type=_non_negative_float, default=d.weight_decay, help="AdamW decay (2-D weights)")
    g.add_argument("--grad-clip", type=_non_negative_float, default=d.grad_clip, help="max gradient norm (0 = off)")
    g.add_argument("--max-iters", type=_positive_int, default=d.max_iters, help="training steps")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-interval", type=_positive_int, default=d.eval_interval, help="steps between evaluations")
    g.add_argument("--eval-iters", type=_positive_int, default=d.eval_iters, help="batches per evaluation")
    g.add_argument("--log-interval", type=_positive_int, default=d.log_interval, help="steps between log rows")
    g.add_argument("--sample-tokens", type=_non_negative_int, default=d.sample_tokens, help="sample length at the end")
    g = p.add_argument_group("machine")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=d.device, help="where to train")
    g.add_argument(
        "--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=d.dtype,
        help="autocast precision; auto = bf16 where the hardware has it, else float32",
    )
    g.add_argument("--seed", type=int, default=d.seed, help="random seed: same seed, same run")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command line -> TrainConfig, or exit with a usage error for impossible values."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.d_model % args.n_head != 0:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --n-head ({args.n_head})")
    if args.min_lr is not None and args.min_lr > args.lr:
        parser.error(f"--min-lr ({args.min_lr}) must not exceed --lr ({args.lr})")
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
