"""Tests for exercise 9: `pytest tutorial/exercises/test_ex09_bpe.py`. The answer keys are the project's
`merge_pair` and `BPETokenizer` (src/bpe.py)."""

import contextlib
import random
import signal
from collections import Counter
from itertools import pairwise

from src.bpe import BPETokenizer, merge_pair

EXERCISE = "ex09_bpe"


def random_ids(rng: random.Random, n: int, alphabet=(97, 98, 99)) -> list[int]:
    """A few letters only, so that pairs repeat and overlap ("aaa", "abab")."""
    return [rng.choice(alphabet) for _ in range(n)]


# --- counting pairs ---------------------------------------------------------------------------------------------


def test_count_pairs_on_the_wikipedia_example(exercise):
    ids = list(b"aaabdaaabac")
    counts = exercise.count_pairs(ids)
    assert counts[(97, 97)] == 4 and counts[(97, 98)] == 2 and counts[(98, 100)] == 1
    assert sum(counts.values()) == len(ids) - 1


def test_count_pairs_counts_overlapping_pairs(exercise):
    assert dict(exercise.count_pairs([5, 5, 5, 5])) == {(5, 5): 3}


def test_count_pairs_of_short_lists(exercise):
    assert dict(exercise.count_pairs([])) == {} and dict(exercise.count_pairs([7])) == {}


def test_count_pairs_on_random_lists(exercise):
    rng = random.Random(0)
    for n in (2, 3, 10, 200):
        ids = random_ids(rng, n)
        assert dict(exercise.count_pairs(ids)) == Counter(pairwise(ids))


# --- merging one pair -------------------------------------------------------------------------------------------


def test_merge_leaves_the_third_a_of_aaa_alone(exercise):
    assert exercise.merge([97, 97, 97, 98], (97, 97), 256) == [256, 97, 98]
    assert exercise.merge([97, 97, 97, 97], (97, 97), 256) == [256, 256]


def test_merge_at_the_very_end_and_the_very_start(exercise):
    assert exercise.merge([1, 2, 3, 1, 2], (1, 2), 9) == [9, 3, 9]
    assert exercise.merge([1, 2], (1, 2), 9) == [9]


def test_merge_without_the_pair_changes_nothing(exercise):
    assert exercise.merge([1, 2, 3], (3, 1), 9) == [1, 2, 3]  # 3 then 1 never occurs (the order matters)
    assert exercise.merge([], (1, 2), 9) == [] and exercise.merge([1], (1, 2), 9) == [1]


def test_merge_does_not_change_its_input(exercise):
    ids = [1, 2, 1, 2]
    exercise.merge(ids, (1, 2), 9)
    assert ids == [1, 2, 1, 2]


def test_merge_on_random_lists_as_the_project(exercise):
    rng = random.Random(1)
    for _ in range(200):
        ids = random_ids(rng, rng.randint(0, 30))
        pair = (rng.choice((97, 98, 99)), rng.choice((97, 98, 99)))
        assert exercise.merge(ids, pair, 300) == merge_pair(ids, pair, 300), (ids, pair)


# --- encoding a piece with learned merges -----------------------------------------------------------------------


@contextlib.contextmanager
def time_limit(seconds: int = 10):
    """Fail, instead of hanging, when encode_piece loops forever (a merge that leaves its pair in place)."""
    if not hasattr(signal, "SIGALRM"):  # Windows: no alarms, no limit
        yield
        return

    def stop(signum, frame):
        raise AssertionError(f"encode_piece ran for {seconds} s: does `merge` really replace every occurrence?")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def merges_of(tokenizer: BPETokenizer) -> dict[tuple[int, int], int]:
    """The tokenizer's merges as the exercise takes them: pair -> the id of the token it makes."""
    id_of = {token: i for i, token in tokenizer.vocab.items()}
    return {(a, b): id_of[tokenizer.vocab[a] + tokenizer.vocab[b]] for a, b in tokenizer.merges}


def test_encode_piece_on_the_wikipedia_example(exercise):
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern=None)  # aa -> 256, ab -> 257, aa+ab -> 258
    with time_limit():
        assert exercise.encode_piece(list(b"aaabdaaabac"), merges_of(tok)) == [258, 100, 258, 97, 99]


def test_encode_piece_follows_the_order_of_the_merges_not_the_order_of_the_text(exercise):
    merges = {(98, 99): 256, (97, 98): 257, (97, 256): 258}  # "bc" learned first, then "ab", then "a" + "bc"
    # Left to right would merge "ab" first and never make "abc"; the earliest merge, "bc", comes first.
    with time_limit():
        assert exercise.encode_piece([97, 98, 99], merges) == [258]


def test_encode_piece_as_the_project_on_text_it_never_saw(exercise):
    text = "the theme of the thesis: then there were three theatres; they thawed the thin thread" * 3
    tok = BPETokenizer.train(text, vocab_size=300, pattern=None)
    merges = merges_of(tok)
    rng = random.Random(2)
    with time_limit():
        for word in ["the", "thesis", "theatre", "strengths", "aaaa", "", "t", "thththth", "there thee"]:
            ids = list(word.encode("utf-8"))
            assert exercise.encode_piece(ids, merges) == tok.merge_plain(ids), word
        for _ in range(50):
            ids = random_ids(rng, rng.randint(0, 40), alphabet=tuple(b"the rsai"))
            assert exercise.encode_piece(ids, merges) == tok.merge_plain(ids), bytes(ids)
