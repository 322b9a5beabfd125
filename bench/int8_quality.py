"""What int8 weights cost in quality: validation loss of a trained checkpoint, float32 vs int8.

    python bench/int8_quality.py [--out-dir out] [--data PATH] [--cache-dir DIR] [--windows 16]

Takes the checkpoint `train.py` wrote and the validation part of its text (the last 10%, split and
tokenized by the same `prepare_data` that training uses, so the run's token cache is reused), and scores
the next-token loss over `--windows` windows of block_size tokens, the way `sample.py` computes them:
batch 1, the KV cache, one token per step. So the int8 numbers include everything `--int8` changes
(rounded weights, and bfloat16 activations inside the int8 kernel). Also prints decoding speed for both.
A trained model is the oracle that random weights cannot be: its loss says whether the rounding hurt
what it learned.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from src.dataloader import prepare_data  # noqa: E402
from src.engine.checkpoint import load_pretrained  # noqa: E402
from src.engine.corpus import CACHE_DIR  # noqa: E402
from src.engine.quantize import quantize_int8  # noqa: E402


@torch.inference_mode()
def decoding_loss(model, windows: torch.Tensor) -> tuple[float, float]:
    """Mean next-token loss over `windows` (N, T + 1), fed one token at a time; and seconds per token."""
    total, count, seconds = 0.0, 0, 0.0
    for window in windows:
        cache = model.new_kv_cache(1)
        start = time.perf_counter()
        for t in range(windows.shape[1] - 1):
            logits, _ = model(window[t : t + 1].view(1, 1), cache=cache)  # (1, 1, V)
            total += F.cross_entropy(logits.view(1, -1).float(), window[t + 1 : t + 2]).item()
            count += 1
        seconds += time.perf_counter() - start
    return total / count, seconds / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="out", help="a checkpoint folder written by train.py")
    parser.add_argument("--data", default=None, help="the text it was trained on (default: the default corpus)")
    parser.add_argument("--windows", type=int, default=16, help="how many validation windows to score")
    parser.add_argument("--cache-dir", default=str(CACHE_DIR), help="train.py's --cache-dir (default: %(default)s)")
    args = parser.parse_args()

    model, tokenizer = load_pretrained(args.out_dir)
    model.eval()
    T = model.config.block_size
    data = prepare_data(args.data, T, args.cache_dir, tokenizer)  # joined, split and tokenized as train.py does
    val = torch.from_numpy(data.val.astype("int64"))
    n = min(args.windows, (len(val) - 1) // T)
    windows = torch.stack([val[i * T : i * T + T + 1] for i in range(n)])  # (n, T + 1), without overlap
    units = data.tokens_per_char

    rows = {"float32": decoding_loss(model, windows)}
    rows["int8"] = decoding_loss(quantize_int8(copy.deepcopy(model)), windows)
    print(f"\n{args.out_dir}: {n} validation windows of {T} tokens, decoded one token at a time, "
          f"{torch.get_num_threads()} threads")
    print("| weights | val loss | bits/char | ms/token |")
    print("|---|---|---|---|")
    for name, (loss, seconds) in rows.items():
        print(f"| {name} | {loss:.4f} | {loss * units / math.log(2):.3f} | {seconds * 1e3:.2f} |")
    print(f"int8 - float32: {rows['int8'][0] - rows['float32'][0]:+.4f} nats per token")


if __name__ == "__main__":
    main()
