"""Training settings: one dataclass holds them, argparse fills it from the command line.

Every field has a default, so `python src/train.py` runs as is; `python src/train.py --help` lists the
flags. A `--preset` swaps in a whole set of defaults (see PRESETS); flags given on the command line
still win over it. The parser rejects impossible values (a negative size, an infinite learning rate,
d_model not divisible by n_head) before any work starts, in one line that names the flag. The resolved
settings are saved with every checkpoint (`training.json`) and in the resume state, where `--resume`
compares them with the flags it is given (`SHAPE_SETTINGS`).

Who uses it: `train.py` (`parse_args`, `TrainConfig`), `engine/resume.py` (`SHAPE_SETTINGS`); the benchmarks
build configs through `parse_args`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, fields

from src.engine.corpus import CACHE_DIR
from src.engine.errors import ArgumentParser, UserError, positive_int, whole_number
from src.engine.snapshots import DEFAULT_MAX_PARAMS
from src.model import default_n_head

BETA1 = 0.9  # AdamW's first beta (its momentum), the same in every run; beta2 is a setting


@dataclass
class TrainConfig:
    preset: str = "cpu"
    # data and output
    data: str | None = None  # a text, a folder of *.txt or a prepared folder; None: data/data.txt, else Shakespeare
    out_dir: str = "out"
    tokenizer: str = "char"  # "char", "bpe" (trained here on the training split) or "gpt2"
    vocab_size: int = 512  # for --tokenizer bpe
    init_from: str | None = None  # fine-tune: "gpt2", "gpt2-medium", ... or a checkpoint folder
    resume: bool = False
    # model
    model: str = "gpt"  # "gpt" or "bigram"
    n_layer: int = 4
    n_head: int | None = None  # None: head size 64 where d_model allows (2 heads for 128), see GPTConfig
    d_model: int = 128  # 128, not 256: four times the steps in the same minutes, a better model on a slow CPU
    block_size: int = 256  # context length
    dropout: float = 0.0
    attn_dropout: float | None = None  # on the attention weights; None: the same as dropout
    # optimisation
    batch_size: int = 16  # sequences per micro-batch, per process
    tokens_per_step: int | None = None  # tokens per optimizer step; None = one micro-batch per process
    optimizer: str = "adamw"  # "adamw", or "muon" (Muon for the blocks' matrices, AdamW for the rest)
    lr: float = 1e-3  # peak learning rate of AdamW
    muon_lr: float = 0.02  # peak learning rate of Muon (--optimizer muon)
    min_lr: float | None = None  # where the decay ends; None = lr / 10
    warmup_iters: int = 100
    cooldown: float | None = None  # a constant LR, then a linear decay over this last fraction; None = cosine
    weight_decay: float = 0.1
    beta2: float = 0.99  # AdamW's betas are (BETA1, beta2)
    grad_clip: float = 1.0  # clip the gradient norm to this (0 = off)
    max_iters: int = 2000  # optimizer steps (with a time budget: the most); an explicit --max-iters turns it off
    max_seconds: float | None = None  # a training-time budget: stop then, with the LR schedule fitted to it
    max_bad_steps: int = 5  # stop after this many non-finite steps in a row
    # evaluation, logging and sampling
    eval_interval: int = 250
    eval_iters: int = 20
    log_interval: int = 10
    sample_tokens: int = 500  # tokens printed as a sample at the end (0 = none)
    snapshot_max_params: int = DEFAULT_MAX_PARAMS  # keep a weights-only snapshot per evaluation up to this size
    # machine
    device: str = "auto"
    dtype: str = "auto"
    compile: str = "auto"
    activation_checkpointing: bool = False  # recompute each block in backward: less memory, ~1/3 more compute
    peak_flops: float | None = None  # for the utilisation figure; None = measured (CPU) or looked up (GPU)
    seed: int = 1337
    cache_dir: str = str(CACHE_DIR)  # converted corpus, token files, GPT-2's tokenizer files, the CPU's peak

    def __post_init__(self):
        if self.n_head is None:  # the same choice as GPTConfig's, made here so that the saved settings show it
            self.n_head = default_n_head(self.d_model)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def final_min_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    def micro_batches_per_step(self, world_size: int = 1) -> int:
        """How many micro-batches each process accumulates into one optimizer step of `tokens_per_step` tokens."""
        micro_tokens = self.batch_size * self.block_size * world_size  # one micro-batch on every process
        tokens_per_step = self.tokens_per_step or micro_tokens
        if tokens_per_step % micro_tokens:
            raise UserError(f"--tokens-per-step {tokens_per_step} is not a multiple of batch_size x block_size x "
                            f"processes = {micro_tokens}")
        return tokens_per_step // micro_tokens


# The settings that decide the shapes of the weights (and the tokens they mean): a resumed run must have
# the same ones as the run it continues. Everything else (learning rate, --max-iters, logging) may change.
# The optimizer too: its saved state has another form for each.
SHAPE_SETTINGS = ("model", "n_layer", "n_head", "d_model", "block_size", "tokenizer", "vocab_size", "init_from",
                  "optimizer")

# Named sets of defaults. Each one is a complete recipe; command-line flags override single values.
PRESETS: dict[str, dict] = {
    # The default: the user's batch 16, context 256, lr 1e-3, and 8 minutes of training, so that the whole
    # run ends within 10 minutes on any 2-core laptop CPU (see the README for measured runs). The number of
    # steps follows from this machine's speed; `--max-iters N` instead gives exactly N steps anywhere.
    "cpu": dict(max_seconds=480.0, max_iters=5000),
    # Best validation loss within 300 s of training on a 2-core CPU (tiny Shakespeare, char level): the
    # schedule is fitted to the time budget, so a slower machine does fewer steps but still decays fully.
    # A small model sees the most tokens in the time, and Muon gets the most out of each step: 96 wide runs
    # ~50% more steps than 128 and won on every seed (3 layers of 128 did as well on the mean); batch 32
    # rather than 16 halves the share of Muon's per-step cost and its gradient noise; and the schedule
    # decays to 0 rather than to a tenth (a small gain, but on every seed). Context 256 at batch 16 lost on
    # every seed; 2 heads of 64 instead of 4 of 32 (at 128 wide) gained nothing beyond the noise
    # (`bench/README.md`: "Time to quality"). Weight decay 0.1 sets the size Muon's matrices settle at: 0, 0.03
    # and 0.3 lost (one seed; 0 by 0.028). AdamW's rate (embeddings, biases, gains) 8e-3 rather than 4e-3 won
    # five seeds of six, by 0.006 on the mean; Muon's at 0.05 rather than 0.04 lost two seeds of three, by 0.0055
    # on the mean. float32: below 256 wide, bf16's conversions cost more than its faster products save.
    "quality-300s": dict(
        n_layer=4, n_head=3, d_model=96, block_size=128, batch_size=32, optimizer="muon", lr=8e-3, muon_lr=0.04,
        min_lr=0.0, warmup_iters=100, max_iters=100_000, max_seconds=300.0, eval_interval=500, beta2=0.99,
        weight_decay=0.1, dtype="float32",
    ),
    # nanoGPT's shakespeare-char configuration, for a GPU.
    "shakespeare-char": dict(
        n_layer=6, n_head=6, d_model=384, block_size=256, batch_size=64, lr=1e-3, min_lr=1e-4,
        warmup_iters=100, max_iters=5000, dropout=0.2, eval_interval=250, eval_iters=200, beta2=0.99,
    ),
    # GPT-2 124M as trained by build-nanogpt: 0.5M tokens per step (by gradient accumulation).
    "gpt2-124m": dict(
        tokenizer="gpt2", n_layer=12, n_head=12, d_model=768, block_size=1024, batch_size=16,
        tokens_per_step=524288, lr=6e-4, min_lr=6e-5, warmup_iters=715, max_iters=19073,
        weight_decay=0.1, beta2=0.95, eval_interval=250, eval_iters=20,
    ),
    # Fine-tuning released weights on your own text (chosen automatically with --init-from): a small
    # constant learning rate and a short run, so the model learns your style without forgetting English.
    "finetune": dict(
        batch_size=8, block_size=256, lr=3e-5, min_lr=3e-5, warmup_iters=10, max_iters=300,
        weight_decay=0.0, beta2=0.95, eval_interval=50, eval_iters=20, sample_tokens=200,
    ),
}


def _non_negative_int(text: str) -> int:
    return whole_number(text, 0)


def _finite(text: str) -> float:
    """A float that is a real number: "inf" and "nan" parse as floats, but no setting means them."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _probability(text: str) -> float:
    value = _finite(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _fraction(text: str) -> float:
    value = _finite(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = ArgumentParser(
        prog="python src/train.py",
        description="Train a GPT (or the bigram baseline) on a text file, or fine-tune GPT-2 on it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", choices=list(PRESETS), default=d.preset,
                   help="a named set of defaults (flags still override); --init-from implies finetune")
    g = p.add_argument_group("data and output")
    g.add_argument("--data", default=d.data,
                   help="training text (UTF-8), a folder of *.txt files, or a folder prepare.py wrote (streamed); "
                        "default: data/data.txt, else Shakespeare")
    g.add_argument("--out-dir", default=d.out_dir, help="checkpoint, metrics.jsonl and loss.png go here")
    g.add_argument("--tokenizer", choices=["char", "bpe", "gpt2"], default=d.tokenizer,
                   help="char: one token per character; bpe: byte-level BPE trained on your text; gpt2: GPT-2's")
    g.add_argument("--vocab-size", type=positive_int, default=d.vocab_size, help="vocabulary size for --tokenizer bpe")
    g.add_argument("--init-from", default=d.init_from,
                   help="fine-tune: gpt2, gpt2-medium, gpt2-large, gpt2-xl, or a checkpoint folder")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out-dir exactly where it stopped")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["gpt", "bigram"], default=d.model, help="GPT-2 or the bigram baseline")
    g.add_argument("--n-layer", type=positive_int, default=d.n_layer, help="number of transformer blocks")
    g.add_argument("--n-head", type=positive_int, default=None,
                   help="attention heads per block (default: head size 64 where --d-model allows)")
    g.add_argument("--d-model", type=positive_int, default=d.d_model, help="embedding width (divisible by n_head)")
    g.add_argument("--block-size", type=positive_int, default=d.block_size, help="context length in tokens")
    g.add_argument("--dropout", type=_probability, default=d.dropout, help="dropout probability while training")
    g.add_argument("--attn-dropout", type=_probability, default=d.attn_dropout,
                   help="dropout on the attention weights (default: --dropout's); 0 with --dropout > 0 is "
                        "residual-only dropout, which keeps the fast attention kernel")
    g = p.add_argument_group("optimisation")
    g.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="sequences per micro-batch")
    g.add_argument("--tokens-per-step", type=positive_int, default=d.tokens_per_step,
                   help="tokens per optimizer step, reached by gradient accumulation (default: one micro-batch)")
    g.add_argument("--optimizer", choices=["adamw", "muon"], default=d.optimizer,
                   help="adamw; or muon: orthogonalised momentum for the blocks' matrices, AdamW for embeddings, "
                        "biases and gains (src/engine/muon.py)")
    g.add_argument("--lr", type=_positive_float, default=d.lr, help="peak learning rate (AdamW)")
    g.add_argument("--muon-lr", type=_positive_float, default=d.muon_lr, help="peak learning rate of Muon")
    g.add_argument("--min-lr", type=_non_negative_float, default=d.min_lr, help="final LR (default lr/10)")
    g.add_argument("--warmup-iters", type=_non_negative_int, default=d.warmup_iters, help="linear LR warmup steps")
    g.add_argument("--cooldown", type=_fraction, default=d.cooldown,
                   help="hold the peak LR, then decay it linearly over this last fraction of the run (0 < F <= 1; "
                        "default: a cosine decay)")
    g.add_argument("--weight-decay", type=_non_negative_float, default=d.weight_decay,
                   help="decoupled weight decay of the 2-D weights (AdamW's; Muon's too, times Muon's larger rate)")
    g.add_argument("--beta2", type=_probability, default=d.beta2, help="AdamW beta2")
    g.add_argument("--grad-clip", type=_non_negative_float, default=d.grad_clip, help="max gradient norm (0 = off)")
    g.add_argument("--max-iters", type=positive_int, default=d.max_iters,
                   help="optimizer steps; given on the command line, it is the run's exact length (no time budget, "
                        "unless --max-seconds is given too): the same run step for step on any machine")
    g.add_argument("--max-seconds", type=_non_negative_float, default=d.max_seconds,
                   help="training-time budget in seconds (training only: evaluating and saving are not counted): "
                        "stop when it is used up, with the learning-rate decay fitted to end there; 0 = none")
    g.add_argument("--max-bad-steps", type=positive_int, default=d.max_bad_steps,
                   help="stop after this many non-finite losses/gradients in a row")
    g = p.add_argument_group("evaluation and logging")
    g.add_argument("--eval-interval", type=positive_int, default=d.eval_interval, help="steps between evaluations")
    g.add_argument("--eval-iters", type=positive_int, default=d.eval_iters, help="batches per evaluation")
    g.add_argument("--log-interval", type=positive_int, default=d.log_interval, help="steps between log rows")
    g.add_argument("--sample-tokens", type=_non_negative_int, default=d.sample_tokens, help="sample length at the end")
    g.add_argument("--snapshot-max-params", type=_non_negative_int, default=d.snapshot_max_params,
                   help="keep the weights of every evaluation in out-dir/snapshots/ for models up to this many "
                        "parameters (0 = never); for the pictures and the playground")
    g = p.add_argument_group("machine")
    g.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default=d.device, help="where to train")
    g.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default=d.dtype,
                   help="autocast precision; auto = bf16 where the hardware has it, else float32")
    g.add_argument("--compile", choices=["auto", "on", "off"], default=d.compile,
                   help="torch.compile the training step; auto = on for CUDA, off on CPU")
    g.add_argument("--activation-checkpointing", action="store_true",
                   help="keep only each block's input and recompute the block in backward: activation memory for "
                        "about a third more compute (GPT only)")
    g.add_argument("--peak-flops", type=_positive_float, default=d.peak_flops,
                   help="hardware peak FLOP/s for the utilisation figure (default: measured or looked up)")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed: same seed, same run")
    g.add_argument("--cache-dir", default=d.cache_dir,
                   help="where token files and other caches go (default: $GPT_SCRATCH_CACHE, else data/.cache)")
    return p


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command line -> TrainConfig, or exit with a usage error for impossible values."""
    # First pass: which preset? (--init-from without a preset means fine-tuning.)
    first = ArgumentParser(prog="python src/train.py", add_help=False)
    first.add_argument("--preset", choices=list(PRESETS))
    first.add_argument("--init-from")
    known, _ = first.parse_known_args(argv)
    preset = known.preset or ("finetune" if known.init_from else "cpu")

    parser = build_parser()
    parser.set_defaults(preset=preset, **PRESETS[preset])
    args = parser.parse_args(argv)
    if args.max_seconds == 0:
        args.max_seconds = None
    # An explicit --max-iters asks for exactly that many steps: the time budget, which would end the run
    # wherever this machine's speed puts it, is off unless --max-seconds is given as well.
    explicit = parser.parse_args(argv, argparse.Namespace(max_iters=None, max_seconds=None, lr=None, min_lr=None))
    if explicit.max_iters is not None and explicit.max_seconds is None:
        args.max_seconds = None
    # A preset's floor is a fraction of its own peak (fine-tuning's: all of it, a constant rate): another --lr
    # without --min-lr keeps the fraction, rather than a floor above the new peak.
    recipe = PRESETS[preset]
    if explicit.lr is not None and explicit.min_lr is None and "min_lr" in recipe and "lr" in recipe:
        args.min_lr = recipe["min_lr"] * args.lr / recipe["lr"]
    if args.n_head is not None and args.d_model % args.n_head != 0:
        parser.error(f"--d-model ({args.d_model}) must be divisible by --n-head ({args.n_head})")
    if args.min_lr is not None and args.min_lr > args.lr:
        parser.error(f"--min-lr ({args.min_lr}) must not exceed --lr ({args.lr})")
    if args.optimizer == "muon" and args.init_from:
        parser.error("--optimizer muon is for training from scratch: fine-tune (--init-from) with AdamW")
    if args.activation_checkpointing and args.model != "gpt":
        parser.error("--activation-checkpointing is for --model gpt (the bigram has no blocks to recompute)")
    if args.tokenizer == "bpe" and args.vocab_size < 257:
        parser.error(f"--vocab-size must be at least 257 for a byte-level BPE (256 bytes + 1), got {args.vocab_size}")
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})
