"""Tests for src/dataloader.py and src/engine/corpus.py: token arrays, the split, batches, and reading text files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.dataloader import BatchLoader, check_length, token_array, train_val_split
from src.engine.corpus import SHAKESPEARE_FILE, markdown_play_to_text, read_documents, read_text, resolve_data
from src.engine.errors import UserError

# --- token arrays and the split -----------------------------------------------------------------------


def test_token_array_uses_uint16_when_ids_fit_and_int32_above():
    small = token_array([0, 5, 64], vocab_size=65)
    assert small.dtype == np.uint16 and small.tolist() == [0, 5, 64]
    edge = token_array([0, 65535], vocab_size=65536)  # ids 0..65535 all fit in 16 bits
    assert edge.dtype == np.uint16 and edge.tolist() == [0, 65535]
    big = token_array([0, 65535, 65536, 100_000], vocab_size=100_001)
    assert big.dtype == np.int32 and big.tolist() == [0, 65535, 65536, 100_000]


@pytest.mark.parametrize("n", [10, 11, 99, 1000, 1001])
def test_split_is_90_10_contiguous_and_deterministic(n):
    tokens = np.arange(n, dtype=np.uint16)
    train, val = train_val_split(tokens)
    assert len(train) == int(n * 0.9) and len(train) + len(val) == n
    assert np.array_equal(np.concatenate([train, val]), tokens)  # train is the first part, val the rest
    train2, val2 = train_val_split(tokens)
    assert np.array_equal(train, train2) and np.array_equal(val, val2)


# --- batches ---------------------------------------------------------------------------------------------


def test_batches_are_windows_of_the_source_and_y_is_x_shifted_by_one():
    tokens = np.arange(500, dtype=np.uint16)  # token value == its position, so a window reveals its start
    loader = BatchLoader(tokens, block_size=8, batch_size=5, device="cpu", seed=0)
    for _ in range(20):
        x, y = loader.next_batch()
        assert x.shape == y.shape == (5, 8)
        assert x.dtype == y.dtype == torch.long
        assert x.device.type == y.device.type == "cpu"
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
            start = row_x[0]
            assert row_x == tokens[start : start + 8].tolist()
            assert row_y == tokens[start + 1 : start + 9].tolist()


def test_batches_follow_a_non_trivial_token_sequence():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 300, size=200).astype(np.uint16)
    loader = BatchLoader(tokens, block_size=6, batch_size=4, seed=1)
    windows = {tuple(tokens[s : s + 7].tolist()) for s in range(200 - 6)}
    x, y = loader.next_batch()
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        assert tuple(row_x + row_y[-1:]) in windows


def test_same_seed_same_batches_and_state_restores():
    tokens = np.arange(300, dtype=np.uint16)
    a = BatchLoader(tokens, 4, 3, seed=7)
    b = BatchLoader(tokens, 4, 3, seed=7)
    c = BatchLoader(tokens, 4, 3, seed=8)
    batches_a = [a.next_batch()[0] for _ in range(5)]
    batches_b = [b.next_batch()[0] for _ in range(5)]
    batches_c = [c.next_batch()[0] for _ in range(5)]
    assert all(torch.equal(p, q) for p, q in zip(batches_a, batches_b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(batches_a, batches_c, strict=True))
    state = a.state_dict()
    expected = a.next_batch()
    a.load_state_dict(state)
    assert torch.equal(a.next_batch()[0], expected[0])


def test_every_window_start_and_the_last_token_are_reachable():
    n, block = 23, 4  # a length that is not a multiple of anything convenient
    tokens = np.arange(n, dtype=np.uint16)
    loader = BatchLoader(tokens, block_size=block, batch_size=8, seed=0)
    starts, last = set(), set()
    for _ in range(100):
        x, y = loader.next_batch()
        starts.update(x[:, 0].tolist())
        last.update(y[:, -1].tolist())
    assert starts == set(range(n - block))  # 0 .. n - block - 1: every window that fits, no more
    assert n - 1 in last


def test_a_split_shorter_than_a_window_raises_a_user_error_naming_sizes():
    tokens = np.arange(8, dtype=np.uint16)
    with pytest.raises(UserError) as err:
        BatchLoader(tokens, block_size=8, batch_size=2, split="validation")
    message = str(err.value)
    assert "validation" in message and "8 tokens" in message and "block_size 8" in message and "9" in message
    BatchLoader(np.arange(9, dtype=np.uint16), block_size=8, batch_size=2)  # exactly one window is enough
    with pytest.raises(UserError, match="train split has 3 tokens.*smaller --block-size \\(at most 2\\)"):
        check_length(np.arange(3), 16, "train")
    with pytest.raises(UserError, match="has 1 tokens, .*use a longer text$"):  # no block size would do
        check_length(np.arange(1), 16, "val")


def test_fixed_batches_are_identical_across_calls_and_leave_the_loader_alone():
    tokens = np.arange(400, dtype=np.uint16)
    loader = BatchLoader(tokens, 8, 4, seed=3)
    fresh = BatchLoader(tokens, 8, 4, seed=3)
    first = loader.fixed_batches(3)
    second = loader.fixed_batches(3)
    assert len(first) == 3
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(x1[:, 1:], y1[:, :-1])
    assert not torch.equal(first[0][0], first[1][0])
    assert torch.equal(loader.next_batch()[0], fresh.next_batch()[0])  # the training stream is unaffected


def test_ranks_read_disjoint_shards():
    tokens = np.arange(1003, dtype=np.uint16)
    world = 4
    seen = []
    for rank in range(world):
        loader = BatchLoader(tokens, 8, 16, seed=0, rank=rank, world_size=world)
        values = set()
        for _ in range(50):
            x, y = loader.next_batch()
            values.update(x.flatten().tolist())
            values.update(y.flatten().tolist())
        shard = 1003 // world
        assert values <= set(range(rank * shard, (rank + 1) * shard))
        seen.append(values)
    for i in range(world):
        for j in range(i + 1, world):
            assert not seen[i] & seen[j]


# --- reading text files ----------------------------------------------------------------------------------


def test_read_text_returns_the_text_unchanged(tmp_path):
    path = tmp_path / "t.txt"
    text = "line one\r\nnaïve 🎉\n\n  indented\n"
    path.write_bytes(text.encode("utf-8"))
    assert read_text(path) == text


@pytest.mark.parametrize(
    "content, match",
    [
        (None, "data file not found"),
        ("dir", "is a folder"),
        (b"", "is empty"),
        (b" \n\t\r\n  ", "is empty"),
        (b"hello\x00world", "looks binary \\(NUL byte at offset 5\\)"),
        (b"abc \xff def", "not UTF-8 text \\(invalid byte 0xff at offset 4\\)"),
        ("caf\u00e9".encode("latin-1") + b" au lait", "offset 3"),
    ],
    ids=["missing", "directory", "empty", "whitespace", "binary", "not-utf8", "latin1"],
)
def test_read_text_turns_unusable_files_into_user_errors(tmp_path, content, match):
    path = tmp_path / "data.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as err:
        read_text(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)  # one line


# --- the default corpus: Markdown plays to plain text ------------------------------------------------------

PLAY = """\
# Hamlet

## ACT I

### SCENE I. Elsinore. A platform before the castle.

_FRANCISCO at his post. Enter to him BERNARDO_

**BERNARDO**{BR}
Who's there?

**FRANCISCO**{BR}
Nay, answer me: stand, and unfold yourself.

_Enter KING CLAUDIUS, QUEEN GERTRUDE, HAMLET, POLONIUS, LAERTES, VOLTIMAND,
CORNELIUS, Lords, and Attendants_

**HAMLET**{BR}
_\\[Aside]_{BR}
A little more than kin, and less than kind.{BR}
To be, or not to be: that is the question.

**Ghost**{BR}
_\\[Beneath]_

**MARCELLUS & HORATIO**{BR}
My lord, my lord,--

**HAMLET**{BR}
Farewell. _Exit_

_Exeunt_
""".format(BR="  ")  # Markdown's line break: two trailing spaces

PLAY_TEXT = """\
BERNARDO:
Who's there?

FRANCISCO:
Nay, answer me: stand, and unfold yourself.

HAMLET:
A little more than kin, and less than kind.
To be, or not to be: that is the question.

MARCELLUS & HORATIO:
My lord, my lord,--

HAMLET:
Farewell.
"""


def test_a_folder_leaves_out_hidden_and_empty_files(tmp_path):
    """A Mac copies `._song.txt` (binary, NUL bytes) beside every file; an empty file holds nothing to learn."""
    (tmp_path / "b.txt").write_text("second song")
    (tmp_path / "a.txt").write_text("first song")
    (tmp_path / "._a.txt").write_bytes(b"\x00\x05\x16\x07 Mac OS X resource fork")
    (tmp_path / "empty.txt").write_text("  \n")
    assert read_documents(tmp_path) == ["first song", "second song"]
    for file in ("a.txt", "b.txt"):
        (tmp_path / file).unlink()
    with pytest.raises(UserError, match="has no \\*.txt files with text"):
        read_documents(tmp_path)


def test_markdown_play_to_text_keeps_only_speeches():
    assert markdown_play_to_text(PLAY) == PLAY_TEXT


def test_markdown_directions_missing_their_opening_underscore_are_dropped():
    play = "**PAGE**  \n\\[Within]_  \nWho's there?\n\n**Poet**  \n[Reciting to himself]_  \nWhen we for recompense\n"
    assert markdown_play_to_text(play) == "PAGE:\nWho's there?\n\nPoet:\nWhen we for recompense\n"


# --- which text is used ------------------------------------------------------------------------------------


def test_resolve_data_precedence(tmp_path):
    root, cache = tmp_path / "repo", tmp_path / "cache"
    user_data = root / "data" / "data.txt"
    shakespeare = cache / SHAKESPEARE_FILE
    cache.mkdir()
    shakespeare.write_text("converted already")  # in the cache: used as it is, not converted again

    # nothing of the user's: the default corpus, from the cache folder
    path, description = resolve_data(repo_root=root, cache_dir=cache)
    assert path == shakespeare and "Shakespeare" in description
    assert shakespeare.read_text() == "converted already"
    # data/data.txt exists: it wins over the default
    user_data.parent.mkdir(parents=True)
    user_data.write_text("mine")
    path, description = resolve_data(repo_root=root, cache_dir=cache)
    assert path == user_data and "data/data.txt" in description
    # an explicit path wins over everything
    explicit = tmp_path / "other.txt"
    path, description = resolve_data(explicit, repo_root=root, cache_dir=cache)
    assert path == explicit and str(explicit) in description
