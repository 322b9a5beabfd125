"""Tests for exercise 7: `pytest tutorial/exercises/test_ex07_schedule.py`. The answer key is the project's
`lr_at` (src/train.py)."""

import math
import random

import pytest

from src.train import lr_at

EXERCISE = "ex07_schedule"


def test_the_same_rate_as_the_project_at_every_step(exercise):
    # Settings the chapter did not use: every step of a short schedule, warmup, decay and after.
    for lr, min_lr, warmup, decay in [(6e-4, 6e-5, 10, 50), (1.0, 0.0, 3, 7), (2e-3, 2e-3, 5, 20)]:
        for step in range(decay + 5):
            expected = lr_at(step, lr, min_lr, warmup, decay)
            got = exercise.lr_at(step, lr, min_lr, warmup, decay)
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), (step, lr, min_lr, warmup, decay)


def test_many_random_schedules(exercise):
    rng = random.Random(7)
    for _ in range(300):
        lr = 10 ** rng.uniform(-5, -1)
        min_lr = lr * rng.choice([0.0, 0.1, rng.random()])
        warmup, decay = rng.randint(0, 40), rng.randint(0, 400)
        step = rng.randint(0, 450)
        expected = lr_at(step, lr, min_lr, warmup, decay)
        assert exercise.lr_at(step, lr, min_lr, warmup, decay) == pytest.approx(expected, rel=1e-12, abs=1e-15), (
            step, lr, min_lr, warmup, decay)


def test_step_0_already_gets_a_positive_rate(exercise):
    # The classic off-by-one: lr * step / warmup_iters gives the very first step a rate of 0.
    assert exercise.lr_at(0, 1e-3, 1e-4, 100, 1000) == pytest.approx(1e-5)


def test_the_peak_comes_at_the_last_warmup_step_and_stays_there_for_one_more(exercise):
    assert exercise.lr_at(99, 1e-3, 1e-4, 100, 1000) == pytest.approx(1e-3)  # the last warmup step
    assert exercise.lr_at(100, 1e-3, 1e-4, 100, 1000) == pytest.approx(1e-3)  # the first decay step: cos(0) = 1


def test_halfway_through_the_decay_the_rate_is_halfway_between(exercise):
    assert exercise.lr_at(550, 1e-3, 1e-4, 100, 1000) == pytest.approx((1e-3 + 1e-4) / 2)


def test_the_decay_ends_at_min_lr_not_at_zero(exercise):
    for step in (1000, 1001, 5000):
        assert exercise.lr_at(step, 1e-3, 1e-4, 100, 1000) == pytest.approx(1e-4)
    assert exercise.lr_at(999, 1e-3, 1e-4, 100, 1000) > 1e-4


def test_the_rate_only_falls_after_warmup(exercise):
    rates = [exercise.lr_at(step, 3e-3, 3e-4, 20, 300) for step in range(20, 320)]
    assert all(later <= earlier for earlier, later in zip(rates, rates[1:], strict=False))
    assert rates[0] == pytest.approx(3e-3) and rates[-1] == pytest.approx(3e-4)


def test_no_room_to_decay_does_not_divide_by_zero(exercise):
    assert exercise.lr_at(5, 1e-3, 1e-4, 10, 10) == pytest.approx(6e-4)  # still warming up
    assert exercise.lr_at(10, 1e-3, 1e-4, 10, 10) == pytest.approx(1e-4)
    assert exercise.lr_at(12, 1e-3, 1e-4, 10, 4) == pytest.approx(1e-4)


def test_no_warmup_starts_the_decay_at_step_0(exercise):
    assert exercise.lr_at(0, 1e-3, 0.0, 0, 100) == pytest.approx(1e-3)
    assert exercise.lr_at(50, 1e-3, 0.0, 0, 100) == pytest.approx(0.5e-3)
    assert isinstance(exercise.lr_at(7, 1e-3, 0.0, 0, 100), float) and not math.isnan(exercise.lr_at(7, 1e-3, 0, 0, 0))
