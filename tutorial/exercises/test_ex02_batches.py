"""Tests for exercise 2: `pytest tutorial/exercises/test_ex02_batches.py`. The answer key is the project's
`BatchLoader` (src/dataloader.py)."""

import numpy as np
import torch

from src.dataloader import BatchLoader

EXERCISE = "ex02_batches"


def test_shapes_and_dtype(exercise):
    tokens = torch.arange(100)
    x, y = exercise.get_batch(tokens, block_size=8, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    assert x.dtype == y.dtype == torch.long


def test_windows_are_consecutive_ids_and_y_is_x_shifted_by_one(exercise):
    tokens = torch.arange(1000)  # id = position: a window's ids must count up by one
    x, y = exercise.get_batch(tokens, block_size=16, batch_size=32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(32, 16))
    assert torch.equal(y, x + 1)


def test_every_window_can_be_drawn_and_none_runs_off_the_end(exercise):
    block_size = 5
    tokens = torch.arange(block_size + 3)  # room for exactly 3 windows: starting at 0, 1 and 2
    generator = torch.Generator().manual_seed(2)
    starts = set()
    for _ in range(200):
        x, y = exercise.get_batch(tokens, block_size, batch_size=2, generator=generator)
        assert int(y.max()) <= len(tokens) - 1
        starts.update(x[:, 0].tolist())
    assert starts == {0, 1, 2}


def test_the_same_windows_as_the_project_for_the_same_text(exercise):
    text = np.random.default_rng(3).integers(0, 65, size=500).astype(np.uint16)  # ids of a random "text"
    x, y = exercise.get_batch(torch.from_numpy(text.astype(np.int64)), 12, 6, torch.Generator().manual_seed(4))
    # Wherever your windows start, each must be the project's window from that place in the text.
    where = {tuple(text[s : s + 12].tolist()): s for s in range(len(text) - 12)}
    starts = np.array([where[tuple(row)] for row in x.tolist()])
    x_project, y_project = BatchLoader(text, block_size=12, batch_size=6).windows(starts)
    assert torch.equal(x, x_project) and torch.equal(y, y_project)


def test_the_same_generator_state_gives_the_same_batch(exercise):
    tokens = torch.arange(10_000)
    first = exercise.get_batch(tokens, 8, 4, torch.Generator().manual_seed(5))
    again = exercise.get_batch(tokens, 8, 4, torch.Generator().manual_seed(5))
    other = exercise.get_batch(tokens, 8, 4, torch.Generator().manual_seed(6))
    assert torch.equal(first[0], again[0]) and not torch.equal(first[0], other[0])
