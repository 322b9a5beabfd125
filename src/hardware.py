"""How fast could this hardware go? The peak FLOP/s that model-FLOP utilisation (MFU) is measured against.

MFU = (model FLOPs per token x tokens per second) / peak FLOP/s: the share of the hardware's arithmetic
that does useful training work. For a GPU the peak comes from the maker's data sheet (dense, no
sparsity). For a CPU there is no reliable table, so we *measure* it: time a large matrix multiplication
in float32 and in bfloat16, once, and cache the result. `--peak-flops` overrides both.
"""

from __future__ import annotations

import json
import platform
import time

import torch

from src.corpus import CACHE_DIR, atomic_write_text

# Dense bf16/fp16 tensor-core peaks (FLOP/s) from the data sheets; fp32 peaks use TF32 where it exists.
GPU_PEAKS = {
    "H200": {"bf16": 989e12, "fp32": 495e12},
    "H100": {"bf16": 989e12, "fp32": 495e12},  # SXM; the PCIe card is ~25% lower
    "A100": {"bf16": 312e12, "fp32": 156e12},
    "A10G": {"bf16": 70e12, "fp32": 35e12},
    "L40S": {"bf16": 362e12, "fp32": 183e12},
    "L4": {"bf16": 121e12, "fp32": 60e12},
    "RTX 4090": {"bf16": 165e12, "fp32": 83e12},
    "RTX 3090": {"bf16": 71e12, "fp32": 36e12},
    "V100": {"bf16": 125e12, "fp32": 16e12},  # no bf16: this is its fp16 peak
    "T4": {"bf16": 65e12, "fp32": 8e12},  # fp16
}

PEAK_CACHE = CACHE_DIR / "peak_flops.json"


def measure_matmul_flops(dtype: torch.dtype, n: int = 2048, seconds: float = 1.0) -> float:
    """FLOP/s of an n x n matrix multiplication on the CPU (2 n^3 FLOPs each), best of a short run."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def cpu_peaks() -> dict[str, float]:
    """Measured fp32 and bf16 matmul FLOP/s of this CPU at the current thread count (cached on disk).

    Measure on an idle machine: a busy one gives too low a peak (and MFU above 100%). Delete
    data/.cache/peak_flops.json to measure again.
    """
    key = f"{platform.processor() or platform.machine()}|threads={torch.get_num_threads()}|torch={torch.__version__}"
    cache = json.loads(PEAK_CACHE.read_text()) if PEAK_CACHE.exists() else {}
    if key not in cache:
        cache[key] = {"fp32": measure_matmul_flops(torch.float32), "bf16": measure_matmul_flops(torch.bfloat16)}
        atomic_write_text(PEAK_CACHE, json.dumps(cache, indent=1))
    return cache[key]


def peak_flops(device: torch.device, dtype: torch.dtype, override: float | None = None) -> tuple[float | None, str]:
    """(peak FLOP/s for this device and precision, where the number comes from); None when unknown."""
    if override:
        return override, "--peak-flops"
    kind = "fp32" if dtype == torch.float32 else "bf16"
    if device.type == "cpu":
        return cpu_peaks()[kind], f"measured {kind} matmul on this CPU"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for gpu, peaks in GPU_PEAKS.items():
            if gpu in name:
                return peaks[kind], f"{gpu} data sheet ({kind})"
    return None, "unknown hardware (pass --peak-flops)"
