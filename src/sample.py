"""Generate text from a trained checkpoint: `python src/sample.py --out-dir out --prompt "ROMEO:"`.

Loads the model and its tokenizer from the checkpoint folder that `train.py` wrote, encodes the prompt,
and prints `--num-samples` continuations. The same `--seed` always gives the same text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/sample.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from src.checkpoint import load_checkpoint
from src.device import resolve_device
from src.errors import UserError, run_cli
from src.model import GPT
from src.sampling import check_sampling_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python src/sample.py",
        description="Generate text with a model trained by src/train.py.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out-dir", default="out", help="checkpoint folder written by train.py")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    prompt.add_argument("--prompt-file", help="read the prompt from this UTF-8 file")
    p.add_argument("--max-new-tokens", type=int, default=500, help="how many tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = always the likeliest token; higher = wilder")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the smallest set with mass >= p")
    p.add_argument("--num-samples", type=int, default=1, help="how many continuations to print")
    p.add_argument("--seed", type=int, default=1337, help="random seed: same seed, same text")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="cpu", help="where to run the model")
    return p


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Encode the prompt; with no prompt, start from a newline (the start of a line of text)."""
    if prompt:
        return tokenizer.encode(prompt)
    try:
        return tokenizer.encode("\n")
    except UserError:  # a char vocabulary without a newline
        return [0]


def read_prompt(args) -> str:
    if args.prompt_file is None:
        return args.prompt
    path = Path(args.prompt_file)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"prompt file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"prompt file {path} is not UTF-8 (bad byte at offset {err.start})") from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_sampling_args(args.temperature, args.top_k, args.top_p)
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {args.num_samples}")
    prompt = read_prompt(args)

    model, tokenizer, _ = load_checkpoint(args.out_dir)
    ids = prompt_ids(tokenizer, prompt)
    if isinstance(model, GPT) and len(ids) > model.block_size:
        raise UserError(
            f"the prompt is {len(ids)} tokens long, but the model's context is {model.block_size}: shorten it"
        )
    device = resolve_device(args.device)
    model.to(device)
    idx = torch.tensor([ids] * args.num_samples, dtype=torch.long, device=device)  # (num_samples, T)
    out = model.generate(
        idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed
    )  # (num_samples, T + max_new_tokens)
    for i, row in enumerate(out.tolist()):
        if args.num_samples > 1:
            print(f"--- sample {i + 1} ---")
        print(prompt + tokenizer.decode(row[len(ids) :]))


if __name__ == "__main__":
    run_cli(main)
