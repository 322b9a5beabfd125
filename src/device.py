"""Which device to train on, and in which precision, with the reason for each choice.

Precision matters most on a CPU: a CPU with native bfloat16 instructions (AVX-512 BF16 or AMX) multiplies
bf16 matrices several times faster than float32. Under `torch.autocast` the matrix multiplications run
in bf16 while the weights, the optimizer and the loss stay in float32 ("mixed precision"), so training
is as stable as in float32. float16 has too few exponent bits to train without loss scaling, so it is only
used on CUDA GPUs that lack bf16, together with a gradient scaler.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from src.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(requested: str = "auto") -> torch.device:
    """'auto' -> cuda if present, else mps (Apple), else cpu. A named device must exist."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU (try --device auto)")
    if requested == "mps" and not torch.backends.mps.is_available():
        raise UserError("--device mps was asked for, but this machine has no Apple GPU (try --device auto)")
    return torch.device(requested)


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bfloat16 matrix instructions (x86 AVX-512 BF16 or AMX; Linux /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() == "Linux" and cpuinfo.exists():
        flags = cpuinfo.read_text(errors="replace")
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def resolve_dtype(requested: str, device: torch.device) -> tuple[torch.dtype, str]:
    """Choose the autocast dtype. Returns (dtype, a sentence saying why)."""
    if requested != "auto":
        dtype = DTYPES[requested]
        if dtype == torch.float16 and device.type != "cuda":
            raise UserError("--dtype float16 needs a CUDA GPU (use bfloat16 or float32 on this device)")
        return dtype, f"{requested}, as asked"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bfloat16 autocast: this GPU supports it"
        return torch.float16, "float16 autocast with loss scaling: this GPU has no bfloat16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16, "bfloat16 autocast: this CPU has native bf16 instructions (several times faster)"
    return torch.float32, f"float32: no fast lower precision found for {device.type}"


def autocast(device: torch.device, dtype: torch.dtype):
    """The autocast context for the forward pass (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
