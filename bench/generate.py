"""Decoding speed against the memory-bandwidth limit, next to Hugging Face `transformers` in the same run.

    python bench/generate.py [--tokens 100] [--repeats 5] [--threads N] [--shapes 124M char] [--only C compiled]
    python bench/generate.py --levers     # the matrix-vector products alone, in every way tried

A decoding step reads every weight of the model once, for one multiply-add each, so on a CPU its time is
set by how fast memory delivers the weights. For each shape and each way of storing and multiplying the
weights the script reports: tokens/s, the weight bytes one token reads, those bytes x tokens/s (the rate the
weights stream at) and its fraction of this machine's memory read bandwidth, and the speed-up over HF's
float32 decoding measured in the same run. The bandwidth is measured as one more contender taking turns with
the rows (a sum over a 1 GiB float32 tensor, far larger than any cache, with the same threads as the rest;
the median of its runs, as the rows' figures are medians), so that it is the machine's at the same minutes:
measured before the rows, it would put a quieter or busier minute under the fraction.

Rows (batch 1, a 1-token prompt, `--tokens` new tokens sampled at temperature 1, KV cache, median of
`--repeats` runs after a warm-up, the rows of a shape and the memory read taking turns run by run):
- ours float32, PyTorch's product: the model as it trains (`F.linear`, MKL's kernel on a CPU);
- ours float32 / bfloat16, streaming kernel: `src/engine/matvec.py`, one compiled loop that reads each
  weight once and converts it in registers (`stream_weights(model, dtype)`);
- ours bfloat16, PyTorch: `model.to(torch.bfloat16)`;
- ours int8 (`engine/quantize.py`, one scale per row), our kernel: `engine/int8_matvec.py`, a C loop that
  reads each int8 weight once (`sample.py --int8`); PyTorch's kernel: `_weight_int8pack_mm`, what
  `--int8` falls back to without a C compiler;
- step compiled: `engine/decode.py`'s `CompiledDecoding`, the whole one-token step compiled with fixed
  shapes, around the layers of the row before;
- whole step in C: `engine/decode_step.py`'s `CDecoding`, the one-token step as one C call over the
  model's float32, bfloat16 or int8 weights (`sample.py --fast`, `sample.py --int8 --fast`; bfloat16 weights
  have no flag in sample.py);
- HF float32: `GPT2LMHeadModel.generate` on the same weights (saved by us, loaded by `transformers`).
Greedy check: 50 greedy tokens of every float32 row of ours against HF's, token for token.

The weights are the same random ones in every row: GPT-2's init redrawn with std 0.1 so that greedy
decoding does not hinge on logits equal to 1e-6 (see `spread_weights`). Only ratios within one run mean
anything: other work on the machine moves every row.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from src.engine.checkpoint import save_checkpoint  # noqa: E402
from src.engine.decode import CompiledDecoding  # noqa: E402
from src.engine.decode_step import CDecoding  # noqa: E402
from src.engine.errors import ArgumentParser, positive_int  # noqa: E402
from src.engine.int8_matvec import int8_matvec  # noqa: E402
from src.engine.matvec import stream_weights  # noqa: E402
from src.engine.perf import cpu_description  # noqa: E402
from src.engine.quantize import quantize_int8  # noqa: E402
from src.model import GPT, GPTConfig  # noqa: E402
from src.tokenizer import CharTokenizer  # noqa: E402

SHAPES = {
    "124M": ("GPT-2 124M", GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, d_model=768)),
    "char": ("char 6L/384/ctx256", GPTConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, d_model=384)),
}
GREEDY_TOKENS = 50
MEMORY_READ = "memory read (sum over 1 GiB of float32)"  # the contender that measures the bandwidth


def memory_read(gib: float = 1.0) -> tuple:
    """(a run that reads `gib` GiB of float32 once, the bytes it reads): a sum over a tensor far larger than any
    cache, timed in turn with the rows it is the bandwidth of. Its pages are touched here, before any timing."""
    big = torch.ones(int(gib * 2**30 / 4))
    big.sum()
    return big.sum, big.numel() * big.element_size()


def weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads: every matrix (with its scales), bias and LayerNorm; the
    embedding tables only through the rows a token looks up (negligible), except a tied lm_head, which
    reads all of wte (counted once, as lm_head). The KV cache is left out (at 100 tokens, ~1% of 124M's)."""
    total, seen = 0, set()
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def spread_weights(model: GPT) -> GPT:
    """Re-draw every matrix from N(0, 0.1). At GPT-2's init (std 0.02) all logits are nearly equal, so
    greedy decoding hinges on differences of 1e-6 and any two correct implementations can pick
    different argmaxes. Larger weights give clearly separated logits and a varied greedy text."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    return model


def interleaved_seconds(runs: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of each of `repeats` runs of every contender (name: a function), the contenders taking turns.

    Round r times each of them once, in an order that rotates every round. On a shared machine whose speed
    drifts over minutes, that puts the drift on every row alike, so the ratios between rows hold even when
    the absolute figures move."""
    times = {name: [] for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    return times


def measure(shape: str, n: int, repeats: int, only: list[str]) -> list[dict]:
    from transformers import GPT2LMHeadModel

    name, config = SHAPES[shape]
    torch.manual_seed(0)
    base = spread_weights(GPT(config)).eval()
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(folder, base, CharTokenizer([chr(i) for i in range(config.vocab_size)]))
        hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    prompt, mask = torch.tensor([[0]]), torch.ones(1, 1, dtype=torch.long)  # (1, 1); HF: an explicit mask
    hf_greedy = hf.generate(prompt, attention_mask=mask, max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS,
                            do_sample=False, pad_token_id=0)

    variants = {
        "ours float32, PyTorch product": lambda: base,
        "ours float32, streaming kernel": lambda: stream_weights(copy.deepcopy(base), "float32"),
        "ours float32, PyTorch product, step compiled": lambda: CompiledDecoding(copy.deepcopy(base)),
        "ours float32, streaming kernel, step compiled":
            lambda: CompiledDecoding(stream_weights(copy.deepcopy(base), "float32")),
        "ours float32, whole step in C (--fast)": lambda: CDecoding(copy.deepcopy(base)),
        "ours bfloat16, PyTorch product": lambda: copy.deepcopy(base).to(torch.bfloat16),
        "ours bfloat16, streaming kernel": lambda: stream_weights(copy.deepcopy(base), "bfloat16"),
        "ours bfloat16, streaming kernel, step compiled":
            lambda: CompiledDecoding(stream_weights(copy.deepcopy(base), "bfloat16")),
        "ours bfloat16, whole step in C": lambda: CDecoding(stream_weights(copy.deepcopy(base), "bfloat16")),
        "ours int8, PyTorch's kernel": lambda: quantize_int8(copy.deepcopy(base), own_kernel=False),
        "ours int8, PyTorch's kernel, step compiled":
            lambda: CompiledDecoding(quantize_int8(copy.deepcopy(base), own_kernel=False)),
        "ours int8, our kernel (--int8)": lambda: quantize_int8(copy.deepcopy(base)),
        "ours int8, our kernel, step compiled": lambda: CompiledDecoding(quantize_int8(copy.deepcopy(base))),
        "ours int8, whole step in C (--int8 --fast)": lambda: CDecoding(quantize_int8(copy.deepcopy(base))),
    }
    variants = {v: build for v, build in variants.items() if not only or any(word in v for word in only)}
    hf_variant = "HF float32 (transformers)"
    rows = {hf_variant: {"shape": name, "variant": hf_variant, "bytes": weight_bytes(hf), "greedy": "-"}}
    runs = {hf_variant: lambda: hf.generate(prompt, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                            do_sample=True, top_k=0, pad_token_id=0)}
    for variant, build in variants.items():
        model = build()
        rows[variant] = {"shape": name, "variant": variant, "bytes": weight_bytes(model)}
        runs[variant] = lambda m=model: m.generate(prompt, n, seed=1)
        runs[variant]()  # warm-up, and compiling where there is something to compile
        if "float32" in variant:
            same = torch.equal(model.generate(prompt, GREEDY_TOKENS, temperature=0), hf_greedy)
            rows[variant]["greedy"] = "yes" if same else "NO"
        else:
            rows[variant]["greedy"] = "-"  # rounded weights: another text is expected (see bench/int8_quality.py)
        print(f"  {name}, {variant}: ready", file=sys.stderr, flush=True)
    runs[hf_variant]()
    runs[MEMORY_READ], read_bytes = memory_read()
    seconds = interleaved_seconds(runs, repeats)
    bandwidth = read_bytes / statistics.median(seconds.pop(MEMORY_READ))
    speeds = {variant: n / statistics.median(times) for variant, times in seconds.items()}
    for variant, row in rows.items():
        row["tokens/s"] = speeds[variant]
        row["vs HF"] = speeds[variant] / speeds[hf_variant]
        row["bandwidth"] = bandwidth
    return [row for variant, row in rows.items() if variant != hf_variant] + [rows[hf_variant]]  # HF last


def int8_words_dot(words: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
    """A lever tried for int8 (`--levers`): W @ x for int8 W (out, in), read as 32-bit words.

    Compiled, the one-line kernel on int8 weights loads every 8 of them through a scratch buffer (PyTorch's
    vector loads of integers take that path, its float32 loads do not). So W's bytes come in as float32
    words (out, in/4), are reinterpreted as int32 inside the compiled code, and each word's four weights are
    taken apart by shifting byte j to the top and back down (the sign comes along):
        w_j = (word << (24 - 8j)) >> 24,   x4[j, i] = x[4i + j]   (little-endian: weight 4i + j is byte j)
    Faster than the one line, but the reinterpretation is still done value by value: in the model it did
    not beat PyTorch's int8 kernel, so it stays here as a measured lever."""
    word = words.view(torch.int32)  # (out, in/4)
    y = 0
    for j in range(4):
        y = y + ((word << (24 - 8 * j)) >> 24).to(torch.float32) * x4[j]  # byte j of every word times its x
    return y.sum(dim=-1)  # (out,)


GPT2_MATRICES = [(2304, 768), (768, 768), (3072, 768), (768, 3072)] * 12 + [(50257, 768)]  # (out, in)


def matrix_levers(repeats: int = 5, shapes: list[tuple[int, int]] = GPT2_MATRICES) -> None:
    """`--levers`: the matrix-vector products alone, over GPT-2 124M's matrices (12 blocks' four, and lm_head),
    one vector each, in every way tried for decoding: GB/s of weights streamed and the share of the bandwidth.
    What the model rows add on top is everything around the products. Each is checked (and warmed up, and
    compiled) first; then all of them and the memory read take turns, `repeats` rounds, the best of each
    counting (the bandwidth too: the best of its runs among theirs). `shapes`: (out, in) of every matrix, the
    last one lm_head; smaller ones make a test."""
    from src.engine import matvec
    from src.engine.quantize import quantize_rows

    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=gen) * 0.1 for shape in shapes]
    x = {n: torch.randn(n, generator=gen) for n in sorted({n for _, n in shapes})}  # GPT-2's: 768 and 3072
    kernel, int8_kernel = matvec.kernel(), torch.compile(int8_words_dot, dynamic=True, fullgraph=True)
    x4 = {n: v.view(-1, 4).t().contiguous() for n, v in x.items()}  # (4, n/4): x4[j, i] = x[4i + j]
    transposed = [w.t().contiguous() for w in weights]  # (in, out): GPT-2's Conv1D layout, HF's too
    bf16 = [w.bfloat16() for w in weights]
    int8 = [quantize_rows(w) for w in weights]
    int8_bf16 = [(q, scale.bfloat16()) for q, scale in int8]
    fbgemm = []
    for w in weights:  # fbgemm's dynamically quantized layer: int8 weights per row, activations rounded too
        linear = nn.Linear(w.shape[1], w.shape[0], bias=False)
        linear.weight.data = w
        linear.qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        fbgemm.append(torch.ao.nn.quantized.dynamic.Linear.from_float(linear))
    levers = {  # name: (one pass over every matrix, bytes of weights it reads), each pass returns W @ x for every W
        "float32, PyTorch's product (MKL, (out, in))": (
            lambda: [F.linear(x[w.shape[1]], w) for w in weights], 4),
        "float32, MKL on prepacked (in, out)": (lambda: [x[w.shape[0]] @ w for w in transposed], 4),
        "float32, streaming kernel": (lambda: [kernel(w, x[w.shape[1]]) for w in weights], 4),
        "bfloat16, PyTorch's product": (
            lambda: [F.linear(x[w.shape[1]].bfloat16(), w) for w in bf16], 2),
        "bfloat16, streaming kernel": (lambda: [kernel(w, x[w.shape[1]]) for w in bf16], 2),
        "int8, PyTorch's kernel (_weight_int8pack_mm)": (
            lambda: [torch.ops.aten._weight_int8pack_mm(x[q.shape[1]].bfloat16()[None], q, scale)[0]
                     for q, scale in int8_bf16], 1),
        "int8, the float kernel's one line (compiled)": (
            lambda: [kernel(q, x[q.shape[1]]) * scale for q, scale in int8], 1),
        "int8, as 32-bit words taken apart by shifts (compiled)": (
            lambda: [int8_kernel(q.view(torch.float32), x4[q.shape[1]]) * scale for q, scale in int8], 1),
        "int8, our C kernel (engine/int8_matvec.py)": (
            lambda: [int8_matvec(x[q.shape[1]][None], q, scale)[0] for q, scale in int8], 1),
        "int8 weights and activations, fbgemm (dynamic quantization)": (
            lambda: [layer(x[layer.in_features][None])[0] for layer in fbgemm], 1),
    }
    exact = [w.double() @ x[w.shape[1]].double() for w in (weights[0], weights[-1])]  # the first and lm_head
    for name, (run, bytes_per_weight) in levers.items():
        out = run()  # warm-up (and compiling), and the check that it computes the product
        for y, ref in zip((out[0], out[-1]), exact, strict=True):
            error = float(torch.linalg.norm(y.double() - ref) / torch.linalg.norm(ref))
            limit = 1e-5 if bytes_per_weight == 4 else 0.03  # float32: rounding only; bf16 and int8 round W
            assert error < limit, f"{name}: relative error {error:.2g}, not the product"
        print(f"  {name}: ready", file=sys.stderr, flush=True)
    runs = {name: run for name, (run, _) in levers.items()}
    runs[MEMORY_READ], read_bytes = memory_read()
    best = {name: min(times) for name, times in interleaved_seconds(runs, repeats).items()}
    bandwidth = read_bytes / best.pop(MEMORY_READ)
    n_weights = sum(w.numel() for w in weights)
    print(f"\nthe matrices of GPT-2 124M alone, one vector each, best of {repeats} rounds in turn; bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s (the best of a sum over 1 GiB, in turn with them); CPU: {cpu_description()}")
    print("| weights, multiplied by | GB/s streamed | of bandwidth |")
    print("|---|---|---|")
    for name, (_, bytes_per_weight) in levers.items():
        streamed = n_weights * bytes_per_weight / best[name]
        print(f"| {name} | {streamed / 1e9:.1f} | {streamed / bandwidth:.0%} |")


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=positive_int, default=100, help="new tokens per run")
    parser.add_argument("--repeats", type=positive_int, default=5,
                        help="timed runs per row, rows in turn (median; --levers: best)")
    parser.add_argument("--threads", type=positive_int, default=torch.get_num_threads())
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--only", nargs="*", default=[], metavar="WORD",
                        help="only the rows of ours whose name contains one of these words (HF's always)")
    parser.add_argument("--levers", action="store_true",
                        help="time the matrix-vector products alone, in every way tried, instead of whole models")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # Every compiled-step row is its own program for torch.compile (other layer types), three per row at most:
    # more than its default limit of 8 per function in one process, which sample.py never comes near.
    torch._dynamo.config.recompile_limit = 64
    if args.levers:
        matrix_levers(args.repeats)
        return
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    rows = [row for shape in args.shapes for row in measure(shape, args.tokens, args.repeats, args.only)]

    bandwidths = {r["shape"]: r["bandwidth"] for r in rows}
    print(f"\nbatch 1, a 1-token prompt, {args.tokens} new tokens, sampling, KV cache, median of {args.repeats}, "
          f"rows in turn; {args.threads} threads; memory read bandwidth (the median of a sum over 1 GiB, in turn "
          f"with the shape's rows): {', '.join(f'{s} {b / 1e9:.1f} GB/s' for s, b in bandwidths.items())}; "
          f"CPU: {cpu_description()}; torch {torch.__version__}, transformers {transformers.__version__}; load average "
          f"{os.getloadavg()[0]:.1f}")
    print("| shape | weights, multiplied by | tokens/s | MB read per token | GB/s streamed | of bandwidth | vs HF fp32 "
          f"| {GREEDY_TOKENS} greedy tokens = HF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        streamed = r["bytes"] * r["tokens/s"]
        print(f"| {r['shape']} | {r['variant']} | {r['tokens/s']:.1f} | {r['bytes'] / 1e6:.0f} | {streamed / 1e9:.1f} "
              f"| {streamed / r['bandwidth']:.0%} | {r['vs HF']:.2f}x | {r['greedy']} |")


if __name__ == "__main__":
    main()
