"""Which device to train on, and in which precision, with the reason for each choice.

`Precision` bundles what follows from that choice behind one small object, so the training loop reads the
same in every precision: `precision.autocast_ctx` around the forward pass, `precision.backward(loss)`, and
`precision.clip_and_step(optimizer, grad_clip)`, which also hides float16's gradient scaler.

Who uses it: `train.py` (`Precision.choose`), `sample.py` (`resolve_device`), the training benchmark.

Precision matters most on a CPU: a CPU with native bfloat16 instructions (AVX-512 BF16 or AMX) multiplies
bf16 matrices several times faster than float32. Under `torch.autocast` the matrix multiplications run
in bf16 while the weights, the optimizer and the loss stay in float32 ("mixed precision"), so training
is as stable as in float32. float16 has too few exponent bits to train without loss scaling, so it is only
used on CUDA GPUs that lack bf16, together with a gradient scaler.
"""

from __future__ import annotations

import contextlib
import math
import platform
from pathlib import Path

import torch

from src.engine.errors import UserError

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


# The narrowest model for which a CPU's bfloat16 pays. Each bf16 product first converts its inputs, and for
# narrow matrices those conversions cost more than the faster products save: on the Intel Xeon with AMX the
# 128-wide models ran slower in bf16 than in float32, the 256-wide default of the time about twice as fast,
# and the user's 384-wide shape at 2.8x nanoGPT's float32 step (`bench/README.md`, "Training").
CPU_BF16_MIN_D_MODEL = 256


def resolve_dtype(requested: str, device: torch.device, d_model: int | None = None) -> tuple[torch.dtype, str]:
    """Choose the autocast dtype for a model `d_model` wide (None: wide enough). Returns (dtype, why)."""
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
        if d_model is not None and d_model < CPU_BF16_MIN_D_MODEL:
            return torch.float32, (f"float32: this CPU has bf16 instructions, but at d_model {d_model} their "
                                   f"conversions cost more than they save (bf16 from {CPU_BF16_MIN_D_MODEL}; "
                                   "--dtype bfloat16 to try)")
        return torch.bfloat16, "bfloat16 autocast: this CPU has native bf16 instructions (several times faster)"
    return torch.float32, f"float32: no fast lower precision found for {device.type}"


def autocast(device: torch.device, dtype: torch.dtype):
    """The autocast context for the forward pass (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Precision:
    """Device, autocast dtype and (for float16) the gradient scaler, for one training run.

    float16 has so few exponent bits that small gradients round to zero, so its loss is multiplied by a
    large scale before backward and the gradients divided by it before the update (`GradScaler`); when the
    scaled gradients overflow, the scaler skips that update and lowers its scale. bfloat16 and float32
    need none of this: for them the scaler is disabled and every call passes straight through.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, reason: str = ""):
        self.device, self.dtype, self.reason = device, dtype, reason or str(dtype)
        self.autocast_ctx = autocast(device, dtype)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    @classmethod
    def choose(cls, device: str, dtype: str, local_rank: int = 0, d_model: int | None = None) -> Precision:
        """From the --device and --dtype flags and the model's width; on CUDA, process `local_rank`'s GPU with
        TF32 matmuls."""
        chosen = resolve_device(device)
        if chosen.type == "cuda":
            chosen = torch.device("cuda", local_rank)
            torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls: ~8x float32 speed, ample precision
            torch.backends.cudnn.allow_tf32 = True
        return cls(chosen, *resolve_dtype(dtype, chosen, d_model))

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()  # float16: scaled up, so small gradients survive

    def clip_and_step(self, optimizer: torch.optim.Optimizer, grad_clip: float) -> tuple[torch.Tensor, bool]:
        """Clip the gradient to norm `grad_clip` (0 = no clipping) and update; return (norm, whether it stepped).

        A non-finite gradient never reaches the weights: the update is skipped instead.
        """
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self.scaler.unscale_(optimizer)  # clip the true gradient, not the loss-scaled one (float16)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
        if not self.scaler.is_enabled():
            stepped = bool(torch.isfinite(grad_norm))
            if stepped:
                optimizer.step()
            return grad_norm, stepped
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)  # the scaler itself skips the update on inf/NaN gradients ...
        self.scaler.update()  # ... and lowers its scale exactly when it did
        return grad_norm, self.scaler.get_scale() >= scale

    def healthy(self, stepped: bool, loss: torch.Tensor) -> bool:
        """Was this step all right? A skipped update is normal for float16 when only the scaled gradient
        overflowed (the loss itself is finite); any other skipped step had a NaN/inf loss or gradient."""
        return stepped or (self.scaler.is_enabled() and bool(torch.isfinite(loss)))
