"""Back-of-the-envelope numbers about speed and size: parameters, memory, the hardware's peak FLOP/s, MFU, bits.

Knowing these before starting saves surprises: whether a model fits in memory, and how fast a step
*should* be. Model FLOPs per token come from the model itself (`GPT.flops_per_token`: 6 per weight of
every matrix multiplication, plus attention); divided by the hardware's peak they tell how well the
hardware is used:

    MFU = (model FLOPs per token x tokens per second) / peak FLOP/s

For a GPU the peak comes from the maker's data sheet (dense, no sparsity). For a CPU there is no reliable
table, so we *measure* it: time a large matrix multiplication in float32 and in bfloat16, once, and cache
the result. `--peak-flops` overrides both.

Parameters of a GPT-2 (C = d_model, L = n_layer, V = vocab, T = block_size), each block:
    attention: c_attn C*3C + 3C, c_proj C*C + C;  MLP: c_fc C*4C + 4C, c_proj 4C*C + C;  2 LayerNorms: 4C
    = 12C^2 + 13C.  Whole model: V*C (wte, shared with lm_head) + T*C (wpe) + L*(12C^2 + 13C) + 2C (ln_f).

Who uses it: `engine/metrics.py` (the run header, MFU), `engine/resume.py` (bits per byte in the loop state),
`sample.py` (the size of a large model before loading it), the benchmarks.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path

import torch

from src.engine.files import atomic_write_text


def param_count(vocab_size: int, block_size: int, n_layer: int, d_model: int) -> int:
    """Number of parameters of a GPT-2 of these sizes (the tied wte/lm_head counted once)."""
    C = d_model
    return vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def describe(num_params: int, train: bool = True) -> str:
    """'124,439,808 parameters: weights 0.50 GB, gradients 0.50 GB, optimizer 1.00 GB; ~1.99 GB in all'.

    float32 throughout: 4 bytes a weight, 4 a gradient, 8 for AdamW's two running averages (at most: Muon
    keeps one for the matrices it updates). Activations come on top and grow with batch size x context
    (lower --batch-size if memory runs out).
    """
    sizes = {"weights": 4 * num_params}
    if train:
        sizes.update(gradients=4 * num_params, optimizer=8 * num_params)
    parts = ", ".join(f"{name} {value / 1e9:.2f} GB" for name, value in sizes.items())
    total = f"; ~{sum(sizes.values()) / 1e9:.2f} GB in all" if train else ""
    return f"{num_params:,} parameters: {parts}{total}"


def bits(loss_nats: float, tokens_per_unit: float) -> float:
    """Convert a per-token loss in nats to bits per character (or byte): loss / ln 2 * tokens per unit.

    A char-level model has ~1 token per character; a BPE model has far fewer tokens per byte but a
    higher loss per token. Bits per byte puts both on the same axis.
    """
    return loss_nats / math.log(2) * tokens_per_unit


# Dense bf16/fp16 tensor-core peaks (FLOP/s) from the data sheets; fp32 peaks use TF32 where it exists.
# The first name found in the card's name wins: the PCIe and NVL variants come before their SXM siblings.
GPU_PEAKS = {
    "H200 NVL": {"bf16": 835e12, "fp32": 418e12},
    "H200": {"bf16": 989e12, "fp32": 495e12},
    "H100 PCIe": {"bf16": 756e12, "fp32": 378e12},
    "H100 NVL": {"bf16": 835e12, "fp32": 418e12},
    "H100": {"bf16": 989e12, "fp32": 495e12},  # SXM
    "A100": {"bf16": 312e12, "fp32": 156e12},
    "A10G": {"bf16": 70e12, "fp32": 35e12},
    "L40S": {"bf16": 362e12, "fp32": 183e12},
    "L4": {"bf16": 121e12, "fp32": 60e12},
    "RTX 4090": {"bf16": 165e12, "fp32": 83e12},
    "RTX 3090": {"bf16": 71e12, "fp32": 36e12},
    "V100": {"bf16": 125e12, "fp32": 16e12},  # no bf16: this is its fp16 peak
    "T4": {"bf16": 65e12, "fp32": 8e12},  # fp16
}

PEAK_FILE = "peak_flops.json"  # in the cache folder


def measure_matmul_flops(dtype: torch.dtype, max_n: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of an n x n matrix multiplication on the CPU (2 n^3 FLOPs each), best of a short run.

    n grows from 256 up to `max_n` while one product takes under 50 ms: large enough to reach the peak of a
    fast format, small enough that a format this CPU computes slowly (bf16 without native instructions,
    ~0.25 GFLOP/s on one machine seen here: 70 s for one 2048 x 2048 product) is measured in about a second.
    """
    n = 256
    generator = torch.Generator().manual_seed(0)  # its own: the training run's random numbers stay untouched
    while True:
        a, b = (torch.randn(n, n, generator=generator).to(dtype) for _ in range(2))
        a @ b  # warm-up
        start = time.perf_counter()
        a @ b
        if n >= max_n or time.perf_counter() - start >= 0.05:
            break
        n *= 2
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def cpu_peaks(cache_dir: str | Path, kinds: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, float]:
    """Measured matmul FLOP/s of this CPU at the current thread count, for each of `kinds` ("fp32", "bf16"),
    measured once and cached in `cache_dir`.

    Measure on an idle machine: a busy one gives too low a peak (and MFU above 100%). Delete
    data/.cache/peak_flops.json to measure again.
    """
    cache_file = Path(cache_dir) / PEAK_FILE
    key = f"{platform.processor() or platform.machine()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    peaks = cache.setdefault(key, {})
    missing = [kind for kind in kinds if kind not in peaks]
    for kind in missing:
        peaks[kind] = measure_matmul_flops(torch.float32 if kind == "fp32" else torch.bfloat16)
    if missing:
        atomic_write_text(cache_file, json.dumps(cache, indent=1))
    return peaks


def peak_flops(
    device: torch.device, dtype: torch.dtype, cache_dir: str | Path, override: float | None = None
) -> tuple[float | None, str]:
    """(peak FLOP/s for this device and precision, where the number comes from); None when unknown."""
    if override:
        return override, "--peak-flops"
    kind = "fp32" if dtype == torch.float32 else "bf16"
    if device.type == "cpu":
        return cpu_peaks(cache_dir, (kind,))[kind], f"measured {kind} matmul on this CPU"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for gpu, peaks in GPU_PEAKS.items():
            if gpu in name:
                return peaks[kind], f"{gpu} data sheet ({kind})"
    return None, "unknown hardware (pass --peak-flops)"


def cpu_description() -> str:
    """'AMD EPYC (avx2, no avx512_bf16, no amx_bf16)': the processor, and whether it has bf16 instructions,
    which decide whether bf16 autocast is several times faster than float32 or many times slower."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text(errors="replace").splitlines() if cpuinfo.exists() else []
    field = lambda key: next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith(key)), "")
    name = field("model name") or platform.processor() or platform.machine()
    flags = set(field("flags").split())
    if not flags:
        return name
    vector = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "no avx2"
    return f"{name} ({', '.join([vector, *(f if f in flags else 'no ' + f for f in ('avx512_bf16', 'amx_bf16'))])})"
