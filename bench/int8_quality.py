"""What int8 weights cost in quality: validation loss of a trained checkpoint, float32 vs int8.

    python bench/int8_quality.py [--out-dir out] [--data PATH] [--cache-dir DIR] [--windows 16]

Takes the checkpoint `train.py` wrote and the validation part of its text (the last 10%, split and
tokenized by the same `prepare_data` that training uses, so the run's token cache is reused), and scores
the next-token loss over `--windows` windows of block_size tokens, the way `sample.py` computes them:
batch 1, the KV cache, one token per step. So the int8 numbers include everything `--int8` changes: the
rounded weights (our int8 kernel keeps the activations in float32; PyTorch's, used without a C compiler,
rounds them to bfloat16: a third row). Also prints how far int8's next-token distribution is from
float32's (the mean KL divergence, KL(float32 || int8)) and the decoding speed of each (the models take
turns token by token, so each one's weights leave the cache to the others': the ms/token of a small model
run high).
A trained model is the oracle that random weights cannot be: its loss says whether the rounding hurt
what it learned.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from src.dataloader import prepare_data  # noqa: E402
from src.engine.checkpoint import load_pretrained  # noqa: E402
from src.engine.corpus import CACHE_DIR  # noqa: E402
from src.engine.errors import ArgumentParser, UserError, positive_int, run_cli  # noqa: E402
from src.engine.perf import cpu_description  # noqa: E402
from src.engine.quantize import quantize_int8  # noqa: E402


@torch.inference_mode()
def compare(models: dict, windows: torch.Tensor) -> dict[str, dict[str, float]]:
    """Feed every window (N, T + 1) to each model one token at a time, in lockstep. Per model: the mean
    next-token loss, seconds per token, and the mean KL divergence KL(first || this model) of the next-token
    distributions (nats; 0 for the first)."""
    stats = {name: {"loss": 0.0, "seconds": 0.0, "kl": 0.0} for name in models}
    count = 0
    for window in windows:
        caches = {name: model.new_kv_cache(1) for name, model in models.items()}
        for t in range(windows.shape[1] - 1):
            reference = None
            for name, model in models.items():
                start = time.perf_counter()
                logits, _ = model(window[t : t + 1].view(1, 1), cache=caches[name])  # (1, 1, V)
                stats[name]["seconds"] += time.perf_counter() - start
                logp = F.log_softmax(logits.view(1, -1).float(), dim=-1)  # (1, V)
                stats[name]["loss"] += F.nll_loss(logp, window[t + 1 : t + 2]).item()
                if reference is None:
                    reference = logp
                stats[name]["kl"] += F.kl_div(logp, reference, log_target=True, reduction="sum").item()
            count += 1
    return {name: {key: value / count for key, value in row.items()} for name, row in stats.items()}


def validation_windows(val: torch.Tensor, block_size: int, wanted: int) -> torch.Tensor:
    """Up to `wanted` windows (n, block_size + 1) of the validation tokens, without overlap. A validation part
    too short for one window is the user's to fix (more text, or the text the model was trained on)."""
    n = min(wanted, (len(val) - 1) // block_size)
    if n == 0:
        raise UserError(f"the validation text has {len(val):,} tokens, fewer than one window of block_size + 1 = "
                        f"{block_size + 1}: pass --data with the (longer) text the model was trained on")
    return torch.stack([val[i * block_size : i * block_size + block_size + 1] for i in range(n)])


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default="out", help="a checkpoint folder written by train.py")
    parser.add_argument("--data", default=None, help="the text it was trained on (default: the default corpus)")
    parser.add_argument("--windows", type=positive_int, default=16, help="how many validation windows to score")
    parser.add_argument("--cache-dir", default=str(CACHE_DIR), help="train.py's --cache-dir (default: %(default)s)")
    args = parser.parse_args()

    model, tokenizer = load_pretrained(args.out_dir)
    model.eval()
    T = model.config.block_size
    data = prepare_data(args.data, T, args.cache_dir, tokenizer)  # joined, split and tokenized as train.py does
    val = torch.from_numpy(data.val.astype("int64"))
    windows = validation_windows(val, T, args.windows)  # (n, T + 1)
    n = len(windows)
    units = data.tokens_per_char

    rows = compare({"float32": model, "int8": quantize_int8(copy.deepcopy(model)),
                    "int8, PyTorch's kernel": quantize_int8(copy.deepcopy(model), own_kernel=False)}, windows)
    print(f"\n{args.out_dir}: {n} validation windows of {T} tokens, decoded one token at a time, "
          f"{torch.get_num_threads()} threads; CPU: {cpu_description()}, load average {os.getloadavg()[0]:.1f}")
    print("| weights | val loss | bits/char | KL from float32 (nats) | ms/token |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['loss']:.4f} | {row['loss'] * units / math.log(2):.3f} | {row['kl']:.5f} "
              f"| {row['seconds'] * 1e3:.2f} |")
    for name in ("int8", "int8, PyTorch's kernel"):
        print(f"{name} - float32: {rows[name]['loss'] - rows['float32']['loss']:+.4f} nats per token")


if __name__ == "__main__":
    run_cli(main)
