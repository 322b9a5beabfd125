"""Byte-level BPE tokenizer (the kind GPT-2 uses), written from scratch.

Why bytes: the tokenizer works on the UTF-8 bytes of the text, and each of the 256 byte values is a
token (ids 0..255 in a vocabulary trained here; GPT-2's files give them other ids). So every string
can be encoded: there is no "unknown character", unlike the char tokenizer in `tokenizer.py`.

Why merges: training starts from those 256 byte tokens and repeatedly *merges* the pair of adjacent
tokens that occurs most often into one new token ("t" + "h" -> "th", then "th" + "e" -> "the", ...).
Common words end up as one token, rare words as a few pieces, and a model sees ~4x fewer tokens than
bytes. The list of merges, in the order they were learned, *is* the tokenizer. Encoding replays it:
in each word, repeatedly merge the adjacent pair that was learned earliest (lowest rank).

    >>> tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern=None)
    >>> [tok.vocab[i] for i in (256, 257, 258)]       # the three merges learned
    [b'aa', b'ab', b'aaab']
    >>> tok.encode("aaabdaaabac")                       # the example from Wikipedia's "Byte pair encoding"
    [258, 100, 258, 97, 99]
    >>> tok.decode([258, 100])
    'aaabd'

Why a regex first: GPT-2 never merges across word boundaries. `GPT2_PATTERN` splits text into
pre-tokens (" the", " 123", "'s", " !!", "\\n\\n", ...) and BPE runs inside each one. Training and
encoding share that one constant through `pretokenize`, so they always split text the same way.
`pattern=None` turns splitting off (the whole text is one piece), as in the example above.

Why the odd characters in the files: GPT-2's `vocab.json` and `merges.txt` store tokens as strings,
with each byte written as a printable stand-in character: a space is "Ġ", a newline "Ċ" (the table and
the reason are in `engine/gpt2_files.py`). Our own files use the same alphabet, so " the" reads as "Ġthe"
in both.

Training counts pairs once per *distinct* pre-token, weighted by how often it occurs, and after each
merge re-counts only the words that contain the merged pair (a dict maps each pair to those words);
a heap with lazy invalidation picks the most frequent pair. Ties go to the pair whose (left bytes,
right bytes) is smallest, so the result never depends on the order of the text's words. Training
stops early, with a warning, when no pair occurs twice any more.

Encoding, read it in two steps. `merge_plain` is the loop to understand first (minbpe's): find the
adjacent pair with the lowest rank, merge it everywhere, repeat until no pair has a merge. It rescans
the whole piece after every merge, O(n^2), which one huge pre-token ("a" * 100_000 is one) makes
hopeless. `merge_fast` gives the same ids (a test checks) in O(n log n), with a heap and a linked list,
and `encode` uses it, with a cache from pre-token to ids, because real text repeats words: most of the
work is then the regex and dict lookups.

Special tokens such as "<|endoftext|>" are opt-in when encoding: by default `encode` raises if the
text contains one, because text from users or the web must not be able to inject a control token.
Pass `allowed_special="all"` (or a set) to encode them as special tokens, "none" to encode them as
plain text.

Files: `save`/`load` use a versioned JSON file (type, version, pattern, special tokens, the merges
as pairs of readable token strings, and the vocabulary). GPT-2's own released files (vocab.json +
merges.txt) are read by `engine/tokenizers.py`'s `gpt2_tokenizer`, with the formats in
`engine/gpt2_files.py`.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import warnings
from collections import Counter
from functools import lru_cache
from itertools import pairwise

import regex
from tqdm import tqdm

from src.engine.errors import UserError
from src.engine.files import read_json
from src.engine.gpt2_files import ENDOFTEXT, str_to_token, token_to_str  # GPT-2's byte alphabet
from src.tokenizer import CharTokenizer, Tokenizer

FORMAT_VERSION = 1

# GPT-2's pre-tokenizer: contractions ('s 't 're 've 'm 'll 'd, lower case only, as in GPT-2), then
# runs of letters, runs of digits, runs of other symbols (each may take one leading space), then
# whitespace. `\s+(?!\S)` leaves the last space of a run for the next word: "a   b" -> "a", "  ", " b".
# (\p{L}, \p{N}, \s follow the `regex` package's Unicode tables. tiktoken and HF `tokenizers` use their
# own; for characters that only a recent Unicode version assigns, the three can split text differently.)
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=16)
def _compiled(pattern: str):
    try:
        return regex.compile(pattern)
    except regex.error as err:
        raise UserError(f"invalid pre-tokenization pattern {pattern!r}: {err}") from None


def pretokenize(text: str, pattern: str | None = GPT2_PATTERN) -> list[str]:
    """Split text into the pieces BPE works on; the one place where training and encoding split text.

    >>> pretokenize("Hello world's  end!!\\n")
    ['Hello', ' world', "'s", ' ', ' end', '!!', '\\n']
    """
    if pattern is None:
        return [text] if text else []
    return _compiled(pattern).findall(text)


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids` by `new_id`, scanning left to right.

    >>> merge_pair([97, 97, 97, 98], (97, 97), 256)   # "aaab": the first "aa" wins, the third "a" stays
    [256, 97, 98]
    """
    first, second = pair
    out = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] == first and i + 1 < n and ids[i + 1] == second:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


_CACHE_MAX_PIECE = 64  # longer pieces are not cached (they rarely repeat, and would cost memory)
_CACHE_SIZE = 200_000  # the cache is emptied when it holds this many pieces


class BPETokenizer(Tokenizer):
    """A byte-level BPE tokenizer: a vocabulary (id -> bytes), merges in rank order, special tokens."""

    kind = "bpe"

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[int, int]],
        special_tokens: dict[str, int] | None = None,
        pattern: str | None = GPT2_PATTERN,
    ):
        """`merges[r] = (a, b)`: the pair of token ids merged at rank r; it makes the token vocab[a] + vocab[b]."""
        self.vocab = {int(i): bytes(token) for i, token in vocab.items()}
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.special_tokens = dict(special_tokens or {})
        self.pattern = pattern
        if pattern is not None:
            _compiled(pattern)  # a bad pattern fails now, not at the first encode

        id_of = {token: i for i, token in self.vocab.items()}
        if len(id_of) != len(self.vocab):
            raise UserError("the vocabulary lists the same token under two ids")
        missing = [byte for byte in range(256) if bytes([byte]) not in id_of]
        if missing:
            raise UserError(f"the vocabulary lacks {len(missing)} of the 256 single-byte tokens (e.g. {missing[0]})")
        self._byte_ids = [id_of[bytes([byte])] for byte in range(256)]  # byte value -> token id

        self._ranks: dict[tuple[int, int], int] = {}  # pair -> rank (lower = learned earlier = merged first)
        self._merged: list[int] = []  # rank -> id of the token the merge makes
        for rank, (a, b) in enumerate(self.merges):
            if a not in self.vocab or b not in self.vocab:
                raise UserError(f"merge #{rank} uses a token id that is not in the vocabulary: {(a, b)}")
            new_id = id_of.get(self.vocab[a] + self.vocab[b])
            if new_id is None:
                token = self.vocab[a] + self.vocab[b]
                raise UserError(f"merge #{rank} makes {token!r}, which is not in the vocabulary")
            if (a, b) in self._ranks:
                raise UserError(f"merge #{rank} {(a, b)} is listed twice")
            self._ranks[(a, b)] = rank
            self._merged.append(new_id)

        clash = [s for s, i in self.special_tokens.items() if i in self.vocab]
        if clash or len(set(self.special_tokens.values())) != len(self.special_tokens):
            raise UserError(f"special token ids must be unique and not used by the vocabulary: {clash}")
        self._id_to_bytes = {**self.vocab, **{i: s.encode("utf-8") for s, i in self.special_tokens.items()}}
        self._vocab_size = max(self._id_to_bytes) + 1
        self._cache: dict[str, list[int]] = {}  # pre-token -> its ids

    @property
    def vocab_size(self) -> int:
        """One more than the largest token id (the size a model's embedding table needs)."""
        return self._vocab_size

    @property
    def eot_token_id(self) -> int | None:
        """The id of "<|endoftext|>" (50256 in GPT-2), or None if this tokenizer has no such token."""
        return self.special_tokens.get(ENDOFTEXT)

    @property
    def document_separator(self) -> str:
        """"<|endoftext|>" between documents: it teaches the model where a text ends (a blank line without it)."""
        return ENDOFTEXT if ENDOFTEXT in self.special_tokens else "\n\n"

    def __repr__(self) -> str:
        return (
            f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
            f"special_tokens={sorted(self.special_tokens)})"
        )

    # -----------------------------------------------------------------------------------------------
    # Training

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens: list[str] | None = None,
        pattern: str | None = GPT2_PATTERN,
        verbose: bool = False,
    ) -> BPETokenizer:
        """Learn merges from `text` until the vocabulary has `vocab_size` tokens (special tokens included).

        Ids: 0..255 are the bytes, then one id per merge in the order learned, then the special tokens.
        Special-token strings in `text` are cut out before counting, so they never take part in merges.
        `pattern=None` makes the whole text one word: right for toy examples, slow for long texts
        (each merge then re-scans the whole text, ~7 s for vocab 512 on 100 kB).
        """
        specials = list(special_tokens or [])
        if isinstance(special_tokens, (set, frozenset)):
            specials.sort()  # a set has no order of its own; ids must not depend on hashing
        if len(set(specials)) != len(specials) or not all(isinstance(s, str) and s for s in specials):
            raise UserError(f"special tokens must be distinct non-empty strings, got {specials!r}")
        if vocab_size < 256 + len(specials):
            raise UserError(
                f"vocab_size {vocab_size} is too small: a byte-level BPE needs 256 byte tokens"
                + (f" plus {len(specials)} special token(s)" if specials else "")
            )
        word_counts = Counter()
        for part in _split_on_specials(text, specials)[::2]:  # the even parts are ordinary text
            word_counts.update(pretokenize(part, pattern))
        words = [list(word.encode("utf-8")) for word in word_counts]  # token ids = byte values at first
        vocab = {byte: bytes([byte]) for byte in range(256)}
        merges = _learn_merges(words, list(word_counts.values()), vocab, vocab_size - len(specials), verbose)
        if len(vocab) + len(specials) < vocab_size:
            warnings.warn(
                f"BPE training stopped after {len(merges)} merges, at {len(vocab) + len(specials)} tokens "
                f"instead of {vocab_size}: no pair of adjacent tokens occurs twice any more "
                "(train on more text or ask for a smaller vocab_size)",
                stacklevel=2,
            )
        special_ids = {s: len(vocab) + k for k, s in enumerate(specials)}
        return cls(vocab, merges, special_ids, pattern)

    # -----------------------------------------------------------------------------------------------
    # Encoding

    def merge_plain(self, ids: list[int]) -> list[int]:
        """Apply the merges to one piece, the plain way: while some adjacent pair has a merge, merge the
        pair learned earliest (lowest rank), at every place it occurs, left to right.

            >>> tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, pattern=None)
            >>> tok.merge_plain([97, 97, 97, 98, 100])       # a a a b d: aa, then ab, then aa+ab
            [258, 100]

        Each round rescans every pair of the piece: O(n^2) for a piece of n bytes. `merge_fast` gives the
        same result in O(n log n); `encode` uses that one.
        """
        while len(ids) >= 2:
            pair = min(pairwise(ids), key=lambda p: self._ranks.get(p, math.inf))  # the earliest-learned pair
            if pair not in self._ranks:
                return ids  # no adjacent pair has a merge: done
            ids = merge_pair(ids, pair, self._merged[self._ranks[pair]])
        return ids

    def encode(self, text: str, allowed_special="none_raise") -> list[int]:
        """Text -> ids. `allowed_special` says what to do with special-token strings in the text:

        "none_raise" (default): raise a UserError if there is one; "none": encode them as plain text;
        "all": encode each as its special token; a set of special strings: encode those as special
        tokens and raise if the text contains any other (the same rules as tiktoken).
        """
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif allowed_special in ("none", "none_raise"):
            allowed = set()
        elif isinstance(allowed_special, str):
            raise UserError(f"allowed_special must be 'all', 'none', 'none_raise' or a set, got {allowed_special!r}")
        else:
            allowed = set(allowed_special)
            unknown = allowed - self.special_tokens.keys()
            if unknown:
                known = sorted(self.special_tokens)
                raise UserError(f"not special tokens of this tokenizer: {sorted(unknown)} (it has {known})")
        if allowed_special != "none":
            found = [s for s in self.special_tokens if s not in allowed and s in text]
            if found:
                raise UserError(
                    f"the text contains the special token {found[0]!r}: pass allowed_special='all' to encode "
                    "it as a special token, or allowed_special='none' to encode it as ordinary text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids = []
        for k, part in enumerate(_split_on_specials(text, allowed)):
            if k % 2:  # odd parts are the special tokens themselves
                ids.append(self.special_tokens[part])
            elif part:
                ids += self.encode_ordinary(part)
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, treating special-token strings like any other text."""
        try:
            return self._encode_pieces(pretokenize(text, self.pattern))
        except UnicodeEncodeError:
            # Lone surrogates (e.g. from a file read with errors="surrogateescape") have no UTF-8 bytes;
            # replace them with U+FFFD, as tiktoken does, and try again.
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._encode_pieces(pretokenize(text, self.pattern))

    def _encode_pieces(self, pieces: list[str]) -> list[int]:
        # The hot loop: most pieces are words seen before, so this is mostly dict lookups.
        cache = self._cache
        ids = []
        for piece in pieces:
            piece_ids = cache.get(piece)
            if piece_ids is None:
                piece_ids = self._encode_piece(piece)
            ids += piece_ids
        return ids

    def _encode_piece(self, piece: str) -> list[int]:
        byte_ids = self._byte_ids
        ids = [byte_ids[byte] for byte in piece.encode("utf-8")]
        ids = self.merge_fast(ids)
        if len(piece) <= _CACHE_MAX_PIECE:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[piece] = ids
        return ids

    def merge_fast(self, ids: list[int]) -> list[int]:
        """The same as `merge_plain` (a test checks it), in O(n log n) time instead of O(n^2).

        Merging the pair of lowest rank one occurrence at a time, leftmost first, is the same as merging it
        everywhere at once: a merge can only make pairs that contain its new token, and those were learned
        later, so they rank higher. One pre-token can be a megabyte long ("a" * 1_000_000), and this way is
        as fast for short words too. Tokens live in a doubly linked list over their start positions (a
        merge never moves the start of the left token). A heap holds (rank, position) for each adjacent
        pair that has a merge, so the next merge is the heap's smallest entry. Entries go stale when a neighbour
        merges first; instead of deleting them we skip them when popped ("lazy invalidation"): an
        entry is still valid iff the pair at its position still has that rank (a rank is one pair).
        """
        ranks, merged = self._ranks, self._merged
        n = len(ids)
        tokens: list[int | None] = list(ids)  # None = absorbed into the token on its left
        nxt = list(range(1, n + 1))  # position of the next token; n = none
        prv = list(range(-1, n - 1))  # position of the previous token; -1 = none
        heap = [(rank, i) for i, rank in enumerate(map(ranks.get, pairwise(ids))) if rank is not None]
        heapq.heapify(heap)
        while heap:
            rank, i = heapq.heappop(heap)
            j = nxt[i]
            if tokens[i] is None or j == n or ranks.get((tokens[i], tokens[j])) != rank:
                continue  # stale entry
            tokens[i], tokens[j] = merged[rank], None
            k = nxt[j]
            nxt[i] = k
            if k < n:
                prv[k] = i
                right = ranks.get((tokens[i], tokens[k]))
                if right is not None:
                    heapq.heappush(heap, (right, i))
            if prv[i] >= 0:
                left = ranks.get((tokens[prv[i]], tokens[i]))
                if left is not None:
                    heapq.heappush(heap, (left, prv[i]))
        return [token for token in tokens if token is not None]

    # -----------------------------------------------------------------------------------------------
    # Decoding

    def decode_bytes(self, ids) -> bytes:
        """Ids (a list, or a 1-D tensor) -> the raw bytes they stand for."""
        table = self._id_to_bytes
        try:
            return b"".join([table[int(i)] for i in ids])
        except KeyError as err:
            raise UserError(
                f"token id {err.args[0]} is not in the tokenizer's vocabulary (ids 0..{self.vocab_size - 1})"
            ) from None

    # -----------------------------------------------------------------------------------------------
    # Files

    def to_dict(self) -> dict:
        """Everything that defines the tokenizer, with tokens as strings in GPT-2's readable alphabet."""
        return {
            "type": self.kind,
            "version": FORMAT_VERSION,
            "pattern": self.pattern,
            "special_tokens": dict(self.special_tokens),
            "merges": [[token_to_str(self.vocab[a]), token_to_str(self.vocab[b])] for a, b in self.merges],
            "vocab": {token_to_str(token): i for i, token in sorted(self.vocab.items())},
        }

    def to_json(self) -> str:
        """`to_dict` as JSON, laid out for reading: one merge, and one token, per line."""
        data = self.to_dict()
        dump = lambda value: json.dumps(value, ensure_ascii=False)
        lines = [f" {dump(key)}: {dump(data[key])}," for key in ("type", "version", "pattern", "special_tokens")]
        merges = ",\n".join(f"  {dump(pair)}" for pair in data["merges"])
        vocab = ",\n".join(f"  {dump(token)}: {i}" for token, i in data["vocab"].items())
        return "{\n" + "\n".join(lines) + f'\n "merges": [\n{merges}\n ],\n "vocab": {{\n{vocab}\n }}\n}}\n'

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        """Read a file written by `save`."""
        return cls.from_dict(read_json(path, "tokenizer file"), source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "tokenizer file") -> BPETokenizer:
        kind, version = data.get("type"), data.get("version")
        if kind not in ("bpe", "gpt2"):  # "gpt2" is accepted as another name for the same format
            raise UserError(f"{source} is not a BPE tokenizer file (type={kind!r})")
        if version != FORMAT_VERSION:
            raise UserError(
                f"{source} is a version-{version} BPE tokenizer file; this code reads version {FORMAT_VERSION}"
            )
        missing = [key for key in ("pattern", "special_tokens", "merges", "vocab") if key not in data]
        if missing:
            raise UserError(f"{source} is missing the key(s) {missing}")
        if not isinstance(data["vocab"], dict) or not isinstance(data["merges"], list):
            raise UserError(f"{source}: vocab must be an object (token: id) and merges a list of pairs")
        if data["pattern"] is not None and not isinstance(data["pattern"], str):
            raise UserError(f"{source}: pattern must be a regular expression (a string) or null")
        return cls.from_token_strings(data["vocab"], data["merges"], data["special_tokens"], data["pattern"], source)

    @classmethod
    def from_token_strings(cls, vocab: dict, merges: list, special_tokens: dict, pattern, source: str):
        """Build from tokens written in GPT-2's byte alphabet: vocab {"Ġthe": 262, ...}, merges [["Ġ", "the"], ...]."""
        try:
            id_vocab = {int(i): str_to_token(token) for token, i in vocab.items()}
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UserError(f"{source}: the vocabulary has a token that is not in GPT-2's byte alphabet") from None
        if len(id_vocab) != len(vocab):
            raise UserError(f"{source}: the vocabulary gives the same id to two tokens")
        id_of = {token: i for i, token in id_vocab.items()}
        id_merges = []
        for rank, pair in enumerate(merges):
            try:
                left, right = pair
                id_merges.append((id_of[str_to_token(left)], id_of[str_to_token(right)]))
            except (KeyError, TypeError, ValueError):
                problem = f"merge #{rank} {pair!r} is not a pair of tokens from the vocabulary"
                raise UserError(f"{source}: {problem}") from None
        if not isinstance(special_tokens, dict) or not all(isinstance(i, int) for i in special_tokens.values()):
            raise UserError(f"{source}: special_tokens must map strings to ids")
        try:
            return cls(id_vocab, id_merges, special_tokens, pattern)
        except UserError as err:
            raise UserError(f"{source}: {err}") from None


# ---------------------------------------------------------------------------------------------------
# Loading a saved tokenizer of either kind.


def tokenizer_from_dict(data: dict, source: str = "tokenizer file") -> Tokenizer:
    """A tokenizer saved by this project, of either kind: its "type" field names the class."""
    kind = data.get("type")
    if kind == CharTokenizer.kind:
        return CharTokenizer.from_dict(data)
    if kind in ("bpe", "gpt2"):
        return BPETokenizer.from_dict(data, source=source)
    raise UserError(f"{source}: unknown tokenizer type {kind!r}")


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """A tokenizer file saved by this project (`Tokenizer.save`), of either kind."""
    return tokenizer_from_dict(read_json(path, "tokenizer file"), source=str(path))


# ---------------------------------------------------------------------------------------------------
# Training, step by step.


def _learn_merges(
    words: list[list[int]], counts: list[int], vocab: dict[int, bytes], target_size: int, verbose: bool
) -> list[tuple[int, int]]:
    """Merge the most frequent pair until `vocab` has `target_size` tokens; returns the merges in order.

    `words[w]` is a distinct pre-token as token ids and `counts[w]` how often it occurs in the text.
    `words` and `vocab` are updated in place. The heap holds (-count, left bytes, right bytes, pair):
    its smallest entry is the most frequent pair, ties broken by the pair's bytes. Each pair has one
    entry. A merge only lowers the counts of existing pairs (new pairs all contain the new token), so
    an entry whose count is out of date is an over-estimate: it is re-filed with its current count
    when it reaches the top, and the first entry popped with a current count is the true maximum.
    """
    pair_counts: dict[tuple[int, int], int] = {}  # pair -> occurrences in the text
    pair_words: dict[tuple[int, int], set[int]] = {}  # pair -> the words that contain it (or once did)
    for w, word in enumerate(words):
        for pair in pairwise(word):
            pair_counts[pair] = pair_counts.get(pair, 0) + counts[w]
            pair_words.setdefault(pair, set()).add(w)
    heap = [(-count, vocab[a], vocab[b], (a, b)) for (a, b), count in pair_counts.items()]
    heapq.heapify(heap)
    id_of = {token: i for i, token in vocab.items()}
    merges = []
    with tqdm(total=target_size - len(vocab), desc="BPE merges", unit="merge", disable=not verbose) as bar:
        while len(vocab) < target_size:
            pair, count = _most_frequent_pair(heap, pair_counts)
            if count < 2:
                break  # nothing repeats: every further merge would be arbitrary
            token = vocab[pair[0]] + vocab[pair[1]]
            if token in id_of:
                # Another merge already spelled these bytes ("a"+"bc" vs "ab"+"c"). One id per byte string
                # keeps the vocabulary unambiguous, so this pair is dropped (it has left the heap) instead.
                continue
            new_id = id_of[token] = len(vocab)
            vocab[new_id] = token
            merges.append(pair)
            for new_pair in _apply_merge(pair, new_id, words, counts, pair_counts, pair_words):
                a, b = new_pair
                heapq.heappush(heap, (-pair_counts[new_pair], vocab[a], vocab[b], new_pair))
            bar.update(1)
    return merges


def _most_frequent_pair(heap: list, pair_counts: dict) -> tuple[tuple[int, int] | None, int]:
    """Pop heap entries until one's count is current; return (pair, count), or (None, 0) if none is left."""
    while heap:
        neg_count, left, right, pair = heapq.heappop(heap)
        count = pair_counts.get(pair, 0)
        if count == -neg_count:
            return pair, count
        if count > 0:  # out of date: file it again under its current count
            heapq.heappush(heap, (-count, left, right, pair))
    return None, 0


def _apply_merge(
    pair: tuple[int, int],
    new_id: int,
    words: list[list[int]],
    counts: list[int],
    pair_counts: dict[tuple[int, int], int],
    pair_words: dict[tuple[int, int], set[int]],
) -> set[tuple[int, int]]:
    """Merge `pair` into `new_id` in every word that contains it, and re-count the pairs of those words only.

    Returns the pairs that contain `new_id`: they are new, so they still have to go on the heap.
    """
    new_pairs = set()
    for w in pair_words.pop(pair):
        word = words[w]
        merged = merge_pair(word, pair, new_id)
        if len(merged) == len(word):
            continue  # an earlier merge already took this word's pair apart
        count = counts[w]
        for old in pairwise(word):
            pair_counts[old] -= count
        for new in pairwise(merged):
            pair_counts[new] = pair_counts.get(new, 0) + count
            pair_words.setdefault(new, set()).add(w)
            if new_id in new:
                new_pairs.add(new)
        words[w] = merged
    return new_pairs


def _split_on_specials(text: str, specials) -> list[str]:
    """[ordinary, special, ordinary, special, ..., ordinary]: the special-token strings are the odd items."""
    if not specials:
        return [text]
    longest_first = sorted(specials, key=len, reverse=True)  # so "<|a|>b" wins over "<|a|>"
    return regex.split("(" + "|".join(regex.escape(s) for s in longest_first) + ")", text)
