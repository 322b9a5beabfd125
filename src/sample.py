"""Generate text from a trained checkpoint: `python src/sample.py --out-dir out --prompt "ROMEO:"`.

Loads the model and its tokenizer from the checkpoint folder that `train.py` wrote (or from a Hugging Face
GPT-2 folder, or a released GPT-2 by name: `--out-dir gpt2`, with GPT-2's own tokenizer), encodes the
prompt, and prints the prompt followed by its continuation. The same `--seed` always gives the same text.

What the flags do:
- `--num-samples N` generates N continuations in one batch. Sample i is drawn with seed `--seed` + i, so it
  is exactly the text a single run with `--seed` + i prints (handy to pick one and reproduce it).
- `--stop TEXT` (repeatable) ends a continuation just before the first place TEXT appears in it; the stop
  text itself is not printed. `\\n`, `\\t` and `\\\\` in TEXT mean newline, tab and backslash, so
  `--stop "\\n\\n"` stops at the first blank line. A tokenizer with GPT-2's "<|endoftext|>" token always
  stops there too (the model's way of saying "this text is over"). With several samples each one stops on
  its own; the batch runs until every sample has stopped or `--max-new-tokens` is reached.
- `--stream` prints the text as it is generated, token by token, and the speed (tokens/s) on stderr at the
  end. A character can be split across two BPE tokens, so `StreamDecoder` holds back incomplete UTF-8
  bytes, and text that might be the start of a stop string is held back until it is known not to be.
  With `--num-samples` > 1 the samples are streamed one after another (sample i still uses seed + i, so
  the text is the same as without `--stream`).
- `--interactive` reads prompts from stdin, one per line, and answers each; an empty line or end of
  input (Ctrl-D) quits. A prompt the model cannot read is reported and the loop goes on. Every prompt is
  sampled with `--seed`, so the same prompt gets the same answer.
- `--repetition-penalty P` (> 1) makes tokens already in the text less likely; `--no-cache` turns the
  KV cache off (slower, same text: a way to see what the cache buys).
- `--int8` stores the weights as int8 with one scale per row (`engine/quantize.py`) before generating, and
  multiplies them with a small C kernel of our own (`engine/int8_matvec.py`, compiled on first use, under a
  second): on a CPU, where reading the weights is what a token costs, 2-3x faster; the text differs
  slightly from float32's (rounded weights), so `--seed` reproduces an `--int8` text only with `--int8`
  (and, without a C compiler, PyTorch's int8 kernel is used, which rounds a little differently).
- `--fast` runs each one-token step of a GPT as one call to C (`engine/decode_step.py`, compiled on first
  use in about a second): the layer norms, attention over the cache and GELU around products that read
  each weight once. On a CPU each token then comes faster, for small and large models alike (see
  `bench/README.md`); the text is the same up to the order of additions. A text uses the C step for its
  first block_size tokens (past the context every step re-reads it, as a prompt). With `--int8` the C
  step reads the int8 weights: `--int8`'s text up to rounding, faster.

A prompt longer than the model's context is cut to its last `block_size` tokens (the model cannot see
further back), with a note on stderr saying so.

stdout holds nothing but the generated text (and `--- sample i ---` headers for several samples), so it
can be piped or compared; everything else (prompts of `--interactive`, speed, the size of a large model,
notes, errors) goes to stderr. Decoding the stream and cutting it at stop strings is engine/textstream.py.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/sample.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from src.engine import decode_step
from src.engine.checkpoint import load_pretrained
from src.engine.decode_step import CDecoding
from src.engine.errors import ArgumentParser, UserError, run_cli
from src.engine.gpt2_files import CONFIG
from src.engine.hub import resolve_pretrained
from src.engine.perf import describe, param_count
from src.engine.precision import resolve_device
from src.engine.quantize import quantize_int8
from src.engine.textstream import Continuation
from src.generate import encode_prompt, generate_tokens
from src.model import config_from_hf
from src.sampling import check_sampling_args

LARGE_MODEL = 100_000_000  # parameters; above this, say how much memory the model needs before loading it


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python src/sample.py",
        description="Generate text with a model trained by src/train.py (or a released GPT-2).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out-dir", default="out",
                   help="checkpoint folder written by train.py, a Hugging Face GPT-2 folder, or gpt2/gpt2-medium/...")
    prompt = p.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default="", help="text to continue (default: start from a newline)")
    prompt.add_argument("--prompt-file", help="read the prompt from this UTF-8 file")
    prompt.add_argument("--interactive", action="store_true",
                        help="read prompts from stdin, one per line; an empty line or Ctrl-D quits")
    p.add_argument("--max-new-tokens", type=int, default=500, help="how many tokens to generate (at most)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = always the likeliest token; higher = wilder")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k likeliest tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the smallest set with mass >= p")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="> 1 makes tokens already in the text less likely (1 = off)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="end a continuation before TEXT (repeatable; \\n = newline)")
    p.add_argument("--num-samples", type=int, default=1, help="how many continuations to print (sample i: seed + i)")
    p.add_argument("--seed", type=int, default=1337, help="random seed: same seed, same text")
    p.add_argument("--stream", action="store_true", help="print tokens as they are generated; speed on stderr")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context every step (no KV cache)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="cpu", help="where to run the model")
    p.add_argument("--int8", action="store_true",
                   help="int8 weights: 2-3x faster on a CPU, text slightly different (see engine/quantize.py)")
    p.add_argument("--fast", action="store_true",
                   help="decode with the whole one-token step in C (CPU, engine/decode_step.py): faster, the same "
                        "text up to rounding; with --int8 too")
    return p


# --- input ---------------------------------------------------------------------------------------------------


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
    except OSError as err:  # a folder, no permission to read
        raise UserError(f"cannot read prompt file {path}: {err.strerror}") from None


def unescape(text: str) -> str:
    r"""The escapes a shell makes awkward to type: \n -> newline, \t -> tab, \\ -> backslash."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t", "\\": "\\"}[m.group(1)], text)


def check_args(args) -> None:
    """Every setting that can be wrong, checked before the (possibly slow) model load."""
    check_sampling_args(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    if args.max_new_tokens < 0:
        raise UserError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {args.num_samples}")
    if any(stop == "" for stop in args.stop):
        raise UserError("--stop must not be empty (an empty string would match at once)")


# --- the model -------------------------------------------------------------------------------------------------


def size_line(path: Path) -> str | None:
    """'124,439,808 parameters: weights 0.50 GB' for a large GPT-2 folder, read from config.json alone."""
    try:
        hf = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        config = config_from_hf(hf) if hf.get("model_type") == "gpt2" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UserError):
        return None  # load_pretrained reports a broken folder properly
    if config is None:
        return None
    n = param_count(config.vocab_size, config.block_size, config.n_layer, config.d_model)
    return describe(n, train=False) if n > LARGE_MODEL else None


def load(out_dir: str):
    """(model, tokenizer) from a folder `train.py` wrote, a Hugging Face GPT-2 folder, or a released GPT-2."""
    path = resolve_pretrained(out_dir)
    line = size_line(path)
    if line:
        print(f"loading {out_dir}: {line}", file=sys.stderr)
    return load_pretrained(path)


# --- generation ------------------------------------------------------------------------------------------------


def continue_prompt(model, rows: list[Continuation], ids: list[int], args, seed: int, on_token=None) -> int:
    """Generate for len(rows) copies of the prompt `ids` in one batch, feeding row i's tokens to rows[i].

    Row i draws with seed `seed` + i. Stops early once every row is done. `on_token()` is called after
    each step (for streaming).
    Returns the number of steps taken (= tokens generated per row).
    """
    device = next(model.parameters()).device
    idx = torch.tensor([ids] * len(rows), dtype=torch.long, device=device)  # (n, T)
    tokens = generate_tokens(
        model, idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=[seed + i for i in range(len(rows))], repetition_penalty=args.repetition_penalty,
        use_cache=not args.no_cache,
    )  # yields (n, 1) per step
    steps = 0
    try:
        for next_ids in tokens:
            steps += 1
            for row, token in zip(rows, next_ids[:, 0].tolist(), strict=True):
                row.add(token)
            if on_token is not None:
                on_token()
            if all(row.done for row in rows):
                break
    finally:
        tokens.close()  # restores the model's training mode if we stopped early
    for row in rows:
        row.finish()
    return steps


def answer(model, tokenizer, prompt: str, args, stops: list[str]) -> None:
    """Print `--num-samples` continuations of `prompt`, each as prompt + continuation."""
    ids = encode_prompt(tokenizer, prompt)
    if len(ids) > model.block_size:
        print(f"note: the prompt is {len(ids)} tokens long and the model's context is {model.block_size}: it sees "
              f"only the last {model.block_size}", file=sys.stderr)
    header = (lambda i: f"--- sample {i + 1} ---") if args.num_samples > 1 else None
    if not args.stream:  # all samples in one batch, printed at the end
        rows = [Continuation(tokenizer, stops) for _ in range(args.num_samples)]
        continue_prompt(model, rows, ids, args, args.seed)
        for i, row in enumerate(rows):
            if header:
                print(header(i))
            print(prompt + row.text)
        return

    # Streaming: one sample at a time (sample i with seed + i, as in the batch), printed as it grows.
    start, n_tokens = time.perf_counter(), 0
    for i in range(args.num_samples):
        if header:
            print(header(i))
        print(prompt, end="", flush=True)
        row = Continuation(tokenizer, stops)

        def show(row=row):  # after every token: print what is certain by now
            print(row.new_text(), end="", flush=True)

        n_tokens += continue_prompt(model, [row], ids, args, args.seed + i, show)
        print(row.new_text(), flush=True)  # what was held back, and the final newline
    seconds = time.perf_counter() - start
    print(f"{n_tokens} tokens in {seconds:.2f} s: {n_tokens / max(seconds, 1e-9):.1f} tokens/s", file=sys.stderr)


def interact(model, tokenizer, args, stops: list[str]) -> None:
    """Answer prompts read from stdin until an empty line or end of input."""
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        prompt = line.rstrip("\r\n")
        if not prompt:  # "" at end of input (Ctrl-D), "\n" for an empty line
            if not line:
                print(file=sys.stderr)  # end the "> " line
            return
        try:
            answer(model, tokenizer, prompt, args, stops)
        except UserError as err:  # a prompt the model cannot read: say so, and ask for the next one
            print(f"error: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_args(args)
    stops = [unescape(stop) for stop in args.stop]
    prompt = "" if args.interactive else read_prompt(args)

    device = resolve_device(args.device)
    for flag in ("int8", "fast"):
        if getattr(args, flag) and device.type != "cpu":
            raise UserError(f"--{flag} speeds up generation on a CPU only; drop it, or use --device cpu (not {device})")
    if args.fast and args.no_cache:
        raise UserError("--fast speeds up the step that decodes after the KV cache: drop --no-cache, or --fast")
    model, tokenizer = load(args.out_dir)
    model.to(device)
    if args.int8:
        quantize_int8(model)
    if args.fast and decode_step.available():  # else a warning, and the model's own steps
        model = CDecoding(model)  # float32 or int8 weights, read where they lie
    try:
        if args.interactive:
            interact(model, tokenizer, args, stops)
        else:
            answer(model, tokenizer, prompt, args, stops)
    except KeyboardInterrupt:  # Ctrl-C while generating: stop quietly, like `head` or `cat` would
        print(file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run_cli(main)
