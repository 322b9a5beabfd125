"""Exercise 9 (chapter 9): the three small loops inside byte pair encoding, written by you.

Fill in the three functions, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex09_bpe.py

The project's versions are in src/bpe.py: `merge_pair`, the pair counting inside `_learn_merges`, and
`BPETokenizer.merge_plain`. Try not to look until your tests pass.
"""


def count_pairs(ids: list[int]) -> dict[tuple[int, int], int]:
    """How often each pair of neighbouring ids occurs in `ids`.

    >>> count_pairs([97, 97, 97, 98])      # "aaab": (a, a) twice (the pairs overlap), (a, b) once
    {(97, 97): 2, (97, 98): 1}

    A list of fewer than 2 ids has no pairs: {}.
    """
    # TODO
    raise NotImplementedError("count_pairs (chapter 9)")


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """A new list: `ids` with every occurrence of `pair` replaced by the single id `new_id`.

    Scan from left to right; after a merge, carry on *after* the two ids just merged, so that overlapping
    occurrences are not merged twice:
    >>> merge([97, 97, 97, 98], (97, 97), 256)   # "aaab": the first two a's merge, the third stays
    [256, 97, 98]

    Do not change `ids` itself.
    """
    # TODO
    raise NotImplementedError("merge (chapter 9)")


def encode_piece(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    """Apply learned merges to `ids` (the bytes of one piece of text), the way encoding does.

    `merges` maps each learned pair to the id of the token it makes, {(97, 97): 256, (256, 97): 257, ...}, and
    the earlier a pair was learned, the smaller its new id. Repeat: among the neighbouring pairs of `ids`
    that have a merge, pick the one learned earliest (smallest new id) and merge it everywhere with `merge`;
    stop when no neighbouring pair has a merge. Return the final list of ids.
    """
    # TODO
    raise NotImplementedError("encode_piece (chapter 9)")
