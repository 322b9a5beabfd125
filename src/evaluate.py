"""How good is a model? Its loss on text it never trained on, and HellaSwag, a test of common sense.

    python src/evaluate.py --out-dir out --data prepared/                  # loss on the validation split
    python src/evaluate.py --out-dir gpt2 --hellaswag hellaswag_val.jsonl  # OpenAI's GPT-2 on HellaSwag
    python src/evaluate.py --out-dir out --stage best --data prepared/ --hellaswag hellaswag_val.jsonl

The validation numbers (`--data DIR`, a folder written by `python src/prepare.py`):

    tokens evaluated  every validation token but the first of each shard is predicted once, from the tokens
                      before it: this many predictions were scored.
    loss              the mean over those predictions of -ln p(the true next token): the cross-entropy, in nats
                      per token. A model that knows nothing spreads p evenly over its V tokens: loss ln V
                      (4.26 for 71 characters, 10.82 for GPT-2's 50,257 tokens). 0 would be certainty.
    perplexity        exp(loss): the model is as unsure as if it picked among this many equally likely tokens
                      (V for the know-nothing model, 1 for a perfect one).
    bits per byte     loss / ln 2 is bits per token; times tokens per byte of the validation text (UTF-8) it
                      is bits per byte: what a compressor driven by the model would need to store each byte.
                      A character model has ~1 token per byte, GPT-2's tokenizer about a quarter: their losses per token
                      cannot be compared, their bits per byte can (nanochat reports this one number).

The validation text is cut into windows of block_size + 1 tokens side by side (dataloader.py's
`validation_batches`); x is the first block_size, y the same shifted by one. Each window starts its context
afresh, so a token near a window's start is predicted from few tokens: the standard quick measure (nanoGPT,
build-nanogpt), a little pessimistic next to sliding the context along one token at a time. The sum of the
per-token losses is divided by the number of tokens, never the mean of per-batch means: the last, shorter
window of each shard would otherwise weigh as much as a full batch.

HellaSwag (`--hellaswag FILE.jsonl`, the published jsonl: github.com/rowanz/hellaswag, data/hellaswag_val.jsonl)
gives a context and four endings, of which one is right:

    "A man is sitting on a roof. he"  ->  "starts pulling up roofing on a roof."  (and three wrong endings)

A language model does not choose; it only says how likely each ending is after the context. Scored exactly
as build-nanogpt's hellaswag.py ("completion style"): each ending's tokens are encode(" " + ending), the row
is context + ending, and the loss of every ending token given everything before it is summed.

    accuracy             the ending with the smallest summed loss is the model's answer: how often it is right.
                         Long endings are penalised (more tokens, more loss), so this favours short endings.
    normalised accuracy  the answer is the ending with the smallest *mean* loss per token (build-nanogpt's
                         acc_norm; the usual headline number). Chance is 0.25 for both.

For reference, THEIR numbers (not measured here): build-nanogpt's hellaswag.py gives OpenAI's GPT-2 124M
acc_norm 0.2955 and acc 0.2859 on the 10,042 validation examples (GPT-2 XL: 0.4893 and 0.3842). A model
trained on Shakespeare, or with a character tokenizer, is expected near chance: HellaSwag is modern English.

`validation_metrics`, `read_hellaswag` and `hellaswag_metrics` return the numbers as dicts, for a notebook
or a test; `main` prints them as a table (progress bars on stderr).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/evaluate.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.nn import functional as F
from tqdm import tqdm

from src.dataloader import PreparedData
from src.engine.errors import ArgumentParser, UserError, run_cli
from src.engine.perf import bits
from src.engine.precision import resolve_device
from src.engine.shards import is_prepared
from src.engine.stages import load_described
from src.pictures import evaluating  # the model in eval mode, without autograd, put back afterwards
from src.tokenizer import Tokenizer

N_ENDINGS = 4  # every HellaSwag example has four endings
REFERENCE = ("build-nanogpt's hellaswag.py, GPT-2 124M, 10,042 validation examples: "
             "accuracy 0.2859, normalised accuracy 0.2955")


# --- loss on the validation split ----------------------------------------------------------------------------


def validation_metrics(model, data: PreparedData, block_size: int, batch_size: int, device="cpu",
                       progress: bool = False) -> dict:
    """Loss (nats/token), perplexity and bits per byte over the whole validation split of `data`.

    Returns dict(loss, perplexity, bits_per_byte, tokens), tokens = how many predictions were scored.
    """
    total, count = 0.0, 0  # summed loss (a float64 Python number), number of targets
    batches = data.validation_batches(block_size, batch_size, device)  # read one at a time
    n_batches = len(data.validation_groups(block_size, batch_size))
    with evaluating(model):
        for x, y in tqdm(batches, total=n_batches, desc="validation", unit="batch", disable=not progress,
                         file=sys.stderr):
            logits, _ = model(x)  # (B, T, V)
            V = logits.size(-1)
            # The sum, not the mean: batches differ in size (a shard's last window is a batch of its own).
            total += F.cross_entropy(logits.float().view(-1, V), y.view(-1), reduction="sum").item()
            count += y.numel()
    if count == 0:
        raise UserError(f"the validation split of {data.folder} holds no token to predict: prepare it with a "
                        "larger --val-tokens")
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss), "bits_per_byte": bits(loss, data.tokens_per_byte),
            "tokens": count}


def check_tokenizers(model, tokenizer: Tokenizer, data: PreparedData) -> None:
    """The data's ids must mean to the model what they meant when it trained: same tokenizer, ids in range."""
    model_vocab, data_vocab = model.config.vocab_size, data.tokenizer.vocab_size
    if model_vocab < data_vocab:
        raise UserError(f"the model knows {model_vocab} tokens but {data.folder} was prepared with a tokenizer of "
                        f"{data_vocab}: prepare the data with the model's own tokenizer (prepare.py --tokenizer)")
    if data.tokenizer.to_json() != tokenizer.to_json():
        raise UserError(f"{data.folder} was prepared with another tokenizer ({data.tokenizer.kind}, {data_vocab} "
                        f"tokens) than the model's ({tokenizer.kind}, {tokenizer.vocab_size} tokens): the same ids "
                        "would mean different text; prepare it with the model's (prepare.py --tokenizer "
                        "OUT_DIR/scratch_tokenizer.json, or --tokenizer gpt2 for GPT-2)")


def resolve_block_size(requested: int | None, model) -> int:
    """--block-size, or the model's whole context; never more than the model can read."""
    if requested is None:
        return model.block_size
    if not 1 <= requested <= model.block_size:
        raise UserError(f"--block-size must be 1..{model.block_size} (the model's context), got {requested}")
    return requested


# --- HellaSwag -----------------------------------------------------------------------------------------------


def parse_example(line: str, where: str) -> dict:
    """One jsonl line -> the example (a dict with at least ctx, endings, label), checked; `where` = FILE:LINE."""
    try:
        example = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not a JSON object ({err.msg})") from None
    if not isinstance(example, dict):
        raise UserError(f"{where}: not a JSON object")
    missing = [key for key in ("ctx", "endings", "label") if key not in example]
    if missing:
        raise UserError(f"{where}: no {', '.join(repr(key) for key in missing)} (a HellaSwag example has ctx, "
                        "endings and label)")
    ctx, endings, label = example["ctx"], example["endings"], example["label"]
    if not isinstance(ctx, str) or not ctx:
        raise UserError(f"{where}: ctx must be a non-empty string")
    if not isinstance(endings, list) or len(endings) != N_ENDINGS or not all(isinstance(e, str) for e in endings):
        raise UserError(f"{where}: endings must be a list of {N_ENDINGS} strings")
    if type(label) is not int or not 0 <= label < N_ENDINGS:  # type(): True is an int too
        raise UserError(f"{where}: label must be 0, 1, 2 or 3, got {label!r}")
    return example


def read_hellaswag(path) -> list[dict]:
    """The examples of a HellaSwag jsonl file, one JSON object a line (blank lines skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"HellaSwag file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder; --hellaswag takes a .jsonl file") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 (bad byte at offset {err.start})") from None
    lines = text.split("\n")  # not splitlines(): a JSON string may hold U+2028, which splitlines cuts at
    examples = [parse_example(line, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not examples:
        raise UserError(f"{path} holds no HellaSwag example")
    return examples


def render_example(tokenizer: Tokenizer, example: dict, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The four rows context + ending, padded: tokens (4, T), and mask (4, T) = 1 on the ending's tokens.

    As build-nanogpt's `render_example`, plus one rule for a row longer than the model's context.
    """
    ctx_tokens = tokenizer.encode(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        # " " + ending: the ending continues the context after a space, and GPT-2's tokens carry their space.
        end_tokens = tokenizer.encode(" " + ending)
        if len(end_tokens) >= block_size:
            raise UserError(f"an ending of {len(end_tokens)} tokens does not fit the model's context of "
                            f"{block_size} with a token of context before it: {ending[:40]!r}")
        # Too long for the context: keep the row's last block_size tokens. The ending stays whole (it is
        # shorter than block_size), only the start of the context is dropped.
        rows.append((ctx_tokens + end_tokens)[-block_size:])
        masks.append(([0] * len(ctx_tokens) + [1] * len(end_tokens))[-block_size:])
    T = max(len(row) for row in rows)
    tokens = torch.zeros((N_ENDINGS, T), dtype=torch.long)  # padding after a row's end: the causal model's
    mask = torch.zeros((N_ENDINGS, T), dtype=torch.long)  # earlier positions never see it, and mask is 0 there
    for i, (row, row_mask) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = torch.tensor(row_mask)
    return tokens, mask


def ending_losses(model, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens, mask (4, T) -> (summed loss, mean loss per token) of each row's ending: two (4,) tensors."""
    logits, _ = model(tokens)  # (4, T, V)
    V = logits.size(-1)
    # Position t predicts token t + 1: drop the last position's logits and the first token.
    losses = F.cross_entropy(logits[:, :-1].float().reshape(-1, V), tokens[:, 1:].reshape(-1), reduction="none")
    losses = losses.view(tokens.size(0), -1)  # (4, T - 1)
    shift_mask = mask[:, 1:]  # (4, T - 1): 1 where the predicted token belongs to the ending
    sum_loss = (losses * shift_mask).sum(dim=1)  # (4,)
    return sum_loss, sum_loss / shift_mask.sum(dim=1)


def hellaswag_metrics(model, tokenizer: Tokenizer, examples: list[dict], device="cpu",
                      progress: bool = False) -> dict:
    """Accuracy (smallest summed loss) and normalised accuracy (smallest mean loss) over `examples`.

    Returns dict(accuracy, accuracy_norm, count, correct, correct_norm). One example (4 rows) per forward
    pass, as build-nanogpt does: larger batches would change the float rounding, and with it an odd tie.
    """
    if not examples:
        raise UserError("no HellaSwag example to evaluate")
    rendered = []  # all encoded first: a character the tokenizer lacks fails at once, not after an hour
    for i, example in enumerate(examples):
        try:
            rendered.append(render_example(tokenizer, example, model.block_size))
        except UserError as err:
            raise UserError(f"HellaSwag example {i + 1}: {err}") from None
    correct = correct_norm = 0
    with evaluating(model):
        for (tokens, mask), example in tqdm(list(zip(rendered, examples, strict=True)), desc="hellaswag",
                                            unit="example", disable=not progress, file=sys.stderr):
            sum_loss, avg_loss = ending_losses(model, tokens.to(device), mask.to(device))
            correct += int(sum_loss.argmin().item() == example["label"])
            correct_norm += int(avg_loss.argmin().item() == example["label"])
    count = len(examples)
    return {"accuracy": correct / count, "accuracy_norm": correct_norm / count, "count": count,
            "correct": correct, "correct_norm": correct_norm}


# --- the command ---------------------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python src/evaluate.py",
                       description="Evaluate a model: validation loss, perplexity and bits per byte on prepared "
                                   "data, and/or HellaSwag accuracy. Reference (theirs): " + REFERENCE + ".")
    p.add_argument("--out-dir", default="out",
                   help="the folder train.py wrote, a Hugging Face GPT-2 folder, or gpt2/gpt2-medium/... "
                        "(default: out)")
    p.add_argument("--stage", default=".",
                   help="which model in it: . (the latest, default), best, snapshots/step-000250, ...")
    p.add_argument("--data", metavar="DIR", help="a folder written by prepare.py: evaluate its validation split")
    p.add_argument("--hellaswag", metavar="FILE.jsonl", help="HellaSwag examples (e.g. hellaswag_val.jsonl)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="HellaSwag: only the first N examples")
    p.add_argument("--block-size", type=int, default=None, metavar="N",
                   help="validation: context length of the windows (default and maximum: the model's)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="validation: windows per forward pass (default: 8)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto",
                   help="where to run the model (default: auto = a GPU if there is one, else the CPU)")
    return p


def check_args(parser: ArgumentParser, args) -> None:
    """Every setting that can be wrong, checked before the (possibly slow) model load."""
    if args.data is None and args.hellaswag is None:
        parser.error("nothing to evaluate: give --data DIR, --hellaswag FILE.jsonl, or both")
    if args.batch_size < 1:
        parser.error(f"argument --batch-size: must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        parser.error(f"argument --limit: must be >= 1, got {args.limit}")
    if args.limit is not None and args.hellaswag is None:
        parser.error("argument --limit: counts HellaSwag examples, and no --hellaswag was given")
    if args.data is not None and not Path(args.data).is_dir():
        raise UserError(f"no prepared data at {args.data} (make it with: python src/prepare.py TEXT --out "
                        f"{args.data})")
    if args.data is not None and not is_prepared(args.data):
        raise UserError(f"{args.data} is not a folder written by prepare.py (it has no manifest.json)")


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(title)
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    examples = read_hellaswag(args.hellaswag)[: args.limit] if args.hellaswag is not None else None
    data = PreparedData(args.data) if args.data is not None else None
    device = resolve_device(args.device)
    model, tokenizer, where = load_described(args.out_dir, args.stage)
    model.to(device).eval()
    results = {}
    if data is not None:
        check_tokenizers(model, tokenizer, data)
        block_size = resolve_block_size(args.block_size, model)
        m = validation_metrics(model, data, block_size, args.batch_size, device, progress=True)
        results["validation"] = m
        print_table(f"{where} on the validation split of {args.data} (windows of {block_size} tokens):", [
            ("tokens evaluated", f"{m['tokens']:,}"),
            ("loss", f"{m['loss']:.4f} nats/token"),
            ("perplexity", f"{m['perplexity']:.2f}"),
            ("bits per byte", f"{m['bits_per_byte']:.4f}"),
        ])
    if examples is not None:
        m = hellaswag_metrics(model, tokenizer, examples, device, progress=True)
        results["hellaswag"] = m
        print_table(f"{where} on HellaSwag ({args.hellaswag}):", [
            ("examples", f"{m['count']:,}"),
            ("accuracy", f"{m['accuracy']:.4f} ({m['correct']:,}/{m['count']:,})"),
            ("normalised accuracy", f"{m['accuracy_norm']:.4f} ({m['correct_norm']:,}/{m['count']:,})"),
            ("chance", "0.2500"),
            ("theirs, for reference", REFERENCE),
        ])
    return results


if __name__ == "__main__":
    run_cli(main)
