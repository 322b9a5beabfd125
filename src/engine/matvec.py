"""Decoding at the speed of memory: a matrix-vector product that reads each weight once, in any precision.

Generating one token multiplies one vector by every weight matrix of the model, and uses each weight for
a single multiply-add. A CPU does billions of those a second, so the time goes into reading the weights
from memory: GPT-2 124M streams ~500 MB of float32 per token, and the best a machine can do is its memory
bandwidth (`bench/generate.py` measures both). PyTorch's float32 product (MKL's) reaches well under that
on the machines measured here, and its bf16 and int8 kernels convert as they go.

`rowwise_dot` is the whole kernel, one line of PyTorch:

    y[j] = sum_i float32(W[j, i]) * x[i]        for every output row j of W (out, in)

Run eagerly it would first build the (out, in) product and then sum it: three times the memory traffic.
`torch.compile` turns it into one loop per row that loads a vector of weights, converts them to float32 in
registers, multiplies and adds: W is read once, in the format it is stored in (float32 or bfloat16), and
nothing the size of W is written. It is compiled once per weight format for every matrix shape
(`dynamic=True`), so a model's handful of shapes, and a second model, cost no new compilations.

`stream_weights(model, dtype)` swaps every `nn.Linear` of a model for a `StreamingLinear` that keeps its
weight in `dtype` and uses the kernel for one row at a time (decoding); several rows (a prompt) take the
usual matrix product. In float32 it changes nothing but the order of additions (tests compare it with a
float64 reference, and `bench/generate.py` shows greedy text equal to Hugging Face's); bfloat16 rounds the
weights, so it is opt-in. Without a working compiler (the first call compiles, which needs a C++ compiler
on a CPU) the layers fall back to the usual product, with one warning; any other error is a bug and
surfaces as it is.

int8 weights do not use this kernel: compiled on int8 weights, the one line here loads every 8 of them
through a scratch buffer (PyTorch's vector loads of integers take that path, its float32 loads do not) and
is several times slower (`bench/generate.py --levers` times it, and a way around it that was tried). They
have a kernel of their own, in C: engine/int8_matvec.py.

Who uses it: `bench/generate.py` (through engine/decode.py too, which compiles the whole decoding step
around it), where it is one of the levers measured; `sample.py --fast` now runs the step in C instead
(engine/decode_step.py), which was faster still.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

WEIGHT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def rowwise_dot(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """weight (out, in) float32 or bfloat16, x (in,) float32 -> weight @ x (out,) in float32."""
    return (weight.to(torch.float32) * x).sum(dim=-1)


_compiled = []  # the compiled kernel, made on first use
_broken = []  # the error, once compiling has failed: from then on every layer takes the usual product


def compile_failures() -> tuple[type[Exception], ...]:
    """What compiling can fail with where the maths is fine: the compiler itself (no C++ compiler, an
    unsupported platform), or more programs for one function than torch.compile allows in one process. A
    mistake in the maths is none of these and surfaces as it is.

    Imported here, not at the top: loading torch's compiler takes ~2 s, which every `sample.py` run would pay
    for a flag it may not use; `torch.compile` loads it anyway. Used by engine/decode.py too.
    """
    from torch._dynamo.exc import BackendCompilerFailed, FailOnRecompileLimitHit

    return BackendCompilerFailed, FailOnRecompileLimitHit


def kernel():
    """`rowwise_dot`, compiled; None where compiling does not work."""
    if _broken:
        return None
    if not _compiled:
        _compiled.append(torch.compile(rowwise_dot, dynamic=True, fullgraph=True))
    return _compiled[0]


class StreamingLinear(nn.Module):
    """`nn.Linear` for inference, its weight kept as float32 or bfloat16, one-row products done by the
    streaming kernel."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(dtype))  # (out, in); float32: the same tensor
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias)  # (out,) or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()  # (N, in)
        y = None
        if rows.shape[0] == 1 and not rows.is_cuda:
            y = self._streamed(rows[0])  # (out,) or None if the kernel cannot run here
        if y is None:  # a prompt, a batch, a GPU: the usual matrix product
            y = rows @ self.weight.float().t()  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype).view(*x.shape[:-1], self.out_features)  # (..., out)

    def _streamed(self, x: torch.Tensor) -> torch.Tensor | None:
        if torch.compiler.is_compiling():  # inside a compiled caller (engine/decode.py): it compiles the maths
            return rowwise_dot(self.weight, x)  # with its own, fused with what comes before and after
        fn = kernel()
        if fn is None:
            return None
        try:
            return fn(self.weight, x)  # (out,)
        except compile_failures() as err:  # no C++ compiler, an unsupported platform: say so once, go on without
            _broken.append(err)
            warnings.warn(f"the streaming matrix-vector kernel could not be compiled ({str(err)[:200]}); "
                          "using PyTorch's product instead", stacklevel=2)
            return None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weights {self.weight.dtype}"


def stream_weights(model: nn.Module, dtype: str = "float32") -> nn.Module:
    """Replace every `nn.Linear` of `model` by a `StreamingLinear` with weights in `dtype` ("float32" or
    "bfloat16"), in place, and return the model (for generation only; it cannot be trained).

    The float32 layers share their weight with the model (no copy): lm_head stays tied to wte there.
    """
    model.eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, StreamingLinear(child, WEIGHT_DTYPES[dtype]))
    return model
