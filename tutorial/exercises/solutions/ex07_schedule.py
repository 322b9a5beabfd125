"""A worked answer to exercise 7: `lr_at` in src/train.py, the learning rate at each step."""

import math


def lr_at(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    if step < warmup_iters:
        # step + 1, not step: step 0 is a real optimizer step, and a rate of 0 would waste it. The last
        # warmup step, warmup_iters - 1, gets exactly lr.
        return lr * (step + 1) / warmup_iters
    if step >= decay_iters:
        # The decay is over. A decay_iters <= warmup_iters (no room to decay) lands here too, straight
        # after warmup, so the division below never divides by zero.
        return min_lr
    # How far through the decay we are: 0 at its first step, reaching 1 at decay_iters.
    progress = (step - warmup_iters) / (decay_iters - warmup_iters)
    # 0.5 * (1 + cos(pi * progress)) slides smoothly from 1 down to 0: slowly at first, fastest in the
    # middle, slowly again at the end. It scales the distance between lr and min_lr.
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)
