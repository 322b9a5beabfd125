"""`python src/prepare.py`: shards whose tokens are the documents' own, the same for any number of workers,
a validation budget of whole documents, a restart that ends in the same bytes, and llm.c's .bin shards.

The oracle for the tokens is the tokenizer itself, called on each document on its own: the shards, read
back in order, must be exactly [prefix + encode(document) for each document].
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import src.prepare as prepare_mod
from src.bpe import ENDOFTEXT, BPETokenizer, load_tokenizer
from src.engine.errors import UserError
from src.engine.files import load_tensors
from src.engine.pool import ordered_map, worker_imports
from src.engine.resume import STATE_FILE
from src.engine.shards import (
    dataset_sha256,
    read_manifest,
    read_token_file,
    sha256_file,
    write_llmc_bin,
)
from src.prepare import prepare
from tests.conftest import folder_digest, make_text


def documents(n: int, seed: int = 0, size: int = 500) -> list[str]:
    return [make_text(size + 29 * i, seed=seed + i) for i in range(n)]


def write_corpus(folder: Path, docs: list[str]) -> Path:
    """Half the documents as one file each, the other half in one file separated by <|endoftext|>."""
    folder.mkdir(parents=True, exist_ok=True)
    half = len(docs) // 2
    for i, doc in enumerate(docs[:half]):
        (folder / f"a{i:03d}.txt").write_text(doc, encoding="utf-8")
    (folder / "b.txt").write_text(ENDOFTEXT.join(docs[half:]), encoding="utf-8")
    return folder


def split_tokens(folder: Path, split: str) -> np.ndarray:
    manifest = read_manifest(folder)
    shards = [read_token_file(folder / s["file"]) for s in manifest["splits"][split]["shards"]]
    return np.concatenate(shards) if shards else np.zeros(0, dtype=np.uint16)


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory) -> Path:
    """A small byte-level BPE with <|endoftext|>, saved as a tokenizer file (--tokenizer PATH.json)."""
    path = tmp_path_factory.mktemp("bpe") / "bpe.json"
    BPETokenizer.train(" ".join(documents(6, seed=50)), 300, special_tokens=[ENDOFTEXT]).save(path)
    return path


@pytest.mark.parametrize("spec", ["char", "bpe-file"])
def test_the_shards_hold_each_document_after_its_prefix(tmp_path, bpe_file, spec):
    docs = documents(10)
    corpus = write_corpus(tmp_path / "corpus", docs)
    tokenizer_spec = str(bpe_file) if spec == "bpe-file" else "char"
    manifest = prepare([str(corpus)], str(tmp_path / "out"), tokenizer_spec, shard_tokens=700, val_tokens=900)
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    prefix = manifest["document_prefix"]
    assert prefix == ([tokenizer.eot_token_id] if spec == "bpe-file" else tokenizer.encode("\n\n"))
    expected = [t for doc in docs for t in prefix + tokenizer.encode(doc, allowed_special="none")]
    got = np.concatenate([split_tokens(tmp_path / "out", "val"), split_tokens(tmp_path / "out", "train")])
    assert got.tolist() == expected
    # validation: whole documents, the first ones, until the budget is reached
    val = manifest["splits"]["val"]
    lengths = [len(prefix) + len(tokenizer.encode(doc, allowed_special="none")) for doc in docs]
    n_val = next(k for k in range(1, len(docs) + 1) if sum(lengths[:k]) >= 900)
    assert val["documents"] == n_val and val["tokens"] == sum(lengths[:n_val])
    assert val["bytes"] == sum(len(d.encode()) for d in docs[:n_val])
    assert val["characters"] == sum(map(len, docs[:n_val]))
    assert manifest["splits"]["train"]["documents"] == len(docs) - n_val


def test_shards_end_on_document_boundaries_and_the_manifest_describes_them(tmp_path):
    docs = documents(12)
    manifest = prepare([str(write_corpus(tmp_path / "corpus", docs))], str(tmp_path / "out"), "char",
                       shard_tokens=1000, val_tokens=1200)
    out = tmp_path / "out"
    assert manifest["complete"] and manifest["dataset_sha256"] == dataset_sha256(manifest)
    assert manifest == json.loads((out / "manifest.json").read_text())
    prefix = manifest["document_prefix"]
    for split in ("val", "train"):
        shards = manifest["splits"][split]["shards"]
        assert sum(s["tokens"] for s in shards) == manifest["splits"][split]["tokens"]
        assert sum(s["documents"] for s in shards) == manifest["splits"][split]["documents"]
        for shard in shards:
            tokens = read_token_file(out / shard["file"])
            assert len(tokens) == shard["tokens"] and sha256_file(out / shard["file"]) == shard["sha256"]
            assert tokens[: len(prefix)].tolist() == prefix  # every shard starts with a document
    sizes = [s["tokens"] for s in manifest["splits"]["train"]["shards"]]
    assert len(sizes) >= 3 and all(500 <= size <= 1000 for size in sizes[:-1])  # at most --shard-tokens, not tiny


@pytest.mark.parametrize("shard_tokens, val_shards, train_shards", [(4000, [2500], [4000] * 6),
                                                                  (1000, [1000, 1000, 500], [1000] * 27)])
def test_one_document_longer_than_everything_is_cut_between_tokens(tmp_path, shard_tokens, val_shards,
                                                                   train_shards):
    """A single book: validation takes exactly its first --val-tokens, shards exactly --shard-tokens (those of
    validation too, when its budget is more than a shard), and the tokens are those of the whole text encoded
    at once."""
    text = make_text(30_000, seed=3)
    (tmp_path / "book.txt").write_text(text, encoding="utf-8")
    manifest = prepare([str(tmp_path / "book.txt")], str(tmp_path / "out"), "char", shard_tokens=shard_tokens,
                       val_tokens=2500)
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    both = np.concatenate([split_tokens(tmp_path / "out", "val"), split_tokens(tmp_path / "out", "train")])
    assert both.tolist() == tokenizer.encode("\n\n" + text)
    assert manifest["splits"]["val"]["tokens"] == 2500
    assert [s["tokens"] for s in manifest["splits"]["val"]["shards"]] == val_shards
    assert [s["tokens"] for s in manifest["splits"]["train"]["shards"]][:-1] == train_shards


def test_any_number_of_workers_writes_the_same_bytes(tmp_path, bpe_file, monkeypatch):
    monkeypatch.setattr(prepare_mod, "TASK_CHARS", 2000)  # many small tasks, so the workers really interleave
    corpus = write_corpus(tmp_path / "corpus", documents(16, size=900))
    digests = []
    for workers in (1, 2, 3):
        out = tmp_path / f"out{workers}"
        prepare([str(corpus)], str(out), str(bpe_file), workers=workers, shard_tokens=1500, val_tokens=1000)
        digests.append(folder_digest(out))
    assert digests[0] == digests[1] == digests[2]


def test_workers_start_without_pytorch_and_the_queue_is_bounded():
    tokenizer_json = BPETokenizer.train("hello world " * 20, 260).to_json()
    imported = next(ordered_map([None], tokenizer_json, workers=2, function=worker_imports))
    assert "torch" not in imported and "src.bpe" in imported
    pulled = []

    def tasks():
        for i in range(40):
            pulled.append(i)
            yield [f"task {i}"]

    for done, ids in enumerate(ordered_map(tasks(), tokenizer_json, workers=2, in_flight=3)):
        assert len(pulled) <= done + 3  # never more than in_flight tasks ahead of the results
        assert ids[0].dtype == np.uint16


def test_a_worker_killed_by_the_system_is_one_line():
    """The out-of-memory killer ends a worker without a word: the run stops with one line, not a traceback."""
    tokenizer_json = BPETokenizer.train("hello world " * 20, 260).to_json()
    with pytest.raises(UserError, match=r"^a worker process died .* a rerun continues from the last saved shard$"):
        list(ordered_map([9, 9], tokenizer_json, workers=2, function=os._exit))  # a worker gone mid-task


def test_a_bpe_learned_here_never_learns_from_validation(tmp_path):
    docs = documents(14, size=600)
    corpus = write_corpus(tmp_path / "corpus", docs)
    manifest = prepare([str(corpus)], str(tmp_path / "out"), "bpe", vocab_size=300, shard_tokens=2000,
                       val_tokens=800, bpe_sample_chars=1500)
    learned = manifest["learned_documents"]
    assert learned == 3  # 1500 characters reach into the third document (600, 629, 658 characters)
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    first_val = tokenizer.encode(docs[learned], allowed_special="none")
    val = split_tokens(tmp_path / "out", "val")
    assert val[1 : 1 + len(first_val)].tolist() == first_val  # validation starts with the first unseen document
    train = split_tokens(tmp_path / "out", "train")
    first_train = tokenizer.encode(docs[0], allowed_special="none")
    assert train[1 : 1 + len(first_train)].tolist() == first_train  # and training with the first learned one


@pytest.mark.parametrize("corpus, stop_at", [("documents", 13), ("documents", 90), ("book", 3), ("book", 12)])
def test_an_interrupted_preparation_continues_from_its_last_shard_to_the_same_bytes(tmp_path, monkeypatch, corpus,
                                                                                    stop_at):
    """Ctrl-C at piece `stop_at`: the rerun restores the last saved shard's state (with the tokens that were
    waiting), routes only the pieces after it, and ends in the bytes of an uninterrupted run. The book is one
    document in 1,000-character pieces, longer than the validation budget, so validation is cut from it."""
    monkeypatch.setattr(prepare_mod, "PIECE_CHARS", 1000)
    source = tmp_path / "corpus"
    if corpus == "book":
        source.mkdir()
        (source / "book.txt").write_text(make_text(30_000, seed=3), encoding="utf-8")
        args = dict(tokenizer_spec="char", shard_tokens=4000, val_tokens=2500)
    else:
        write_corpus(source, documents(120))
        args = dict(tokenizer_spec="char", shard_tokens=800, val_tokens=600)
    prepare([str(source)], str(tmp_path / "clean"), **args)

    real_add, calls, stop = prepare_mod.Router.add, [], [stop_at]

    def counting_add(self, *a, **k):
        calls.append(1)
        if len(calls) == stop[0]:
            raise KeyboardInterrupt
        return real_add(self, *a, **k)

    monkeypatch.setattr(prepare_mod.Router, "add", counting_add)
    with pytest.raises(UserError, match="run the same command again"):
        prepare([str(source)], str(tmp_path / "out"), **args)
    partial = read_manifest(tmp_path / "out", complete=False)
    assert not partial["complete"]
    with pytest.raises(UserError, match="did not finish"):
        read_manifest(tmp_path / "out")  # training refuses it
    saved = partial.get("progress", {}).get("pieces", 0)  # none before the first shard
    assert stop_at - 1 - saved <= 6  # the last shard was at most a few pieces before the stop
    calls.clear()
    stop[0] = -1
    prepare([str(source)], str(tmp_path / "out"), **args)
    calls_clean = len(calls) + saved  # every piece is routed once, by one run or the other
    calls.clear()
    prepare([str(source)], str(tmp_path / "again"), **args)
    assert calls_clean == len(calls)
    assert folder_digest(tmp_path / "out") == folder_digest(tmp_path / "clean")
    assert not list((tmp_path / "out").glob(".*"))  # the waiting tokens' files are gone


def test_a_source_changed_before_the_rerun_is_refused(tmp_path, monkeypatch):
    """A rerun skips the pieces routed before by counting them: a source edited in between would mix its old and
    new text in the shards, so the rerun refuses, naming it."""
    monkeypatch.setattr(prepare_mod, "PIECE_CHARS", 1000)
    corpus = write_corpus(tmp_path / "corpus", documents(120))
    args = dict(tokenizer_spec="char", shard_tokens=800, val_tokens=600)
    real_add, calls = prepare_mod.Router.add, []

    def interrupted_add(self, *a, **k):
        calls.append(1)
        if len(calls) == 40:
            raise KeyboardInterrupt
        return real_add(self, *a, **k)

    monkeypatch.setattr(prepare_mod.Router, "add", interrupted_add)
    with pytest.raises(UserError, match="run the same command again to continue"):
        prepare([str(corpus)], str(tmp_path / "out"), **args)
    monkeypatch.setattr(prepare_mod.Router, "add", real_add)
    edited = sorted(corpus.iterdir())[0]
    edited.write_text(edited.read_text(encoding="utf-8") + " and one more line", encoding="utf-8")
    with pytest.raises(UserError, match=rf"{edited.name} changed since this preparation began"):
        prepare([str(corpus)], str(tmp_path / "out"), **args)


def test_a_bpe_learned_from_every_document_says_so(tmp_path):
    (tmp_path / "book.txt").write_text(make_text(5000), encoding="utf-8")
    with pytest.raises(UserError, match="learned from all 1 document"):
        prepare([str(tmp_path / "book.txt")], str(tmp_path / "out"), "bpe", vocab_size=260, val_tokens=100)


def test_a_killed_preparation_continues_to_the_same_bytes(tmp_path, repo_root, cli_env):
    """kill -9 in the middle: finished shards and the manifest stay valid, and a rerun completes them."""
    corpus = write_corpus(tmp_path / "corpus", documents(300, size=1500))
    command = [sys.executable, "src/prepare.py", str(corpus), "--tokenizer", "char", "--shard-tokens", "20000",
               "--val-tokens", "5000", "--workers", "2"]
    clean = subprocess.run([*command, "--out", str(tmp_path / "clean")], cwd=repo_root, env=cli_env,
                           capture_output=True, text=True, timeout=120)
    assert clean.returncode == 0, clean.stderr[-2000:]
    process = subprocess.Popen([*command, "--out", str(tmp_path / "out")], cwd=repo_root, env=cli_env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    manifest = tmp_path / "out" / "manifest.json"
    deadline = time.time() + 60
    while time.time() < deadline and process.poll() is None:
        if manifest.exists() and json.loads(manifest.read_text()).get("progress", {}).get("pieces", 0) > 0:
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (tmp_path / "out" / ".train_000009.tokens.tmp99999").write_bytes(b"\0" * 64)  # as a kill mid-write leaves
    rerun = subprocess.run([*command, "--out", str(tmp_path / "out")], cwd=repo_root, env=cli_env,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert folder_digest(tmp_path / "out") == folder_digest(tmp_path / "clean")  # no waiting or half-written file


def test_llmc_bin_shards_are_taken_as_they_are(tmp_path, bpe_file):
    tokenizer = load_tokenizer(bpe_file)
    eot = tokenizer.eot_token_id
    docs = documents(8)
    ids = [[eot] + tokenizer.encode(doc) for doc in docs]
    write_llmc_bin(tmp_path / "fineweb_000000.bin", [t for doc in ids[:5] for t in doc])
    write_llmc_bin(tmp_path / "fineweb_000001.bin", [t for doc in ids[5:] for t in doc])
    manifest = prepare([str(tmp_path / "fineweb_*.bin")], str(tmp_path / "out"), str(bpe_file), shard_tokens=600,
                       val_tokens=700)
    both = np.concatenate([split_tokens(tmp_path / "out", "val"), split_tokens(tmp_path / "out", "train")])
    assert both.tolist() == [t for doc in ids for t in doc]
    val = manifest["splits"]["val"]
    assert val["bytes"] == sum(len(d.encode()) for d in docs[: val["documents"]])  # decoded, for bits per byte
    with pytest.raises(UserError, match="already tokens"):
        prepare([str(tmp_path / "fineweb_000000.bin")], str(tmp_path / "char"), "char")


def test_llmc_bin_documents_carried_into_the_next_file_stay_whole(tmp_path, bpe_file):
    """llm.c's fineweb.py cuts its stream of [eot] + document into files of exactly one size, mid-document: the
    shards must hold the stream as it was, with no end-of-text added where a file happens to begin."""
    tokenizer = load_tokenizer(bpe_file)
    eot = tokenizer.eot_token_id
    stream = [t for doc in documents(8) for t in [eot, *tokenizer.encode(doc)]]
    cuts = [0, 333, 700, stream.index(eot, 900), len(stream)]  # mid-document twice, then right at an eot
    for i, (start, end) in enumerate(zip(cuts, cuts[1:], strict=False)):
        write_llmc_bin(tmp_path / f"fineweb_{i:06d}.bin", stream[start:end])
    manifest = prepare([str(tmp_path / "fineweb_*.bin")], str(tmp_path / "out"), str(bpe_file), shard_tokens=600,
                       val_tokens=700)
    both = np.concatenate([split_tokens(tmp_path / "out", "val"), split_tokens(tmp_path / "out", "train")])
    assert both.tolist() == stream
    splits = manifest["splits"]
    assert splits["val"]["documents"] + splits["train"]["documents"] in (8, 9)  # 9: one cut at the val budget


def test_a_lone_surrogate_in_a_json_line_becomes_a_replacement_character(tmp_path, bpe_file):
    """JSON can escape a surrogate with no pair ("\\udc80"), as scraped web text does: it has no UTF-8 bytes,
    so it is read as U+FFFD (what the BPE tokenizer encodes it as anyway), not a crash."""
    source = tmp_path / "web.jsonl"
    source.write_text('{"text": "caf\\u00e9 \\udc80 ok"}\n{"text": "second document, long enough"}\n')
    for tokenizer in ("char", str(bpe_file)):
        out = tmp_path / f"out-{Path(tokenizer).stem}"
        prepare([str(source)], str(out), tokenizer, shard_tokens=600, val_tokens=8)
        ids = np.concatenate([split_tokens(out, "val"), split_tokens(out, "train")])
        assert "caf\u00e9 \ufffd ok" in load_tokenizer(out / "tokenizer.json").decode(ids.tolist())


def test_a_folder_is_never_overwritten_with_other_settings(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus", documents(6))
    prepare([str(corpus)], str(tmp_path / "out"), "char", shard_tokens=700, val_tokens=500)
    before = folder_digest(tmp_path / "out")
    prepare([str(corpus)], str(tmp_path / "out"), "char", shard_tokens=700, val_tokens=500)
    assert "already prepared" in capsys.readouterr().out and folder_digest(tmp_path / "out") == before
    with pytest.raises(UserError, match="another val_tokens"):
        prepare([str(corpus)], str(tmp_path / "out"), "char", shard_tokens=700, val_tokens=600)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a prepared folder"):
        prepare([str(corpus)], str(tmp_path / "other"), "char")
    with pytest.raises(UserError, match="lower --val-tokens"):
        prepare([str(corpus)], str(tmp_path / "all-val"), "char", val_tokens=10**9)
    assert folder_digest(tmp_path / "out") == before


def test_bad_arguments_are_one_line(run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("some text\n")
    for args, message in [
        ([str(tmp_path / "missing.txt")], "missing.txt"),
        ([str(tmp_path / "a.txt"), "--tokenizer", "words"], "--tokenizer 'words'"),
        ([str(tmp_path / "a.txt"), "--workers", "0"], "--workers"),
    ]:
        result = run_cli("src/prepare.py", *args, "--out", str(tmp_path / "out"))
        assert result.returncode != 0 and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_train_streams_a_prepared_folder_and_resumes_bit_for_bit(tmp_path, run_cli, tiny_train_flags):
    """--data DIR end to end: 6 steps straight equal 3 + --resume + 3, and a resume on other data is refused."""
    corpus = write_corpus(tmp_path / "corpus", documents(16, size=800))
    prepare([str(corpus)], str(tmp_path / "data"), "char", shard_tokens=2000, val_tokens=1500)
    flags = [*tiny_train_flags, "--data", str(tmp_path / "data"), "--sample-tokens", "0", "--dtype", "float32"]
    straight = run_cli("src/train.py", *flags, "--out-dir", str(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-2000:]
    first = run_cli("src/train.py", *flags, "--max-iters", "3", "--out-dir", str(tmp_path / "resumed"))
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_cli("src/train.py", *flags, "--resume", "--out-dir", str(tmp_path / "resumed"))
    assert second.returncode == 0, second.stderr[-2000:]
    a, b = folder_digest(tmp_path / "straight"), folder_digest(tmp_path / "resumed")
    assert a["model.safetensors"] == b["model.safetensors"]
    saved_a, saved_b = load_tensors(tmp_path / "straight" / STATE_FILE), load_tensors(tmp_path / "resumed" / STATE_FILE)
    assert saved_a.keys() == saved_b.keys()
    assert not [k for k in saved_a if not torch.equal(saved_a[k], saved_b[k])]
    assert int(saved_a["loader.windows_read"][0]) == 6 * 4  # steps x batch size: the position, one number

    other = write_corpus(tmp_path / "other-corpus", documents(16, seed=99, size=800))
    prepare([str(other)], str(tmp_path / "other"), "char", shard_tokens=2000, val_tokens=1500)
    wrong = run_cli("src/train.py", *flags, "--max-iters", "8", "--resume", "--data", str(tmp_path / "other"),
                    "--out-dir", str(tmp_path / "resumed"))
    assert wrong.returncode != 0 and "dataset_sha256" in wrong.stderr and "Traceback" not in wrong.stderr
    text_run = run_cli("src/train.py", *tiny_train_flags, "--max-iters", "8", "--resume", "--out-dir",
                       str(tmp_path / "resumed"), "--data", str(corpus / "a000.txt"))
    assert text_run.returncode != 0 and "Traceback" not in text_run.stderr


def test_gpt2s_tokenizer_and_a_hugging_face_dataset_end_to_end(tmp_path, monkeypatch):
    """--tokenizer gpt2 (GPT-2's files, here a stand-in in their layout) on an hf: source (a fake `datasets`)."""
    from tests.test_checkpoint import write_gpt2_tokenizer_files
    from tests.test_sources import fake_datasets

    write_gpt2_tokenizer_files(tmp_path / "gpt2")
    monkeypatch.setenv("GPT2_TOKENIZER_DIR", str(tmp_path / "gpt2"))
    docs = documents(6)
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(rows=[{"text": doc} for doc in docs]))
    manifest = prepare(["hf:some/corpus:en"], str(tmp_path / "out"), "gpt2", shard_tokens=2000, val_tokens=1500)
    tokenizer = load_tokenizer(tmp_path / "out" / "tokenizer.json")
    assert manifest["tokenizer"]["vocab_size"] == 257 and manifest["document_prefix"] == [256]
    both = np.concatenate([split_tokens(tmp_path / "out", "val"), split_tokens(tmp_path / "out", "train")])
    assert both.tolist() == [t for doc in docs for t in [256, *tokenizer.encode(doc)]]
    assert both.tolist() == [t for doc in docs for t in [256, *doc.encode("utf-8")]]  # 256 byte tokens, no merges


def test_prepare_py_itself_imports_no_pytorch(repo_root, cli_env):
    """Spawned workers import the main script again: src/prepare.py and what it imports must stay torch-free."""
    check = "import sys, src.prepare; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", check], cwd=repo_root, env=cli_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
