"""Our small C kernels: compiled from their source on first use, for this very machine, and loaded.

Four things are written in C here because PyTorch's own are slow on a CPU at the sizes this project
trains and decodes at: int8 weights times a vector (int8_matvec.c), GPT-2's GELU (gelu.c), causal
attention for training (attention.c) and a whole one-token decoding step (decode_step.c). Each is one
commented C file next to the Python module that wraps it (the first three as PyTorch ops); they share small
headers: exp_float.h (e^x from multiply-adds), gelu_float.h (GELU of one float) and dot.h (a weight row
times a vector, float32, bfloat16 or int8). This file only builds them: the system's C compiler (`$CC`,
else `cc`; `torch.compile` needs one for C++ anyway) with -O3 for this machine's instructions
(`-march=native`) and OpenMP, into a temporary folder, then `ctypes` loads the library (under a second, once
per process). Where that fails, `Kernel.available()` is False, a warning says so once, and the caller uses
PyTorch's operation (or, for the decoding step, the model's own steps) instead.

Who uses it: engine/int8_matvec.py, engine/fused_gelu.py, engine/fused_attention.py, engine/decode_step.py.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import subprocess
import tempfile
import warnings
from pathlib import Path

FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")


def compile_library(source: Path, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile `source` into a shared library (with `extra_flags` after the usual ones) and load it; raises
    OSError or CalledProcessError where that cannot be done."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, source.stem + ".so")
        compiler = shlex.split(os.environ.get("CC", "cc"))  # "ccache gcc" is two words
        subprocess.run([*compiler, *FLAGS, *extra_flags, str(source), "-o", path],
                       check=True, capture_output=True, text=True)
        return ctypes.CDLL(path)  # loaded: the file itself can go


class Kernel:
    """One C file, compiled once per set of extra flags; `declare(library)` sets its functions' C types."""

    def __init__(self, source: Path, declare, fallback: str, flags: tuple[str, ...] = ()):
        self.source, self.declare, self.fallback, self.flags = source, declare, fallback, flags
        self.loaded: dict[tuple[str, ...], ctypes.CDLL] = {}  # the compiled library by extra flags
        self.failed: list[str] = []  # why compiling failed, once it has: from then on available() is False

    def library(self, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
        if extra_flags not in self.loaded:
            library = compile_library(self.source, self.flags + extra_flags)
            self.declare(library)
            self.loaded[extra_flags] = library
        return self.loaded[extra_flags]

    def available(self) -> bool:
        """Whether the kernel runs here; compiles it on the first call (warning once if it cannot be)."""
        if self.failed:
            return False
        try:
            self.library()
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", None) or str(err)
            self.failed.append(detail)
            warnings.warn(f"{self.source.name} could not be compiled ({detail.strip()[:200]}); "
                          f"using {self.fallback} instead", stacklevel=3)
            return False
        return True
