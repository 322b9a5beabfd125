"""The optimizer (AdamW with weight decay on matrices only) and the learning-rate schedule.

Weight decay pulls weights towards zero, which regularises the large matrices (Linear weights,
embeddings). Biases and LayerNorm gains are 1-D: decaying them only hurts, so they get none.

The learning rate warms up linearly (large steps on a random network can blow it up), then follows a
cosine from `lr` down to `min_lr` and stays there.
"""

from __future__ import annotations

import inspect
import math

import torch


def configure_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, device: torch.device, beta2: float = 0.95
) -> torch.optim.AdamW:
    """AdamW with two parameter groups: >=2-D tensors decay, 1-D tensors (biases, LayerNorm) do not."""
    params = [p for p in model.parameters() if p.requires_grad]  # a tied tensor appears once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # The fused kernel does the whole update in one pass on CUDA; on CPU the default is fine.
    fused = device.type == "cuda" and "fused" in inspect.signature(torch.optim.AdamW).parameters
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, beta2), **({"fused": True} if fused else {}))


def lr_at(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Learning rate at `step` (0-based): linear warmup, cosine decay to min_lr, then min_lr.

    Step 0 already gets a positive rate (lr / warmup_iters), the peak is reached at the end of warmup,
    and a decay as long as the warmup (nothing to decay) does not divide by zero.
    """
    if step < warmup_iters:
        return lr * (step + 1) / warmup_iters
    if step >= decay_iters or decay_iters <= warmup_iters:
        return min_lr
    progress = (step - warmup_iters) / (decay_iters - warmup_iters)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
