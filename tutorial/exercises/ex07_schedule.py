"""Exercise 7 (chapter 7): the learning-rate schedule, warmup then cosine decay, written by you.

Fill in `lr_at`, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex07_schedule.py

The project's version is `lr_at` in src/train.py. Try not to look until your tests pass.
"""

import math  # noqa: F401  (you will want math.cos and math.pi)


def lr_at(step: int, lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """The learning rate of optimizer step `step` (0 for the first step, 1 for the second, ...).

    Three parts, in this order:
    1. warmup, for steps 0 .. warmup_iters - 1: a straight line up to `lr`. Step 0 must already get a
       positive rate, lr / warmup_iters, and the last warmup step gets exactly `lr`
       (so step s gets lr * (s + 1) / warmup_iters).
    2. cosine decay, from step warmup_iters until decay_iters: half a cosine wave, from `lr` at
       step warmup_iters down to `min_lr` at step decay_iters. With `progress` going from 0 to 1 over
       those steps, the rate is min_lr + 0.5 * (1 + cos(pi * progress)) * (lr - min_lr).
    3. from step decay_iters on: `min_lr`. Also when decay_iters <= warmup_iters (no room to decay):
       then every step after warmup gets `min_lr`, and nothing divides by zero.
    warmup_iters = 0 means no warmup: step 0 already starts the decay, at `lr`.
    Returns a float.
    """
    # TODO: the three parts, in this order
    raise NotImplementedError("lr_at (chapter 7)")
