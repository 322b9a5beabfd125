"""Tests for src/bpe.py: worked examples, the trainer's rules, and exactness against two oracles.

Oracles (test-only, never imported by src/):
- tiktoken: an `Encoding` built from the byte strings our trainer produced (rank = id) must give the
  same ids as our encoder, on generated text in many scripts and with special tokens.
- Hugging Face `tokenizers`: a byte-level BPE trained by that library and saved as vocab.json +
  merges.txt (GPT-2's layout) must load through `read_tokenizer_files` and encode exactly like the library does,
  in both the Hugging Face layout and the OpenAI one (encoder.json + vocab.bpe).

Everything is offline: the corpus is generated here from a fixed seed.
"""

from __future__ import annotations

import json
import random
import sys
import time
import types

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import src.engine.hub
from src.bpe import (
    GPT2_PATTERN,
    BPETokenizer,
    merge_pair,
    pretokenize,
)
from src.engine.checkpoint import gpt2_tokenizer, load_tokenizer
from src.engine.errors import UserError
from src.engine.gpt2_files import BYTE_TO_UNICODE, read_tokenizer_files
from src.engine.hub import gpt2_tokenizer_folder
from src.engine.textstream import StreamDecoder
from src.tokenizer import CharTokenizer

EOT = "<|endoftext|>"
PAD = "<|pad|>"


def from_gpt2(folder) -> BPETokenizer:
    """GPT-2's tokenizer files in `folder` (either layout) as our tokenizer (what `BPETokenizer.from_gpt2` was)."""
    vocab, merges, specials = read_tokenizer_files(folder)
    return BPETokenizer.from_token_strings(vocab, merges, specials, GPT2_PATTERN, str(folder))

# Text that trips tokenizers: scripts with multi-byte UTF-8, combining marks, emoji sequences, odd
# whitespace, contractions in all cases, digits, control characters.
# fmt: off
TRICKY = [
    "Hello", "world", "the", "don't", "it's", "WE'LL", "I'm", "they've", "you'd", "O'Neil", "’s",
    "naïve", "cafe\u0301", "Straße", "привет", "λόγος", "مرحبا", "שלום",
    "नमस्ते", "हिन्दी", "क्षत्रिय", "कृष्ण", "தமிழ்",
    "東京", "中文字", "日本語です", "한국어", "ｆｕｌｌ",
    "😀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "❤️", "🤖🤖",
    "2024", "3.14", "1,000,000", "٣٤", "½",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \r\n", "\u00a0", "\u3000", "\u2028", "\x0b", "\x0c",
    "\x00", "\x07", "\x1b[0m", "\x7f", "\x85", "\x1c",
    "?", " ?", "!!", "...", "--", "'", "''", "<|", "|>", "@#$%",
]
# fmt: on
SEPARATORS = [" ", " ", " ", "  ", "\n", ", ", ". ", "\r\n", "\t", ""]


def generated_text(n_words: int, seed: int) -> str:
    """Deterministic pseudo-text: tricky pieces and made-up words, with a skewed (Zipf-like) frequency."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "an", "the", "ing", "er", "ou", "ch", "qu", "東", "語", "न", "्", "é", "😀"]
    made_up = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(300)]
    vocabulary = TRICKY + made_up
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    rng.shuffle(vocabulary)
    words = rng.choices(vocabulary, weights=weights, k=n_words)
    return "".join(word + rng.choice(SEPARATORS) for word in words)


CORPUS = generated_text(12_000, seed=0)


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS + "a" * 3000 + " " + "ab" * 1000, 1000, special_tokens=[EOT, PAD])


def tiktoken_twin(tokenizer: BPETokenizer) -> tiktoken.Encoding:
    """tiktoken with exactly our vocabulary: token bytes -> rank, where rank = our id."""
    return tiktoken.Encoding(
        name="ours",
        pat_str=GPT2_PATTERN,
        mergeable_ranks={token: i for i, token in tokenizer.vocab.items()},
        special_tokens=tokenizer.special_tokens,
    )


@pytest.fixture(scope="module")
def tk(tok) -> tiktoken.Encoding:
    return tiktoken_twin(tok)


# Hypothesis text: any assigned Unicode character (no lone surrogates, which UTF-8 cannot hold), tricky
# pieces, and concatenations of tricky pieces and separators (so that the merges really get used).
# Unassigned code points are left out: each regex engine has its own Unicode version, and one that
# Unicode assigned recently (a letter to `regex`, unassigned to an older table) is split differently.
any_char_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cn"]), max_size=80)
piece_text = st.lists(st.sampled_from(TRICKY + SEPARATORS + ["aaaa", "abab"]), max_size=30).map("".join)
texts = st.one_of(any_char_text, piece_text, st.tuples(piece_text, any_char_text, piece_text).map("".join))
specials_or_near_misses = st.sampled_from([EOT, PAD, "<|endoftext", "<|pad|><|pad|>"])
with_specials = st.lists(st.one_of(texts, specials_or_near_misses), max_size=6).map("".join)

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- worked examples ------------------------------------------------------------------------------


def test_wikipedia_example():
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=256 + 3, pattern=None)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]  # aa -> Z, ab -> Y, ZY -> X
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode([258, 100, 258, 97, 99]) == "aaabdaaabac"


def test_overlapping_pair_merges_leftmost_first():
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"aa"}
    tok = BPETokenizer(vocab, [(97, 97)], pattern=None)
    assert tok.encode("aaa") == [256, 97]
    assert tok.encode("aaaa") == [256, 256]
    assert merge_pair([97, 97, 97], (97, 97), 256) == [256, 97]
    trained = BPETokenizer.train("aaa", vocab_size=257, pattern=None)
    assert trained.merges == [(97, 97)] and trained.encode("aaa") == [256, 97]


def test_byte_alphabet_matches_gpt2():
    from tokenizers.pre_tokenizers import ByteLevel

    assert sorted(BYTE_TO_UNICODE.values()) == sorted(ByteLevel.alphabet())  # HF's copy of GPT-2's alphabet
    assert [ord(BYTE_TO_UNICODE[byte]) for byte in range(33)] == list(range(256, 256 + 33))  # bytes 0..32
    assert BYTE_TO_UNICODE[ord(" ")] == "Ġ" and BYTE_TO_UNICODE[ord("\n")] == "Ċ" and BYTE_TO_UNICODE[ord("a")] == "a"
    assert all(c.isprintable() and not c.isspace() for c in BYTE_TO_UNICODE.values())


def test_pretokenize_follows_gpt2():
    assert pretokenize("Hello world's  end!!\n") == ["Hello", " world", "'s", " ", " end", "!!", "\n"]
    assert pretokenize("abc", pattern=None) == ["abc"] and pretokenize("", pattern=None) == []


# --- the trainer ----------------------------------------------------------------------------------


def test_ties_go_to_the_smallest_byte_pair():
    # Pre-tokens " cd" and " ab" twice each: four pairs count 2; (b" ", b"a") is the smallest, whatever comes first.
    assert BPETokenizer.train(" cd ab cd ab", 257).merges == [(32, 97)]
    assert BPETokenizer.train(" ab cd ab cd", 257).merges == [(32, 97)]


@SETTINGS
@pytest.mark.filterwarnings("ignore:BPE training stopped")
@given(st.lists(st.text("abcd", min_size=1, max_size=6), min_size=1, max_size=15), st.randoms())
def test_same_merges_whatever_the_order_of_the_words(words, rng):
    # Every pre-token is " word"; repeating each word makes many pairs tie on their count.
    pieces = [" " + word for word in words for _ in range(2)]
    shuffled = rng.sample(pieces, len(pieces))
    first = BPETokenizer.train("".join(pieces), 300)
    second = BPETokenizer.train("".join(shuffled), 300)
    assert first.merges == second.merges


def test_trainer_counts_pairs_like_a_full_rescan():
    # Slow reference: recount every pair of the whole (pre-tokenized) text before each merge.
    text = generated_text(1500, seed=3)
    tok = BPETokenizer.train(text, 256 + 60)
    words = [list(piece.encode("utf-8")) for piece in pretokenize(text)]
    for rank, pair in enumerate(tok.merges):
        counts = {}
        for word in words:
            for p in zip(word, word[1:], strict=False):
                counts[p] = counts.get(p, 0) + 1
        best = max(counts.values())
        tied = [p for p, c in counts.items() if c == best]
        assert pair == min(tied, key=lambda p: (tok.vocab[p[0]], tok.vocab[p[1]])), f"merge #{rank}"
        words = [merge_pair(word, pair, 256 + rank) for word in words]


def test_stops_with_a_warning_when_no_pair_repeats():
    with pytest.warns(UserWarning, match="no pair of adjacent tokens occurs twice"):
        tok = BPETokenizer.train("abab xyz", 300)
    assert tok.merges == [(97, 98)] and tok.vocab_size == 257


def test_vocab_size_must_leave_room_for_bytes_and_specials():
    with pytest.raises(UserError, match="too small"):
        BPETokenizer.train("hello", 256, special_tokens=[EOT])
    with pytest.raises(UserError, match="distinct"):
        BPETokenizer.train("hello", 300, special_tokens=[EOT, EOT])


def test_special_tokens_given_as_a_set_get_sorted_ids():
    tok = BPETokenizer.train("abc", 259, special_tokens={"<|b|>", "<|c|>", "<|a|>"})
    assert tok.special_tokens == {"<|a|>": 256, "<|b|>": 257, "<|c|>": 258}
    assert tok.eot_token_id is None


def test_special_tokens_come_after_the_merges_and_are_not_trained_on():
    text = f"hello world{EOT}hello world{EOT}" * 20
    tok = BPETokenizer.train(text, 264, special_tokens=[EOT, PAD])
    assert tok.special_tokens == {EOT: 262, PAD: 263}
    assert len(tok.merges) == 6 and tok.vocab_size == 264
    assert not any(b"<|" in token or b"|>" in token for token in tok.vocab.values())


def test_trained_tokenizer_has_the_requested_size(tok):
    assert tok.vocab_size == 1000 and len(tok.merges) == 1000 - 256 - 2
    assert tok.kind == "bpe" and tok.eot_token_id == tok.special_tokens[EOT] == 998
    assert max(len(token) for token in tok.vocab.values()) > 4  # real merges, across multi-byte characters


def test_encoding_splits_text_like_training(tok):
    # Tokens never cross pre-token boundaries: encoding the text = encoding each pre-token on its own.
    text = generated_text(500, seed=7)
    assert tok.encode(text) == [i for piece in pretokenize(text) for i in tok.encode(piece)]


# --- exactness against tiktoken -------------------------------------------------------------------


@SETTINGS
@given(texts)
def test_same_ids_as_tiktoken(tok, tk, text):
    assert tok.encode_ordinary(text) == tk.encode_ordinary(text)


def test_same_ids_as_tiktoken_on_long_text(tok, tk):
    for text in (CORPUS, generated_text(20_000, seed=1), "".join(TRICKY) * 20):
        assert tok.encode(text, allowed_special="none") == tk.encode_ordinary(text)


def test_lone_surrogates_become_replacement_characters_like_tiktoken(tok, tk):
    text = "a\ud800b \udcff😀"
    assert tok.encode(text) == tk.encode_ordinary(text)
    assert tok.decode(tok.encode(text)) == "a\ufffdb \ufffd😀"


# Our allowed_special values and the tiktoken arguments that mean the same.
TIKTOKEN_SPECIAL_ARGS = [
    ("all", {"allowed_special": "all"}),
    ("none", {"disallowed_special": ()}),
    ("none_raise", {}),
    ({EOT}, {"allowed_special": {EOT}}),
    ({PAD}, {"allowed_special": {PAD}}),
]


@SETTINGS
@given(with_specials)
def test_special_tokens_like_tiktoken(tok, tk, text):
    for allowed, tiktoken_args in TIKTOKEN_SPECIAL_ARGS:
        try:
            expected = tk.encode(text, **tiktoken_args)
        except ValueError:  # tiktoken refuses a special token that is not allowed: so must we
            with pytest.raises(UserError, match="contains the special token"):
                tok.encode(text, allowed_special=allowed)
        else:
            assert tok.encode(text, allowed_special=allowed) == expected, allowed


def test_special_tokens_are_opt_in(tok):
    text = f"one{EOT}two"
    with pytest.raises(UserError, match="allowed_special"):
        tok.encode(text)
    assert tok.encode(text, allowed_special="all") == tok.encode("one") + [tok.special_tokens[EOT]] + tok.encode("two")
    assert tok.special_tokens[EOT] not in tok.encode(text, allowed_special="none")
    with pytest.raises(UserError, match="contains the special token"):
        tok.encode(f"{PAD}{EOT}", allowed_special={EOT})
    with pytest.raises(UserError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(UserError, match="allowed_special must be"):
        tok.encode(text, allowed_special="everything")
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_the_longest_special_token_wins():
    tok = BPETokenizer.train("x y", 258, special_tokens=["<|a|>", "<|a|>!"])
    assert tok.encode("x<|a|>!y<|a|>", allowed_special="all") == [ord("x"), 257, ord("y"), 256]


# --- exactness against Hugging Face tokenizers, and GPT-2's file layouts ---------------------------


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> types.SimpleNamespace:
    """A byte-level BPE trained by HF `tokenizers` (GPT-2's setup), saved in both of GPT-2's layouts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    library = Tokenizer(models.BPE())
    library.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    library.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1200,
        special_tokens=[EOT],  # HF puts it first: id 0, unlike GPT-2's 50256
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    library.train_from_iterator([CORPUS], trainer)
    hf_dir = tmp_path_factory.mktemp("hf_layout")
    library.model.save(str(hf_dir))  # vocab.json + merges.txt

    openai_dir = tmp_path_factory.mktemp("openai_layout")  # the same files, the way OpenAI released GPT-2's
    (openai_dir / "encoder.json").write_text((hf_dir / "vocab.json").read_text(encoding="utf-8"), encoding="utf-8")
    merge_lines = (hf_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    merge_lines = [line for line in merge_lines if line and not line.startswith("#version")]
    (openai_dir / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merge_lines) + "\n", encoding="utf-8")
    return types.SimpleNamespace(
        library=library,
        hf_dir=hf_dir,
        openai_dir=openai_dir,
        ours=from_gpt2(hf_dir),
        ours_openai=from_gpt2(openai_dir),
    )


@SETTINGS
@given(with_specials)
def test_same_ids_as_hf_tokenizers(hf, text):
    expected = hf.library.encode(text).ids  # HF always splits out its special tokens
    assert hf.ours.encode(text, allowed_special="all") == expected
    assert hf.ours_openai.encode(text, allowed_special="all") == expected


def test_both_gpt2_layouts_load_the_same_tokenizer(hf):
    assert hf.ours.special_tokens == {EOT: hf.library.token_to_id(EOT)} == {EOT: 0}
    assert hf.ours.vocab == hf.ours_openai.vocab and hf.ours.merges == hf.ours_openai.merges
    assert hf.ours.vocab_size == hf.library.get_vocab_size()
    text = generated_text(3000, seed=5) + EOT + "end"
    ids = hf.ours.encode(text, allowed_special="all")
    assert ids == hf.library.encode(text).ids
    assert hf.ours.decode(ids) == hf.library.decode(ids, skip_special_tokens=False) == text


def test_from_gpt2_needs_the_files(tmp_path):
    with pytest.raises(UserError, match="vocab.json \\+ merges.txt"):
        from_gpt2(tmp_path)
    (tmp_path / "vocab.json").write_text('{"a": 0}', encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(UserError, match="line 2"):
        from_gpt2(tmp_path)


def test_gpt2_files_offline_says_which_files_to_put_where(tmp_path, monkeypatch):
    monkeypatch.delenv("GPT2_TOKENIZER_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(UserError) as caught:
        gpt2_tokenizer_folder(tmp_path)
    message = str(caught.value)
    folder = str(tmp_path / "gpt2")  # the cache folder's gpt2/
    for needed in ("vocab.json", "merges.txt", "encoder.json", "vocab.bpe", folder, "GPT2_TOKENIZER_DIR"):
        assert needed in message
    assert "not installed" in message


def test_gpt2_files_when_the_download_fails(tmp_path, monkeypatch):
    calls = []

    def offline(*args, **kwargs):
        calls.append(kwargs)
        raise OSError("no network")

    monkeypatch.delenv("GPT2_TOKENIZER_DIR", raising=False)
    hub = types.ModuleType("huggingface_hub")
    hub.hf_hub_download = offline
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    # The Hub answers, but the download fails.
    monkeypatch.setattr(src.engine.hub, "hub_reachable", lambda *a, **k: True)
    with pytest.raises(UserError, match="failed \\(OSError\\).*vocab.json and merges.txt"):
        gpt2_tokenizer(tmp_path)
    assert calls[0] == {"local_files_only": True} and {} in calls  # the Hub cache first, then a real download
    # The Hub cannot be reached: one look into the Hub cache, then the error at once, with no download attempt.
    calls.clear()
    monkeypatch.setattr(src.engine.hub, "hub_reachable", lambda *a, **k: False)
    with pytest.raises(UserError, match="vocab.json and merges.txt.*cannot be reached"):
        gpt2_tokenizer(tmp_path)
    assert calls == [{"local_files_only": True}]
    assert not (tmp_path / "gpt2").exists()


def test_gpt2_files_found_in_a_folder_or_downloaded_into_it(hf, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    monkeypatch.delenv("GPT2_TOKENIZER_DIR", raising=False)
    cache = tmp_path / "cache"  # GPT-2's files in the cache folder's gpt2/
    (cache / "gpt2").mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        (cache / "gpt2" / name).write_bytes((hf.hf_dir / name).read_bytes())
    assert gpt2_tokenizer_folder(cache) == cache / "gpt2"
    assert gpt2_tokenizer(cache).encode("Hello world") == hf.library.encode("Hello world").ids
    monkeypatch.setenv("GPT2_TOKENIZER_DIR", str(hf.openai_dir))  # wins over the cache folder
    assert gpt2_tokenizer_folder(cache) == hf.openai_dir
    assert gpt2_tokenizer(tmp_path / "elsewhere").encode("Hello world") == hf.library.encode("Hello world").ids
    monkeypatch.delenv("GPT2_TOKENIZER_DIR")

    def hf_hub_download(repo, name, **kwargs):  # a "download" that copies from the HF-layout folder
        if kwargs.get("local_files_only"):
            raise FileNotFoundError(name)  # not in the Hub cache yet
        return str(hf.hf_dir / name)

    hub = types.ModuleType("huggingface_hub")
    hub.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setattr(src.engine.hub, "hub_reachable", lambda *a, **k: True)
    target = tmp_path / "gpt2"
    assert gpt2_tokenizer_folder(tmp_path) == target
    assert (target / "merges.txt").read_bytes() == (hf.hf_dir / "merges.txt").read_bytes()


# --- decoding -------------------------------------------------------------------------------------

BYTES_ONLY = BPETokenizer({i: bytes([i]) for i in range(256)}, [])  # every byte is its own token


def stream(tokenizer, ids) -> tuple[list[str], str]:
    """What a StreamDecoder returns for each id, and at the end."""
    decoder = StreamDecoder(tokenizer)
    pushed = [decoder.push(i) for i in ids]
    return pushed, decoder.flush()


@SETTINGS
@given(with_specials)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text
    assert BYTES_ONLY.decode(BYTES_ONLY.encode(text, allowed_special="none")) == text


@SETTINGS
@given(texts)
def test_streaming_decode_equals_full_decode(tok, text):
    for tokenizer in (tok, BYTES_ONLY):
        ids = tokenizer.encode(text, allowed_special="none")
        pushed, rest = stream(tokenizer, ids)
        assert "".join(pushed) + rest == text
        if "\ufffd" not in text:
            assert "\ufffd" not in "".join(pushed)


def test_streaming_holds_back_a_character_split_across_tokens():
    ids = BYTES_ONLY.encode("a😀b")
    assert len(ids) == 6  # the emoji is 4 byte tokens
    assert "\ufffd" in "".join(BYTES_ONLY.decode([i]) for i in ids)  # the problem: one token at a time
    assert stream(BYTES_ONLY, ids) == (["a", "", "", "", "😀", "b"], "")
    assert stream(BYTES_ONLY, ids[:3]) == (["a", "", ""], "\ufffd")  # cut off: replaced only at the end


@SETTINGS
@given(st.lists(st.integers(0, 999), max_size=40))
def test_streaming_matches_decode_on_any_ids(tok, ids):
    # Random ids are often not valid UTF-8: both ways must replace the same bytes.
    pushed, rest = stream(tok, ids)
    assert "".join(pushed) + rest == tok.decode(ids) == tok.decode_bytes(ids).decode("utf-8", errors="replace")


def test_streaming_works_with_the_char_tokenizer():
    chars = CharTokenizer.from_text("héllo wörld")
    pushed, rest = stream(chars, chars.encode("wörld hé"))
    assert "".join(pushed) == "wörld hé" and rest == ""


def test_unknown_ids_raise(tok):
    for bad in (tok.vocab_size, -1, 10**9):
        with pytest.raises(UserError, match=f"token id {bad} is not in the tokenizer's vocabulary"):
            tok.decode([65, bad])
    with pytest.raises(UserError, match="is not in"):
        StreamDecoder(tok).push(tok.vocab_size)


def test_decode_accepts_a_tensor(tok):
    import torch

    ids = tok.encode("Hello wörld 😀")
    assert tok.decode(torch.tensor(ids)) == "Hello wörld 😀"


# --- files ----------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tok, tmp_path):
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert (data["type"], data["version"], data["pattern"]) == ("bpe", 1, GPT2_PATTERN)
    assert data["special_tokens"] == {EOT: 998, PAD: 999}
    assert all(isinstance(pair, list) and len(pair) == 2 for pair in data["merges"])
    assert data == tok.to_dict()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert sum(line.startswith("  [") for line in lines) == len(tok.merges)  # one merge per line, readable
    for loaded in (BPETokenizer.load(path), load_tokenizer(path)):
        assert isinstance(loaded, BPETokenizer)
        assert (loaded.vocab, loaded.merges, loaded.special_tokens) == (tok.vocab, tok.merges, tok.special_tokens)
        assert loaded.encode(CORPUS[:5000]) == tok.encode(CORPUS[:5000])


def test_a_tokenizer_loaded_from_gpt2_files_saves_and_loads_identically(hf, tmp_path):
    path = tmp_path / "gpt2.json"
    hf.ours.save(path)
    loaded = load_tokenizer(path)
    assert (loaded.vocab, loaded.merges, loaded.special_tokens) == (hf.ours.vocab, hf.ours.merges, {EOT: 0})
    text = f"{CORPUS[:3000]}{EOT}"
    assert loaded.encode(text, allowed_special="all") == hf.library.encode(text).ids


def test_pattern_none_round_trips(tmp_path):
    tok = BPETokenizer.train("aaabdaaabac", 259, pattern=None)
    tok.save(tmp_path / "t.json")
    loaded = BPETokenizer.load(tmp_path / "t.json")
    assert loaded.pattern is None and loaded.encode("aaabdaaabac") == [258, 100, 258, 97, 99]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"version": 2}, "version-2 BPE tokenizer file; this code reads version 1"),
        ({"type": "wordpiece"}, "not a BPE tokenizer file"),
        ({"merges": None}, "missing"),
        ({"merges": [["a"]]}, "merge #0"),
        ({"merges": [["a", "b"], ["a", "b"]]}, "listed twice"),
        ({"merges": [["b", "a"]]}, "not in the vocabulary"),
        ({"vocab": {"a": 0}, "merges": []}, "lacks 255 of the 256 single-byte tokens"),
        ({"vocab": {"☃": 0}, "merges": []}, "not in GPT-2's byte alphabet"),
        ({"pattern": "(unclosed"}, "invalid pre-tokenization pattern"),
        ({"pattern": 5}, "pattern must be a regular expression"),
        ({"pattern": ["a"]}, "pattern must be a regular expression"),
        ({"merges": "ab"}, "merges a list of pairs"),
        ({"vocab": ["a"]}, "vocab must be an object"),
        ({"special_tokens": {EOT: 97}}, "special token ids must be unique"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, change, message):
    data = json.loads(BPETokenizer.train("aaabdaaabac", 259, pattern=None).to_json())
    data.update(change)
    if data["merges"] is None:
        del data["merges"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(UserError, match=message):
        BPETokenizer.load(path)


def test_type_gpt2_files_load_too(tmp_path):
    data = json.loads(BPETokenizer.train("aaabdaaabac", 259, pattern=None).to_json())
    data["type"] = "gpt2"
    (tmp_path / "t.json").write_text(json.dumps(data), encoding="utf-8")
    assert load_tokenizer(tmp_path / "t.json").encode("aaab") == [258]


# --- pathological inputs --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["a" * 100_000, " " + "ab" * 50_000, "7" * 100_000])
def test_long_runs_encode_in_near_linear_time(tok, tk, text):
    assert len(pretokenize(text)) == 1  # one huge pre-token: the case that is quadratic if done naively
    start = time.perf_counter()
    ids = tok.encode(text)
    assert time.perf_counter() - start < 3.0
    assert tok.decode(ids) == text
    assert ids == tk.encode_ordinary(text)


def test_a_megabyte_line_without_spaces_encodes_in_near_linear_time(tok):
    text = "".join(random.Random(0).choices("abcdefghiknorst", k=1_000_000))
    assert len(pretokenize(text)) == 1
    start = time.perf_counter()
    ids = tok.encode(text)
    assert time.perf_counter() - start < 10.0  # ~1 s on a laptop; a quadratic merge loop takes hours
    assert len(ids) < len(text) and tok.decode(ids) == text
