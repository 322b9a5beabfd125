"""Muon: momentum, orthogonalised, for the hidden weight matrices; AdamW for everything else.

`train.py --optimizer muon`. Adam scales every weight's step by that weight's own gradient history. Muon
treats a weight matrix as a matrix: it takes the momentum M (a running mean of the gradient, as SGD with
momentum keeps) and replaces it by the nearest orthogonal matrix, U V^T where M = U S V^T. Every direction
the gradient points in then moves by the same amount, instead of the few largest ones dominating, which
lets rarer directions learn too. On small GPTs it reaches a given loss in noticeably fewer steps than AdamW
(Keller Jordan's modded-nanogpt speedruns; `bench/train_speed.py --quality` measures it here).

Computing U V^T by an SVD is slow; Muon runs five steps of a Newton-Schulz iteration instead,

    X <- a X + b (X X^T) X + c (X X^T)^2 X,      (a, b, c) = (3.4445, -4.7750, 2.0315),

which acts on each singular value s of X alone, as the polynomial a s + b s^3 + c s^5. Started from
M / ||M|| (every s in (0, 1]), five steps push every s into roughly [0.7, 1.2]: not exactly 1, and that is
enough (the coefficients trade exactness for speed). Five steps cost ~15 matrix products of the weight's
size: 6% of a training step of the small `quality-300s` model on a 2-core CPU, with the matrices of one shape
done as one stack (`bench/train_speed.py --levers`).

Which tensors: the 2-D matrices inside the transformer blocks (attention and MLP weights). The embeddings
(whose rows are looked up one token at a time, not multiplied as a matrix), and the 1-D biases and
LayerNorm gains, get AdamW, written out below so that both live in one optimizer with one state dict
(which `--resume` saves). A tied `lm_head` is the embedding, so it gets AdamW too.

Each param group carries `use_muon` and `lr_scale`: train.py sets every group's `lr` to the schedule's
value times its `lr_scale`, so both optimizers follow the same warmup and decay at their own peaks.

Who uses it: `train.py` (`configure_optimizer` with `--optimizer muon`); `metrics.py` prints MOMENTUM.
"""

from __future__ import annotations

import math

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
MOMENTUM = 0.95  # the matrices' momentum (Nesterov), as in modded-nanogpt; AdamW's betas are separate


def orthogonalize(g: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """An approximately orthogonal matrix with g's singular vectors: ~U V^T for g = U S V^T (Newton-Schulz).

    g: (m, n), or a stack of matrices (k, m, n), each done on its own. Works on the wide orientation
    (m <= n), where X X^T is the smaller (m, m) matrix.
    """
    a, b, c = NS_COEFFICIENTS
    tall = g.size(-2) > g.size(-1)
    x = (g.mT if tall else g).reshape(-1, *sorted(g.shape[-2:]))  # (k, m, n) with m <= n; one matrix: k = 1
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + eps)  # Frobenius norm >= the largest s: every s in [0, 1]
    for _ in range(steps):
        gram = x @ x.mT  # (k, m, m)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b gram + c gram @ gram
        x = torch.baddbmm(x, poly, x, beta=a)  # a x + poly @ x: each singular value s -> a s + b s^3 + c s^5
    # (baddbmm scales and adds inside the product: one pass over memory instead of four more per step)
    return (x.mT if tall else x).reshape(g.shape)


class Muon(torch.optim.Optimizer):
    """Muon for the groups with `use_muon=True`, AdamW for the others; decoupled weight decay in both.

    Muon update of a matrix W (out, in) with gradient G:
        M <- momentum * M + (1 - momentum) * G                   (a running mean of the gradient)
        D <- (1 - momentum) * G + momentum * M                   (Nesterov: look one step ahead)
        W <- W * (1 - lr * weight_decay) - lr * sqrt(max(1, out / in)) * orthogonalize(D)
    The sqrt factor keeps the step's size per output the same for tall matrices (an orthogonal (out, in)
    matrix with out > in has rows of norm sqrt(in / out), smaller than a wide one's).
    """

    def __init__(self, groups: list[dict], lr: float, momentum: float = MOMENTUM, betas=(0.9, 0.95),
                 eps: float = 1e-8, ns_steps: int = 5):
        defaults = dict(lr=lr, lr_scale=1.0, use_muon=False, weight_decay=0.0, momentum=momentum, betas=betas,
                        eps=eps, ns_steps=ns_steps)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon(group)
            else:
                for p in group["params"]:
                    if p.grad is not None:
                        self._adamw(p, group)
        return loss

    def _muon(self, group: dict) -> None:
        """Muon for one group. The matrices of one shape (one per block) are orthogonalised together, as one
        stack: a matrix of a small model is done in well under a millisecond, so one product per matrix
        would cost more in calls than in arithmetic (stacked, the Newton-Schulz steps ran 1.5x faster for the
        quality-300s model: `bench/train_speed.py --levers`)."""
        beta, lr = group["momentum"], group["lr"]
        by_shape: dict[torch.Size, list[torch.Tensor]] = {}
        for p in group["params"]:
            if p.grad is not None:
                by_shape.setdefault(p.shape, []).append(p)
        for shape, params in by_shape.items():
            directions = []
            for p in params:
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - beta)  # M = beta M + (1 - beta) G
                directions.append(p.grad.lerp(buf, beta))  # Nesterov: (1 - beta) G + beta M
            updates = orthogonalize(torch.stack(directions).float(), group["ns_steps"])  # (k, out, in)
            scale = math.sqrt(max(1.0, shape[0] / shape[1]))
            for p, update in zip(params, updates, strict=True):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update.to(p.dtype), alpha=-lr * scale)

    def _adamw(self, p: torch.Tensor, group: dict) -> None:
        """torch.optim.AdamW's update (its default, non-amsgrad form), step for step."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(())
            state["exp_avg"] = torch.zeros_like(p)  # running mean of the gradient
            state["exp_avg_sq"] = torch.zeros_like(p)  # running mean of its square
        beta1, beta2 = group["betas"]
        state["step"] += 1
        step = state["step"].item()
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        bias1, bias2 = 1 - beta1**step, 1 - beta2**step  # both means start at 0: undo that bias
        denom = (state["exp_avg_sq"].sqrt() / math.sqrt(bias2)).add_(group["eps"])
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.addcdiv_(state["exp_avg"], denom, value=-group["lr"] / bias1)


def muon_groups(model: torch.nn.Module, lr: float, muon_lr: float, weight_decay: float) -> list[dict]:
    """Param groups for `Muon`: the blocks' matrices (Muon, at `muon_lr`), the other >= 2-D tensors
    (embeddings: AdamW with decay), and the 1-D ones (biases, gains: AdamW without decay)."""
    named = {id(p): (n, p) for n, p in model.named_parameters() if p.requires_grad}  # a tied tensor once
    params = list(named.values())
    hidden = [p for n, p in params if p.dim() == 2 and ".h." in f".{n}"]
    embeddings = [p for n, p in params if p.dim() >= 2 and not any(p is q for q in hidden)]
    flat = [p for n, p in params if p.dim() < 2]
    groups = [
        {"params": hidden, "use_muon": True, "lr_scale": muon_lr / lr, "weight_decay": weight_decay},
        {"params": embeddings, "weight_decay": weight_decay},
        {"params": flat, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]  # the bigram has no blocks
