"""Tests for exercise 3: `pytest tutorial/exercises/test_ex03_bigram.py`. The answer keys are PyTorch's
`F.cross_entropy` and the project's `BigramLanguageModel` (src/bigram.py)."""

import contextlib
import math

import pytest
import torch
from torch.nn import functional as F

from src.bigram import BigramLanguageModel

EXERCISE = "ex03_bigram"


@contextlib.contextmanager
def no_shortcuts():
    """Switch off PyTorch's ready-made cross-entropy and log-softmax while your code runs."""

    def forbidden(*args, **kwargs):
        raise AssertionError("write it yourself with exp, log, max and sum: this function is the answer key")

    with pytest.MonkeyPatch.context() as patch:
        for owner, name in [(F, "cross_entropy"), (F, "nll_loss"), (F, "log_softmax"), (torch, "log_softmax"),
                            (torch.Tensor, "log_softmax"), (torch, "logsumexp"), (torch.Tensor, "logsumexp"),
                            (torch.special, "log_softmax"), (torch.special, "logsumexp")]:
            patch.setattr(owner, name, forbidden)
        yield


def random_scores(n=64, v=27, scale=3.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=generator) * scale
    targets = torch.randint(v, (n,), generator=generator)
    return logits, targets


def test_cross_entropy_matches_pytorch(exercise):
    logits, targets = random_scores()
    expected = F.cross_entropy(logits, targets)
    with no_shortcuts():
        loss = exercise.cross_entropy(logits, targets)
    assert loss.shape == ()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_equal_scores_cost_ln_v(exercise):
    with no_shortcuts():
        loss = exercise.cross_entropy(torch.zeros(10, 71), torch.arange(10))
    assert abs(loss.item() - math.log(71)) < 1e-5  # a uniform guess: the loss at the start of chapter 3


def test_a_sure_right_answer_costs_almost_nothing(exercise):
    logits = torch.zeros(5, 10)
    logits[torch.arange(5), torch.arange(5)] = 30.0
    with no_shortcuts():
        loss = exercise.cross_entropy(logits, torch.arange(5))
    assert 0 <= loss.item() < 1e-6


def test_scores_in_the_thousands_do_not_overflow(exercise):
    logits, targets = random_scores(scale=1000.0, seed=1)  # exp(1000) is inf in float32
    expected = F.cross_entropy(logits, targets)
    with no_shortcuts():
        loss = exercise.cross_entropy(logits, targets)
    assert torch.isfinite(loss) and torch.allclose(loss, expected, rtol=1e-5)


def test_a_hopeless_answer_costs_a_large_finite_loss(exercise):
    logits = torch.tensor([[0.0, -200.0]])  # the right answer (1) gets probability e^-200: 0 in float32
    with no_shortcuts():
        loss = exercise.cross_entropy(logits, torch.tensor([1]))
    assert torch.isfinite(loss) and abs(loss.item() - 200.0) < 1e-3


def test_the_gradient_matches_pytorch(exercise):
    logits, targets = random_scores(seed=2)
    mine, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    F.cross_entropy(theirs, targets).backward()
    with no_shortcuts():
        exercise.cross_entropy(mine, targets).backward()
    assert mine.grad is not None and torch.allclose(mine.grad, theirs.grad, atol=1e-6)


def test_bigram_forward_matches_the_project_model(exercise):
    torch.manual_seed(3)
    model = BigramLanguageModel(vocab_size=13)
    with torch.no_grad():
        model.token_embedding_table.weight.normal_()
    idx, targets = torch.randint(13, (4, 9)), torch.randint(13, (4, 9))
    logits_project, loss_project = model(idx, targets)
    with no_shortcuts():
        logits, loss = exercise.bigram_forward(model.token_embedding_table.weight, idx, targets)
    assert logits.shape == (4, 9, 13) and torch.equal(logits, logits_project)
    assert torch.allclose(loss, loss_project, atol=1e-5)


def test_bigram_forward_without_targets_has_no_loss(exercise):
    table = torch.randn(7, 7)
    idx = torch.tensor([[0, 1, 2], [6, 6, 6]])
    with no_shortcuts():
        logits, loss = exercise.bigram_forward(table, idx)
    assert loss is None and logits.shape == (2, 3, 7) and torch.equal(logits[1, 2], table[6])


def test_a_zero_table_costs_ln_v_as_in_chapter_3(exercise):
    idx, targets = torch.randint(71, (8, 16)), torch.randint(71, (8, 16))
    with no_shortcuts():
        _, loss = exercise.bigram_forward(torch.zeros(71, 71), idx, targets)
    assert abs(loss.item() - math.log(71)) < 1e-5
