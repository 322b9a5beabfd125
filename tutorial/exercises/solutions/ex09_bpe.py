"""A worked answer to exercise 9: `merge_pair` and `BPETokenizer.merge_plain` (src/bpe.py), and the pair
counting that `_learn_merges` does."""


def count_pairs(ids: list[int]) -> dict[tuple[int, int], int]:
    counts = {}
    for i in range(len(ids) - 1):  # each id with its right-hand neighbour: len(ids) - 1 pairs, overlapping
        pair = (ids[i], ids[i + 1])
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    out = []
    i = 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2  # skip both: the second one is now part of the new token and cannot start another pair
        else:
            out.append(ids[i])
            i += 1
    return out


def encode_piece(ids: list[int], merges: dict[tuple[int, int], int]) -> list[int]:
    ids = list(ids)
    while len(ids) >= 2:
        candidates = [pair for pair in count_pairs(ids) if pair in merges]
        if not candidates:
            return ids  # nothing left to merge
        # Replay the merges in the order training learned them: a later merge may need the token an
        # earlier one makes ("aa" + "ab" needs "aa" and "ab" first), so the earliest-learned pair goes first.
        pair = min(candidates, key=lambda p: merges[p])
        ids = merge(ids, pair, merges[pair])
    return ids
