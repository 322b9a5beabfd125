"""Training with a subword tokenizer, end to end: `--tokenizer bpe` and `--tokenizer gpt2`.

What is checked here, beyond the tokenizer itself (that is `test_bpe.py`):
- a BPE tokenizer is learned from the *training split only* and saved with the checkpoint, and
  `src/sample.py` can sample from that checkpoint;
- token files (a 32-byte header, then the ids) round-trip, refuse damaged files with a `UserError`, and the
  token cache reuses, separates and repairs its files;
- `--tokenizer gpt2` trains from local GPT-2-format files and fails with one clear line without them;
- bits per byte / per character in the metrics agree with a recomputation from the data;
- a folder of documents is joined with "<|endoftext|>" (subword tokenizers) or a blank line (char).

Everything is offline and small. Every run, in-process or a subprocess, gets a cache folder (`cache_dir`,
`--cache-dir`) inside `tmp_path`, so token files never land in a shared cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
import subprocess
import sys

import numpy as np
import pytest

import src.train
from src.bpe import ENDOFTEXT, GPT2_PATTERN, BPETokenizer
from src.dataloader import (
    Data,
    cached_tokens,
    prepare_data,
    read_token_file,
    token_array,
    train_val_split,
    write_token_file,
)
from src.engine.checkpoint import load_pretrained, read_training
from src.engine.config import TrainConfig
from src.engine.errors import UserError
from src.engine.gpt2_files import read_tokenizer_files
from src.tokenizer import CharTokenizer

LN2 = math.log(2)

VOCAB = (
    "the a and of to in is it that was he she for on are with as his her they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each which do their time if "
    "will way about many then them write would like so these long make thing see him two has look more day could "
    "go come did number sound no most people my over know water than call first who may down side been now find "
    "king queen night love heart sword crown"
).split()
ACCENTED = ["café", "naïve", "señor", "über", "déjà", "façade"]  # 2-byte UTF-8 characters: bytes != chars

# Letters that never occur in `english(...)` (checked in the test that relies on it).
UNSEEN_WORD = " zxjzx"


def english(n_chars: int, seed: int, extra: tuple[str, ...] = ()) -> str:
    """Deterministic English-like text of exactly `n_chars` characters (ASCII unless `extra` adds words)."""
    rng = random.Random(seed)
    words = VOCAB + list(extra) * 8  # `extra` words are frequent enough to show up everywhere
    out, length = [], 0
    while length < n_chars:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 10)))
        sentence = sentence[0].upper() + sentence[1:] + rng.choice(".,!?") + rng.choice([" ", "\n"])
        out.append(sentence)
        length += len(sentence)
    return "".join(out)[:n_chars]


TINY = dict(
    n_layer=1, n_head=2, d_model=32, block_size=16, batch_size=4, max_iters=4, eval_interval=2, eval_iters=2,
    log_interval=1, warmup_iters=2, sample_tokens=10, peak_flops=1e12, device="cpu", dtype="float32",
    compile="off", seed=1234,
)
TINY_FLAGS = [
    "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "4",
    "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "2", "--sample-tokens", "10",
    "--peak-flops", "1e12", "--warmup-iters", "2", "--device", "cpu", "--dtype", "float32", "--seed", "1234",
]


def tiny_cfg(data, out_dir=None, **overrides) -> TrainConfig:
    if "cache_dir" in overrides:
        overrides["cache_dir"] = str(overrides["cache_dir"])  # a path, as parse_args would give it
    return TrainConfig(**{**TINY, "data": str(data), "out_dir": str(out_dir or "unused"), **overrides})


def prepare(cfg: TrainConfig) -> Data:
    """Step 1 of `train`: the data of a run with these settings (GPT-2's tokenizer for --tokenizer gpt2)."""
    ready_made = src.train.ready_made_tokenizer(cfg)
    return prepare_data(cfg.data, cfg.block_size, cfg.cache_dir, ready_made, cfg.tokenizer, cfg.vocab_size)


def from_gpt2(folder) -> BPETokenizer:
    """GPT-2's tokenizer files in `folder` as our tokenizer, read directly (not through the cache lookup)."""
    vocab, merges, specials = read_tokenizer_files(folder)
    return BPETokenizer.from_token_strings(vocab, merges, specials, GPT2_PATTERN, str(folder))


def read_metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def eval_rows(out_dir) -> list[dict]:
    return [row for row in read_metrics(out_dir) if row.get("event") == "eval"]


def cache_key(text: str, tokenizer) -> str:
    """The file name `cached_tokens` uses (a hash of the text and the tokenizer)."""
    return hashlib.sha256(text.encode("utf-8") + tokenizer.to_json().encode("utf-8")).hexdigest()[:24] + ".tokens"


@pytest.fixture
def token_cache(tmp_path):
    """The folder the token files land in, for a run with `cache_dir=token_cache.parent` (inside tmp_path)."""
    return tmp_path / "cache" / "tokens"


@pytest.fixture
def write(tmp_path):
    """write("name.txt", text) -> the path of a new UTF-8 file under tmp_path."""

    def make(name: str, text: str):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return make


class CountingEncode:
    """Wraps a tokenizer class's `encode` to count the calls (monkeypatched onto the class)."""

    def __init__(self, monkeypatch, cls):
        self.calls = 0
        original = cls.encode

        def encode(tokenizer, *args, **kwargs):
            self.calls += 1
            return original(tokenizer, *args, **kwargs)

        monkeypatch.setattr(cls, "encode", encode)


# --- --tokenizer bpe, end to end ----------------------------------------------------------------------------


def test_bpe_trains_end_to_end_saves_its_tokenizer_and_sample_py_uses_it(tmp_path, write, run_cli):
    data = write("input.txt", english(5000, seed=11))
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    proc = run_cli("src/train.py", "--data", data, "--out-dir", out, "--tokenizer", "bpe", "--vocab-size", "300",
                   "--cache-dir", cache, *TINY_FLAGS)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "bpe tokenizer with 300 tokens" in proc.stdout
    done = [line for line in proc.stdout.splitlines() if line.startswith("done in")]
    assert len(done) == 1 and "bits/byte" in done[0], proc.stdout

    saved = json.loads((out / "scratch_tokenizer.json").read_text(encoding="utf-8"))
    assert saved["type"] == "bpe"
    assert saved["special_tokens"] == {ENDOFTEXT: 299}  # the special token is counted in the 300
    assert len(saved["vocab"]) + len(saved["special_tokens"]) == 300
    assert len(saved["merges"]) == 300 - 256 - 1
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 300

    model, tokenizer = load_pretrained(out)
    training = read_training(out)
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 300
    assert model.config.vocab_size == 300 and training["config"]["tokenizer"] == "bpe"
    # The saved tokenizer is the one learned from the training split (same merges, same ids).
    train_text, _ = train_val_split(ENDOFTEXT.join([data.read_text(encoding="utf-8")]))
    assert tokenizer.to_dict() == BPETokenizer.train(train_text, 300, special_tokens=[ENDOFTEXT]).to_dict()

    prompt = "The king"
    sample = run_cli("src/sample.py", "--out-dir", out, "--prompt", prompt, "--max-new-tokens", "10")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith(prompt)
    assert "Traceback" not in sample.stderr
    assert sample.stdout.startswith(prompt) and sample.stdout.endswith("\n")
    continuation = sample.stdout[len(prompt):-1]
    assert continuation  # it generated something
    # At most 10 tokens of this vocabulary (a byte that is not valid UTF-8 prints as one U+FFFD).
    assert len(continuation) <= 10 * max(len(token) for token in tokenizer.vocab.values())
    # The run cached its tokens in --cache-dir: exactly the two splits, under the keys of the saved tokenizer.
    parts = train_val_split(ENDOFTEXT.join([data.read_text(encoding="utf-8")]))
    assert sorted(p.name for p in (cache / "tokens").iterdir()) == sorted(cache_key(part, tokenizer) for part in parts)


def test_bpe_is_learned_from_the_training_split_only(write, token_cache):
    # The last 10% of the text (the validation split) is one made-up word, repeated: on the full text it
    # would be the most frequent word and become a single token; the training split never contains it.
    train_part = english(8100, seed=3)
    val_part = UNSEEN_WORD * 150
    assert not set(UNSEEN_WORD.strip()) & set(train_part)
    text = train_part + val_part
    assert train_val_split(text) == (train_part, val_part)  # the cut lands exactly between the two

    data = prepare(tiny_cfg(write("t.txt", text), tokenizer="bpe", vocab_size=300, cache_dir=token_cache.parent))
    tokenizer, train_tokens, val_tokens = data.tokenizer, data.train, data.val
    assert tokenizer.vocab_size == 300
    unseen_bytes = set(UNSEEN_WORD.strip().encode())
    learned = [tokenizer.vocab[i] for i in range(256, len(tokenizer.vocab))]
    assert not [token for token in learned if set(token) & unseen_bytes]  # no merge touches its letters
    assert len(tokenizer.encode(UNSEEN_WORD)) == len(UNSEEN_WORD)  # one token per byte
    assert len(val_tokens) == len(val_part)  # the validation split stays bytes
    assert tokenizer.decode(val_tokens) == val_part and tokenizer.decode(train_tokens) == train_part

    # The control: learned from the whole text, the same word is a single token.
    leaky = BPETokenizer.train(text, 300, special_tokens=[ENDOFTEXT])
    assert len(leaky.encode(UNSEEN_WORD)) == 1
    assert UNSEEN_WORD.encode() in leaky.vocab.values()


# --- the token cache ------------------------------------------------------------------------------------------


def test_a_second_prepare_data_reads_the_cache_instead_of_encoding(write, token_cache, monkeypatch):
    counter = CountingEncode(monkeypatch, BPETokenizer)
    cfg = tiny_cfg(write("t.txt", english(4000, seed=5)), tokenizer="bpe", vocab_size=300,
                   cache_dir=token_cache.parent)
    first = prepare(cfg)
    tok1, train1, val1 = first.tokenizer, first.train, first.val
    assert counter.calls == 2  # the training and the validation split
    files = sorted(token_cache.glob("*.tokens"))
    assert len(files) == 2
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    second = prepare(cfg)
    tok2, train2, val2 = second.tokenizer, second.train, second.val
    assert counter.calls == 2  # nothing encoded again
    assert {f: f.stat().st_mtime_ns for f in token_cache.glob("*.tokens")} == mtimes
    assert tok2.to_json() == tok1.to_json()
    assert np.array_equal(train1, train2) and np.array_equal(val1, val2)
    assert train1.dtype == np.uint16
    assert (first.tokens_per_char, first.tokens_per_byte) == (second.tokens_per_char, second.tokens_per_byte)
    # ... and what the cache holds is what encoding gives.
    train_text, val_text = train_val_split(english(4000, seed=5))
    assert list(train2) == tok1.encode(train_text, allowed_special="all")
    assert list(val2) == tok1.encode(val_text, allowed_special="all")


def test_a_changed_text_or_vocab_size_gets_its_own_cache_files(write, token_cache):
    text = english(4000, seed=6)
    path = write("t.txt", text)
    train_a = prepare(tiny_cfg(path, tokenizer="bpe", vocab_size=300, cache_dir=token_cache.parent)).train
    first = set(token_cache.glob("*.tokens"))
    assert len(first) == 2

    path.write_text("Changed first words. " + text, encoding="utf-8")
    train_b = prepare(tiny_cfg(path, tokenizer="bpe", vocab_size=300, cache_dir=token_cache.parent)).train
    second = set(token_cache.glob("*.tokens"))
    assert first < second and len(second) == 4  # two new files, the old ones untouched
    assert not np.array_equal(train_a, train_b)

    path.write_text(text, encoding="utf-8")  # the first text again, with another vocabulary size
    third = prepare(tiny_cfg(path, tokenizer="bpe", vocab_size=280, cache_dir=token_cache.parent))
    tok_c, train_c = third.tokenizer, third.train
    assert tok_c.vocab_size == 280 and int(np.max(train_c)) < 280
    assert second < set(token_cache.glob("*.tokens")) and len(set(token_cache.glob("*.tokens"))) == 6


# --- token files ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ids", "vocab_size", "dtype", "itemsize"),
    [([0, 1, 255, 256, 65535, 7], 65536, np.uint16, 2), ([0, 1, 65535, 65536, 70000, 2**31 - 1], 2**31, np.int32, 4)],
)
def test_token_file_round_trip_and_header(tmp_path, ids, vocab_size, dtype, itemsize):
    tokens = token_array(ids, vocab_size)
    assert tokens.dtype == dtype
    path = tmp_path / "ids.tokens"
    write_token_file(path, tokens)
    raw = path.read_bytes()
    assert len(raw) == 32 + itemsize * len(ids)
    magic, version, size, count = struct.unpack("<8sIIQ", raw[:24])
    assert (magic, version, size, count) == (b"GPT2TOK\0", 1, itemsize, len(ids))
    assert raw[24:32] == bytes(8)
    back = read_token_file(path)
    assert back.dtype == np.dtype(dtype) and back.tolist() == ids


def test_ids_above_65535_are_stored_as_int32(tmp_path):
    assert token_array([65535], 65536).dtype == np.uint16  # the largest vocabulary that fits 16 bits
    assert token_array([65536], 65537).dtype == np.int32

    class Big:  # a tokenizer whose ids do not fit in 16 bits
        vocab_size = 70_001

        def encode(self, text, allowed_special=None):
            return [70_000 - ord(c) for c in text]

        def to_json(self):
            return '{"type": "big"}'

    tokens = cached_tokens("hello", Big(), tmp_path)
    assert tokens.tolist() == [70_000 - ord(c) for c in "hello"] and tokens.dtype == np.int32
    (file,) = tmp_path.glob("*.tokens")
    assert struct.unpack("<8sIIQ", file.read_bytes()[:24])[2] == 4


def _damage(path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:-3])
    elif how == "bad magic":
        path.write_bytes(b"NOTTOKEN" + raw[8:])
    elif how == "too short":
        path.write_bytes(raw[:10])
    elif how == "bad version":
        path.write_bytes(raw[:8] + struct.pack("<I", 99) + raw[12:])
    elif how == "extra bytes":
        path.write_bytes(raw + b"\0\0")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "match"),
    [("truncated", "truncated"), ("extra bytes", "truncated"), ("bad magic", "not a version-1 token file"),
     ("bad version", "not a version-1 token file"), ("too short", "too short")],
)
def test_damaged_token_files_raise_user_errors(tmp_path, how, match):
    path = tmp_path / "ids.tokens"
    write_token_file(path, token_array([5, 6, 7, 8], 300))
    _damage(path, how)
    with pytest.raises(UserError, match=match) as caught:
        read_token_file(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("how", ["truncated", "bad magic", "too short", "extra bytes"])
def test_cached_tokens_rebuilds_a_damaged_cache_file(tmp_path, monkeypatch, how):
    tokenizer = CharTokenizer.from_text("abcdefgh ")
    counter = CountingEncode(monkeypatch, CharTokenizer)
    text = "a bad cafe fed a dead bee " * 4
    first = cached_tokens(text, tokenizer, tmp_path)
    (path,) = tmp_path.glob("*.tokens")
    assert path.name == cache_key(text, tokenizer) and counter.calls == 1
    del first  # release the memory map before the file is damaged
    _damage(path, how)
    again = cached_tokens(text, tokenizer, tmp_path)
    assert counter.calls == 2  # the damaged file was not trusted
    assert again.tolist() == tokenizer.encode(text)
    assert read_token_file(path).tolist() == tokenizer.encode(text)  # and the file is whole again


# --- --tokenizer gpt2 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_format_files(tmp_path_factory):
    """vocab.json + merges.txt of a small byte-level BPE trained by Hugging Face `tokenizers`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    library = Tokenizer(models.BPE())
    library.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    library.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[ENDOFTEXT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    library.train_from_iterator([english(6000, seed=21)], trainer)
    folder = tmp_path_factory.mktemp("gpt2_files")
    library.model.save(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert ENDOFTEXT in vocab and (folder / "merges.txt").exists()
    return folder, library


def test_gpt2_tokenizer_from_local_files_trains_end_to_end(tmp_path, write, token_cache, monkeypatch,
                                                           gpt2_format_files):
    folder, library = gpt2_format_files
    monkeypatch.setenv("GPT2_TOKENIZER_DIR", str(folder))
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # no download may be attempted
    docs = [english(3000, seed=22), english(1500, seed=23)]
    data = tmp_path / "docs"
    write("docs/a.txt", docs[0])
    write("docs/b.txt", docs[1])
    out = tmp_path / "out"
    summary = src.train.train(tiny_cfg(data, out, tokenizer="gpt2", cache_dir=token_cache.parent))

    expected = from_gpt2(folder)
    eot = library.token_to_id(ENDOFTEXT)
    assert expected.eot_token_id == eot
    model, tokenizer = load_pretrained(out)
    assert tokenizer.vocab == expected.vocab and tokenizer.merges == expected.merges
    assert tokenizer.special_tokens == {ENDOFTEXT: eot}
    assert model.config.vocab_size == expected.vocab_size == library.get_vocab_size()
    assert math.isfinite(summary.val_loss) and summary.step == 4
    assert [row["step"] for row in eval_rows(out)] == [0, 2, 4]

    # The ids trained on are the library's own ids for the same text, with the document marker.
    prepared = prepare(tiny_cfg(data, tokenizer="gpt2", cache_dir=token_cache.parent))
    train_tokens, val_tokens = prepared.train, prepared.val
    train_text, val_text = train_val_split(ENDOFTEXT.join(docs))
    assert train_tokens.tolist() == library.encode(train_text).ids
    assert val_tokens.tolist() == library.encode(val_text).ids
    assert train_tokens.tolist().count(eot) == 1


def test_gpt2_tokenizer_without_files_offline_fails_with_one_line(tmp_path, write, cli_env, repo_root):
    data = write("input.txt", english(3000, seed=7))
    empty = tmp_path / "no_gpt2_files"
    empty.mkdir()
    env = {**cli_env, "GPT2_TOKENIZER_DIR": str(empty), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(
        [sys.executable, "src/train.py", "--data", str(data), "--out-dir", str(tmp_path / "out"), "--tokenizer",
         "gpt2", *TINY_FLAGS],
        cwd=repo_root, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needed in ("vocab.json", "merges.txt", str(empty), "GPT2_TOKENIZER_DIR"):
        assert needed in lines[0], lines[0]
    assert list(empty.iterdir()) == []  # nothing half-downloaded left behind
    assert not (tmp_path / "out" / "model.safetensors").exists()


# --- bits per byte and per character ----------------------------------------------------------------------------


def test_char_tokenizer_bits_per_byte_equal_bits_per_char_on_ascii(tmp_path, write, token_cache, capsys):
    text = english(4000, seed=8)
    assert text.isascii()
    out = tmp_path / "out"
    summary = src.train.train(tiny_cfg(write("t.txt", text), out, tokenizer="char", sample_tokens=0,
                                       cache_dir=token_cache.parent))
    stdout = capsys.readouterr().out
    last = [line for line in stdout.splitlines() if line.strip()][-1]
    assert "bits/byte" in last and f"{summary.val_bits_per_byte:.3f} bits/byte" in last, last

    expected = summary.val_loss / LN2
    assert summary.val_bits_per_byte == pytest.approx(expected, rel=1e-9)
    assert summary.val_bits_per_char == pytest.approx(expected, rel=1e-9)
    rows = eval_rows(out)
    assert [row["step"] for row in rows] == [0, 2, 4]
    for row in rows:
        assert row["val_bits_per_byte"] == pytest.approx(row["val_loss"] / LN2, rel=1e-6)
        assert row["val_bits_per_char"] == pytest.approx(row["val_loss"] / LN2, rel=1e-6)


def test_bpe_bits_per_byte_match_a_recomputation_from_the_data(tmp_path, write, token_cache):
    text = english(6000, seed=9, extra=tuple(ACCENTED))
    out = tmp_path / "out"
    summary = src.train.train(tiny_cfg(write("t.txt", text), out, tokenizer="bpe", vocab_size=300,
                                       cache_dir=token_cache.parent))

    tokenizer = load_pretrained(out)[1]
    _, val_text = train_val_split(text)  # one document: nothing joined
    n_bytes, n_chars = len(val_text.encode("utf-8")), len(val_text)
    assert n_bytes > n_chars  # the accented words make the two units differ
    n_tokens = len(tokenizer.encode(val_text, allowed_special="all"))
    assert n_tokens < n_chars  # BPE merged something

    per_byte, per_char = n_tokens / n_bytes, n_tokens / n_chars
    assert summary.val_bits_per_byte == pytest.approx(summary.val_loss / LN2 * per_byte, rel=1e-9)
    assert summary.val_bits_per_char == pytest.approx(summary.val_loss / LN2 * per_char, rel=1e-9)
    rows = eval_rows(out)
    assert len(rows) == 3
    for row in rows:
        assert row["val_bits_per_byte"] == pytest.approx(row["val_loss"] / LN2 * per_byte, rel=1e-6)
        assert row["val_bits_per_char"] == pytest.approx(row["val_loss"] / LN2 * per_char, rel=1e-6)
        assert row["val_bits_per_byte"] < row["val_bits_per_char"]


# --- a folder of documents ---------------------------------------------------------------------------------------


def _write_docs(write) -> tuple[list[str], str]:
    docs = [english(2500, seed=31), english(1200, seed=32), english(900, seed=33)]
    for name, doc in zip(["b_first.txt", "c_second.txt", "d_third.txt"], docs, strict=True):
        write(f"corpus/{name}", doc)
    write("corpus/a_notes.md", "NOT A TRAINING TEXT")  # only *.txt files count
    return docs, str(write("corpus/b_first.txt", docs[0]).parent)


def test_data_folder_documents_are_joined_with_endoftext_for_bpe(write, token_cache):
    docs, folder = _write_docs(write)
    prepared = prepare(tiny_cfg(folder, tokenizer="bpe", vocab_size=300, cache_dir=token_cache.parent))
    tokenizer, train_tokens, val_tokens = prepared.tokenizer, prepared.train, prepared.val
    eot = tokenizer.eot_token_id
    assert eot == 299
    ids = train_tokens.tolist() + val_tokens.tolist()
    positions = [i for i, token in enumerate(ids) if token == eot]
    assert len(positions) == len(docs) - 1
    pieces, start = [], 0
    for p in positions + [len(ids)]:
        pieces.append(tokenizer.decode(ids[start:p]))
        start = p + 1
    assert pieces == docs  # the marker sits exactly between the documents, in name order
    assert eot not in val_tokens.tolist()  # the 90% cut falls inside the last document


def test_data_folder_documents_are_joined_with_a_blank_line_for_char(write, token_cache):
    docs, folder = _write_docs(write)
    prepared = prepare(tiny_cfg(folder, tokenizer="char", cache_dir=token_cache.parent))
    tokenizer, train_tokens, val_tokens = prepared.tokenizer, prepared.train, prepared.val
    assert isinstance(tokenizer, CharTokenizer)
    assert tokenizer.decode(train_tokens.tolist() + val_tokens.tolist()) == "\n\n".join(docs)
    assert "<" not in tokenizer.chars and "|" not in tokenizer.chars  # no "<|endoftext|>" in a char stream
    assert "X" not in tokenizer.chars  # the .md file ("NOT A TRAINING TEXT") was not read


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_bits_per_byte_count_the_documents_text_not_the_separators(write, token_cache, kind):
    """Twenty short documents: the validation split holds separators, which are not text (an "<|endoftext|>"
    is one token, not 13 bytes); prepare.py's folders count the same way."""
    docs = [english(150, seed=60 + i).replace("\n\n", "\n") for i in range(20)]
    for i, doc in enumerate(docs):
        folder = write(f"many/{i:02d}.txt", doc).parent
    prepared = prepare(tiny_cfg(folder, tokenizer=kind, vocab_size=300, cache_dir=token_cache.parent))
    val = prepared.val.tolist()
    if kind == "bpe":
        pieces = prepared.tokenizer.decode(val).split(ENDOFTEXT)
    else:
        pieces = prepared.tokenizer.decode(val).split("\n\n")
    assert len(pieces) >= 2  # the premise: separators inside the validation split
    text = "".join(pieces)  # the documents' own text
    assert prepared.tokens_per_byte == pytest.approx(len(val) / len(text.encode("utf-8")), rel=1e-12)
    assert prepared.tokens_per_char == pytest.approx(len(val) / len(text), rel=1e-12)


def test_the_train_val_cut_never_splits_an_endoftext_marker(write, token_cache):
    # 1795 + 13 + 192 = 2000 characters: the cut at 1800 lands between "<|end" and "oftext|>".
    docs = [english(1795, seed=41), english(192, seed=42)]
    write("split/a.txt", docs[0])
    folder = write("split/b.txt", docs[1]).parent
    assert train_val_split(ENDOFTEXT.join(docs))[1].startswith("oftext|>")  # the premise of this test
    prepared = prepare(tiny_cfg(folder, tokenizer="bpe", vocab_size=300, cache_dir=token_cache.parent))
    tokenizer, train_tokens, val_tokens = prepared.tokenizer, prepared.train, prepared.val
    ids = train_tokens.tolist() + val_tokens.tolist()
    assert ids.count(tokenizer.eot_token_id) == 1
    assert tokenizer.decode(ids) == ENDOFTEXT.join(docs)
