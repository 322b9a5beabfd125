"""Generation speed: our KV-cached decoding vs Hugging Face `transformers` on identical random weights.

    python bench/generate.py [--tokens 200] [--repeats 5] [--threads N]

For two shapes (the 6-layer/384-wide/context-256 char model, and GPT-2 124M), batch 1, a 1-token prompt,
sampling at temperature 1: tokens/s of ours with the cache, ours without, ours with bf16 weights, ours
with int8 weights (`src/engine/quantize.py`), and HF `generate` with its cache (and without, for the small
shape). Median of `--repeats` runs. The same weights go into both (saved by us as a Hugging Face folder,
loaded by `transformers`), and greedy continuations are compared token for token in float32. For int8,
how far its next-token distributions are from float32's on that greedy text: the mean KL divergence
in nats (random weights are chaotic, so an int8 greedy text soon takes another path; KL measures the
per-step change itself).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from src.engine.checkpoint import save_checkpoint  # noqa: E402
from src.engine.quantize import quantize_int8  # noqa: E402
from src.model import GPT, GPTConfig  # noqa: E402
from src.tokenizer import CharTokenizer  # noqa: E402

SHAPES = {
    "char 6L/384/ctx256": GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, d_model=384),
    "GPT-2 124M": GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768),
}


def median_tokens_per_s(fn, n_tokens: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return n_tokens / statistics.median(times)


def spread_weights(model: GPT) -> GPT:
    """Re-draw every matrix from N(0, 0.1). At GPT-2's init (std 0.02) all logits are nearly equal, so
    greedy decoding hinges on differences of 1e-6 and any two correct implementations can pick
    different argmaxes. Larger weights give clearly separated logits and a varied greedy text."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    return model


def measure(name: str, config: GPTConfig, n: int, repeats: int) -> dict:
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    ours = spread_weights(GPT(config)).eval()
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(folder, ours, CharTokenizer([chr(i) for i in range(config.vocab_size)]))
        hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    prompt = torch.tensor([[0]])  # (1, 1)

    greedy_ours = ours.generate(prompt, 50, temperature=0)
    # An explicit attention mask: HF would otherwise infer one from pad_token_id, and mask a prompt of id 0.
    mask = torch.ones_like(prompt)
    greedy_hf = hf.generate(prompt, attention_mask=mask, max_new_tokens=50, min_new_tokens=50, do_sample=False,
                            pad_token_id=0)
    row = {"shape": name, "greedy equal": torch.equal(greedy_ours, greedy_hf)}

    def hf_run(use_cache: bool):
        return hf.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=True,
                           top_k=0, use_cache=use_cache, pad_token_id=0)

    row["ours cached"] = median_tokens_per_s(lambda: ours.generate(prompt, n, seed=1), n, repeats)
    row["hf cached"] = median_tokens_per_s(lambda: hf_run(True), n, repeats)
    if config.n_layer <= 6:  # without a cache the 124M shape takes minutes per run
        uncached = lambda: ours.generate(prompt, n, seed=1, use_cache=False)
        row["ours no cache"] = median_tokens_per_s(uncached, n, repeats)
        row["hf no cache"] = median_tokens_per_s(lambda: hf_run(False), n, repeats)
    int8 = quantize_int8(copy.deepcopy(ours))
    row["ours int8 cached"] = median_tokens_per_s(lambda: int8.generate(prompt, n, seed=1), n, repeats)
    with torch.inference_mode():
        exact, approx = ours(greedy_ours)[0], int8(greedy_ours)[0]  # (1, 51, V) each
    kl = F.kl_div(approx.log_softmax(-1), exact.log_softmax(-1), log_target=True, reduction="sum") / 51
    row["int8 KL"] = kl.item()
    ours.to(torch.bfloat16)
    row["ours bf16 cached"] = median_tokens_per_s(lambda: ours.generate(prompt, n, seed=1), n, repeats)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(name, SHAPES[name], args.tokens, args.repeats) for name in args.shapes]

    print(f"\ntokens/s, batch 1, 1-token prompt, {args.tokens} new tokens, sampling, median of {args.repeats}, "
          f"{args.threads} threads, torch {torch.__version__}")
    cols = ["ours cached", "ours bf16 cached", "ours int8 cached", "ours no cache", "hf cached", "hf no cache"]
    print(f"| shape | {' | '.join(cols)} | ours/hf fp32 | int8 | 50 greedy tokens equal (fp32) | int8 KL |")
    print("|---" * (len(cols) + 5) + "|")
    for r in rows:
        cells = [f"{r[c]:.1f}" if c in r else "-" for c in cols]
        fp32, int8 = r["ours cached"] / r["hf cached"], r["ours int8 cached"] / r["hf cached"]
        print(f"| {r['shape']} | {' | '.join(cells)} | {fp32:.2f}x | {int8:.2f}x | {r['greedy equal']} "
              f"| {r['int8 KL']:.4f} |")


if __name__ == "__main__":
    main()
