"""The streaming loader's contract (dataloader.ShardLoader, PreparedData), checked window by window.

- an epoch reads every window of every training shard exactly once, in an order that depends only on
  (seed, epoch): another epoch or another seed gives another order;
- the batches hold exactly the shard's tokens at those windows (y is x shifted by one);
- processes read disjoint windows, and together, step by step, the windows one process reads with
  world_size times the accumulation; the position is one number, so a run resumes on another count;
- validation: every validation token except a shard's first is a target exactly once, the same batches
  every time;
- memory stays flat over a long run (no memory map, no growing cache).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from src.dataloader import PreparedData, ShardLoader
from src.engine.errors import UserError
from src.engine.shards import read_token_file
from src.prepare import prepare
from tests.conftest import make_text

BLOCK = 8


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> PreparedData:
    """A char-level prepared folder: 12 documents, validation ~600 tokens, training in shards of ~900."""
    root = tmp_path_factory.mktemp("shards")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"doc{i:02d}.txt").write_text(make_text(400 + 37 * i, seed=i), encoding="utf-8")
    prepare([str(corpus)], str(root / "data"), "char", workers=1, shard_tokens=900, val_tokens=600)
    return PreparedData(root / "data")


def all_windows(data: PreparedData, block: int = BLOCK) -> set[tuple[str, int]]:
    """Every training window, computed from the manifest alone: starts 0, T, 2T, ... with T + 1 tokens."""
    return {(path.name, start) for path, n in zip(data.train_shards, data.train_tokens, strict=True)
            for start in range(0, n - block, block)}


def key(window) -> tuple[str, int]:
    return window.path.name, window.start


def test_an_epoch_reads_every_window_once_in_an_order_from_seed_and_epoch(prepared):
    loader = prepared.train_loader(BLOCK, 4, seed=3)
    W = loader.epoch_windows
    assert len(prepared.train_shards) >= 3 and W == len(all_windows(prepared))
    epoch0 = [key(loader.window_at(g)) for g in range(W)]
    epoch1 = [key(loader.window_at(g)) for g in range(W, 2 * W)]
    assert set(epoch0) == set(epoch1) == all_windows(prepared) and len(set(epoch0)) == W
    assert epoch0 != epoch1  # a new order every epoch
    again = [key(prepared.train_loader(BLOCK, 4, seed=3).window_at(g)) for g in range(W)]
    other = [key(prepared.train_loader(BLOCK, 4, seed=4).window_at(g)) for g in range(W)]
    assert again == epoch0 and other != epoch0
    # the shard order is shuffled too, not only the windows within each shard
    first_shards = {key(prepared.train_loader(BLOCK, 4, seed=s).window_at(0))[0] for s in range(12)}
    assert len(first_shards) > 1


def test_batches_hold_the_shard_tokens_of_their_windows(prepared):
    loader = prepared.train_loader(BLOCK, 5, seed=0)
    shards = {p.name: np.asarray(read_token_file(p)) for p in prepared.train_shards}
    for step in range(4):
        windows = [loader.window_at(g) for g in range(step * 5, step * 5 + 5)]
        x, y = loader.next_batch()
        assert x.shape == y.shape == (5, BLOCK) and x.dtype == torch.int64
        for row, w in enumerate(windows):
            tokens = shards[w.path.name][w.start : w.start + BLOCK + 1]
            assert x[row].tolist() == tokens[:-1].tolist() and y[row].tolist() == tokens[1:].tolist()


@pytest.mark.parametrize("world, accum", [(2, 1), (2, 3), (3, 2)])
def test_processes_read_disjoint_windows_that_together_equal_one_process(prepared, world, accum):
    batch = 2
    per_step = batch * accum * world
    one = prepared.train_loader(BLOCK, batch, seed=5, accum=accum * world)
    ranks = [prepared.train_loader(BLOCK, batch, seed=5, rank=r, world_size=world, accum=accum) for r in range(world)]
    for _ in range(7):  # steps, across an epoch boundary for the small worlds
        expected = {key(one.window_at(g)) for g in range(one.windows_read, one.windows_read + per_step)}
        for _ in range(accum * world):
            one.next_batch()
        seen = []
        for loader in ranks:
            for _ in range(accum):
                first = loader.windows_read + (loader.micro * world + loader.rank) * batch
                seen += [key(loader.window_at(g)) for g in range(first, first + batch)]
                loader.next_batch()
        assert len(seen) == len(set(seen)) == per_step  # disjoint
        assert set(seen) == expected  # and together what one process reads
        assert all(loader.windows_read == one.windows_read for loader in ranks)  # one position for all


def test_the_position_resumes_on_another_number_of_processes(prepared):
    straight = prepared.train_loader(BLOCK, 2, seed=1, accum=4)
    for _ in range(3 * 4):
        straight.next_batch()
    state = straight.state_dict()
    two = [prepared.train_loader(BLOCK, 2, seed=1, rank=r, world_size=2, accum=2) for r in range(2)]
    for loader in two:
        loader.load_state_dict(state)
    expected = [straight.next_batch() for _ in range(4)]  # step 4, micro-batches 0..3
    got = [two[0].next_batch(), two[1].next_batch(), two[0].next_batch(), two[1].next_batch()]
    for (ex, ey), (gx, gy) in zip(expected, got, strict=True):
        assert torch.equal(ex, gx) and torch.equal(ey, gy)


def test_the_position_is_saved_between_steps_only(prepared):
    loader = prepared.train_loader(BLOCK, 2, accum=2)
    loader.next_batch()
    with pytest.raises(RuntimeError):
        loader.state_dict()
    loader.next_batch()
    assert int(loader.state_dict()["windows_read"][0]) == 4


def test_restore_refuses_another_dataset_or_windows_per_step(prepared, tmp_path):
    loader = prepared.train_loader(BLOCK, 2)
    tensors, values = loader.checkpoint(ddp=None)
    for changed in ({"dataset_sha256": "0" * 64}, {"windows_per_step": 4}, {"seed": 9}, {"block_size": 4}):
        with pytest.raises(UserError, match="--resume"):
            prepared.train_loader(BLOCK, 2).restore(tensors, {**values, **changed}, tmp_path / "r", 0, 1)
    with pytest.raises(UserError, match="text file"):
        loader.restore({"loader.generator.0": torch.Generator().get_state()}, {}, tmp_path / "r", 0, 1)
    fresh = prepared.train_loader(BLOCK, 2)
    fresh.restore(tensors, values, tmp_path / "r", 0, 1)
    assert fresh.windows_read == 0


def test_validation_scores_every_token_once_with_the_same_batches_every_time(prepared):
    windows = prepared.validation_windows(BLOCK)
    covered = {}
    for w in windows:
        for i in range(w.start + 1, w.start + w.length):  # the targets
            covered.setdefault((w.path.name, i), 0)
            covered[(w.path.name, i)] += 1
    expected = {(p.name, i) for p, n in zip(prepared.val_shards, prepared.val_tokens, strict=True) for i in range(1, n)}
    assert set(covered) == expected and set(covered.values()) == {1}
    first = list(prepared.validation_batches(BLOCK, 4))
    second = list(prepared.validation_batches(BLOCK, 4))
    assert len(first) == len(prepared.validation_groups(BLOCK, 4)) > 1
    assert sum(x.numel() for x, _ in first) == sum(n - 1 for n in prepared.val_tokens)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    batches = prepared.evaluation_batches(BLOCK, 4, 3, "cpu")
    assert [x.shape for x, _ in batches["validation"]] == [(4, BLOCK)] * 3
    assert [x.shape for x, _ in batches["train"]] == [(4, BLOCK)] * 3


def test_memory_stays_flat_over_a_long_run(prepared):
    loader = prepared.train_loader(BLOCK, 16, seed=0)
    for _ in range(50):
        loader.next_batch()
    tracemalloc.start()
    for _ in range(50):
        loader.next_batch()
    baseline = tracemalloc.get_traced_memory()[0]
    for _ in range(2000):  # many epochs of this small corpus
        loader.next_batch()
    grown = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    assert grown < 200_000, grown  # bytes: nothing accumulates per batch or per epoch
    assert not any(isinstance(v, np.memmap) for v in vars(loader).values())


def test_too_little_data_for_one_batch_is_one_line(prepared):
    with pytest.raises(UserError, match="fewer than one batch"):
        ShardLoader(prepared, 512, 64)
