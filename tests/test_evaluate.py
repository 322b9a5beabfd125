"""evaluate.py: the validation loss of prepared data, and HellaSwag scored as build-nanogpt scores it.

Oracles: the validation loss is recomputed token by token (each token's context rebuilt from the window
rules, float64 log-softmax), and from the model's own mean loss over whole shards; bits per byte from the
texts' own UTF-8 bytes (an "é" makes bytes differ from characters). HellaSwag's per-ending losses come from
Hugging Face's GPT2LMHeadModel on the same weights, one unpadded row at a time, and the labels are chosen
from them so that accuracy and normalised accuracy must come out at known, different values.

Each oracle was checked by breaking evaluate.py on purpose and watching a test fail: tail windows dropped,
a mean of batch means, bits without / ln 2, tokens per character for tokens per byte, 2 ** loss for the
perplexity, no eval mode, --block-size ignored, no " " before an ending, the mask not shifted, the start of a
long row kept instead of its end, the mean over all positions, one argmin for both accuracies, an ending as
long as the context let through, either tokenizer check gone, a label of 4 or "1" accepted.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from src.dataloader import PreparedData
from src.engine.checkpoint import save_checkpoint
from src.engine.errors import UserError
from src.engine.shards import (
    dataset_sha256,
    read_token_file,
    sha256_file,
    token_array,
    write_manifest,
    write_token_file,
)
from src.evaluate import (
    check_tokenizers,
    ending_losses,
    hellaswag_metrics,
    main,
    read_hellaswag,
    render_example,
    validation_metrics,
)
from src.model import GPT
from src.tokenizer import CharTokenizer

# --- a prepared folder, written the way prepare.py writes it ---------------------------------------------------


def write_prepared(folder, tokenizer, splits: dict[str, list[list[str]]]) -> None:
    """splits: {"val": shards, "train": shards}, a shard = its documents' texts; each document after the
    document prefix (the char tokenizer has no end-of-text token: the tokens of a blank line)."""
    folder.mkdir(parents=True)
    tokenizer.save(folder / "tokenizer.json")
    prefix = tokenizer.encode(tokenizer.document_separator)
    manifest = {"version": 1, "complete": True,
                "tokenizer": {"file": "tokenizer.json", "sha256": sha256_file(folder / "tokenizer.json"),
                              "kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size, "eot_id": None},
                "document_prefix": prefix, "dtype": "uint16", "settings": {}, "splits": {}}
    for split, shards in splits.items():
        entries = []
        for i, documents in enumerate(shards):
            ids = [t for doc in documents for t in prefix + tokenizer.encode(doc)]
            name = f"{split}_{i:06d}.tokens"
            write_token_file(folder / name, token_array(ids, tokenizer.vocab_size))
            entries.append({"file": name, "tokens": len(ids), "documents": len(documents),
                            "sha256": sha256_file(folder / name)})
        documents = [doc for shard in shards for doc in shard]
        manifest["splits"][split] = {"shards": entries, "documents": len(documents),
                                     "characters": sum(len(d) for d in documents),
                                     "bytes": sum(len(d.encode("utf-8")) for d in documents),
                                     "tokens": sum(e["tokens"] for e in entries)}
    manifest["val_tokens"] = manifest["splits"]["val"]["tokens"]
    manifest["dataset_sha256"] = dataset_sha256(manifest)
    write_manifest(folder, manifest)


def random_gpt(tokenizer, block_size: int, seed: int = 0, std: float = 0.5, dropout: float = 0.0) -> GPT:
    """A small GPT with large random weights: peaked, uneven predictions, so that every way of averaging the
    per-token losses differently gives a visibly different number (GPT-2's std 0.02 gives ~ln V everywhere)."""
    torch.manual_seed(seed)
    model = GPT(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=2, n_head=2, d_model=32,
                dropout=dropout)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


@pytest.fixture(scope="module")
def texts(tiny_text):
    """Documents of the tiny text with an "é" in each (2 bytes in UTF-8): val shards of 2 and 1 documents."""
    docs = [tiny_text[i : i + n] + "é" for i, n in ((0, 30), (100, 14), (300, 26), (600, 200))]
    return {"val": [docs[:2], docs[2:3]], "train": [docs[3:]]}


@pytest.fixture(scope="module")
def tokenizer(tiny_text):
    return CharTokenizer.from_text(tiny_text + "é")


def per_token_oracle(model, shards: list[list[int]], block_size: int) -> tuple[float, int]:
    """(summed loss, targets), one token at a time: token i of a shard is predicted from the tokens since the
    start of its window, the multiple of block_size just below it. float64 log-softmax."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids in shards:
            for i in range(1, len(ids)):
                start = (i - 1) // block_size * block_size
                logits, _ = model(torch.tensor([ids[start:i]]))  # (1, t, V)
                total -= F.log_softmax(logits[0, -1].double(), dim=-1)[ids[i]].item()
                count += 1
    return total, count


def shard_ids(tokenizer, shards: list[list[str]]) -> list[list[int]]:
    prefix = tokenizer.encode("\n\n")
    return [[t for doc in docs for t in prefix + tokenizer.encode(doc)] for docs in shards]


# --- validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_validation_loss_equals_a_token_by_token_recomputation_over_full_and_tail_windows(
        tmp_path, tokenizer, texts, batch_size):
    write_prepared(tmp_path / "data", tokenizer, texts)
    data = PreparedData(tmp_path / "data")
    model = random_gpt(tokenizer, block_size=16)
    val = shard_ids(tokenizer, texts["val"])
    assert [len(ids) for ids in val] == [50, 29]  # windows of 9 at 0, 8, ..: tails of 2 (val 0) and 5 (val 1)
    total, count = per_token_oracle(model, val, block_size=8)

    m = validation_metrics(model, data, block_size=8, batch_size=batch_size)

    assert m["tokens"] == count == 49 + 28  # every token but each shard's first, once
    assert m["loss"] == pytest.approx(total / count, rel=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-6)
    n_tokens = sum(len(ids) for ids in val)  # prefix tokens included: they are predicted too
    n_bytes = sum(len(doc.encode("utf-8")) for shard in texts["val"] for doc in shard)  # "é" is 2 bytes
    assert n_bytes == sum(len(doc) for shard in texts["val"] for doc in shard) + 3
    assert m["bits_per_byte"] == pytest.approx(total / count * n_tokens / n_bytes / math.log(2), rel=1e-6)
    assert model.training is False


def test_whole_shards_in_one_window_give_the_models_own_mean_loss(tmp_path, tokenizer, texts):
    """block_size covering each shard: one (1, n-1) window per shard, and the loss the model computes itself.
    The model comes in training mode with dropout: evaluation must switch dropout off, and back on after."""
    write_prepared(tmp_path / "data", tokenizer, texts)
    model = random_gpt(tokenizer, block_size=64, seed=1, dropout=0.5).train()
    m = validation_metrics(model, PreparedData(tmp_path / "data"), block_size=64, batch_size=4)
    assert model.training  # put back as it was
    losses, counts = [], []
    with torch.no_grad():
        model.eval()
        for ids in shard_ids(tokenizer, texts["val"]):
            ids = torch.tensor([ids])
            losses.append(model(ids[:, :-1], ids[:, 1:])[1].item())  # the mean over the shard's n - 1 targets
            counts.append(ids.shape[1] - 1)
    assert m["tokens"] == sum(counts)
    assert m["loss"] == pytest.approx(np.dot(losses, counts) / sum(counts), rel=1e-6)


def test_on_what_prepare_py_writes_the_loss_is_the_token_by_token_one(tmp_path, tiny_text, run_cli):
    """The real prepare.py: a document per file, the first two to validation, in shards of about 50 tokens."""
    docs = [tiny_text[:60] + "é", tiny_text[60:105] + "é", tiny_text[105:175], tiny_text[175:400]]
    for i, doc in enumerate(docs):
        (tmp_path / f"{i}.txt").write_text(doc, encoding="utf-8")
    proc = run_cli("src/prepare.py", *[tmp_path / f"{i}.txt" for i in range(4)], "--out", tmp_path / "data",
                   "--tokenizer", "char", "--val-tokens", "100", "--shard-tokens", "50")
    assert proc.returncode == 0, proc.stderr
    data = PreparedData(tmp_path / "data")
    model = random_gpt(data.tokenizer, block_size=16, seed=3)
    save_checkpoint(tmp_path / "model", model, data.tokenizer)
    val = [read_token_file(path).tolist() for path in data.val_shards]
    assert sum(val, []) == shard_ids(data.tokenizer, [docs[:2]])[0]  # the first 2 documents, each after "\n\n"
    assert len(val) >= 2 and all(len(ids) % 16 != 1 for ids in val)  # every shard ends in a tail window
    total, count = per_token_oracle(model, val, block_size=16)

    m = main(["--out-dir", str(tmp_path / "model"), "--data", str(tmp_path / "data"), "--batch-size", "2"])

    assert m["validation"]["tokens"] == count == 63 + 48 - len(val)  # each shard's first token: no target
    assert m["validation"]["loss"] == pytest.approx(total / count, rel=1e-6)
    n_bytes = len((docs[0] + docs[1]).encode("utf-8"))  # the documents' own bytes: "é" is 2
    bits = total / count * (63 + 48) / n_bytes / math.log(2)
    assert m["validation"]["bits_per_byte"] == pytest.approx(bits, rel=1e-6)


def test_the_data_must_be_in_the_models_tokens(tmp_path, tokenizer, texts):
    write_prepared(tmp_path / "data", tokenizer, texts)
    data = PreparedData(tmp_path / "data")
    check_tokenizers(random_gpt(tokenizer, 8), tokenizer, data)  # the same tokenizer: fine
    small = CharTokenizer(tokenizer.chars[:-1])
    with pytest.raises(UserError, match=f"knows {small.vocab_size} tokens .* tokenizer of {tokenizer.vocab_size}"):
        check_tokenizers(random_gpt(small, 8), small, data)
    shuffled = CharTokenizer(tokenizer.chars[::-1])  # same size, other ids: the same ids would be other text
    with pytest.raises(UserError, match="another tokenizer .* would mean different text"):
        check_tokenizers(random_gpt(shuffled, 8), shuffled, data)


# --- HellaSwag -------------------------------------------------------------------------------------------------

BLOCK = 24


def hf_ending_losses(hf, tokenizer, ctx: str, ending: str) -> tuple[float, float]:
    """(summed, mean) loss of the ending after the context, by transformers on one unpadded row; a row longer
    than BLOCK keeps its last BLOCK tokens (the rule evaluate.py follows)."""
    end = tokenizer.encode(" " + ending)
    row = (tokenizer.encode(ctx) + end)[-BLOCK:]
    with torch.no_grad():
        logp = F.log_softmax(hf(torch.tensor([row])).logits[0].double(), dim=-1)  # (T, V)
    losses = [-logp[j - 1, row[j]].item() for j in range(len(row) - len(end), len(row))]
    return sum(losses), sum(losses) / len(losses)


def candidate_examples(tiny_text, n: int = 40, seed: int = 0) -> list[dict]:
    """Contexts and endings cut from the tiny text; some rows are longer than BLOCK (cut at the front)."""
    rng = random.Random(seed)

    def piece(lo, hi):
        start = rng.randrange(len(tiny_text) - hi)
        return tiny_text[start : start + rng.randint(lo, hi)].strip() or "a"

    return [{"ctx": piece(5, 40), "endings": [piece(1, 14) for _ in range(4)], "label": 0} for _ in range(n)]


@pytest.fixture(scope="module")
def scored(tmp_path_factory, tiny_text, tokenizer):
    """(model, candidates, their oracle (sum, avg) losses from transformers)."""
    transformers = pytest.importorskip("transformers")
    model = random_gpt(tokenizer, BLOCK, seed=2, std=0.3)
    folder = tmp_path_factory.mktemp("hellaswag_model")
    save_checkpoint(folder, model, tokenizer)
    hf = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    candidates = candidate_examples(tiny_text)
    oracle = [np.array([hf_ending_losses(hf, tokenizer, ex["ctx"], e) for e in ex["endings"]]) for ex in candidates]
    return model, candidates, oracle  # oracle[i]: (4, 2) = per ending (sum, avg)


def test_per_ending_losses_equal_hugging_faces(scored, tokenizer):
    model, candidates, oracle = scored
    assert any(len(ex["ctx"]) + 1 + len(e) > BLOCK for ex in candidates for e in ex["endings"])  # cut rows
    for example, expected in zip(candidates, oracle, strict=True):
        with torch.no_grad():
            sum_loss, avg_loss = ending_losses(model, *render_example(tokenizer, example, BLOCK))
        np.testing.assert_allclose(sum_loss.numpy(), expected[:, 0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(avg_loss.numpy(), expected[:, 1], rtol=1e-5, atol=1e-5)


def clear_argmin(values: np.ndarray) -> int | None:
    """The index of the smallest value when no other is within 1e-3 of it (no float tie can flip it)."""
    order = np.argsort(values)
    return int(order[0]) if values[order[1]] - values[order[0]] > 1e-3 else None


def test_accuracy_and_normalised_accuracy_count_the_argmin_of_the_sum_and_of_the_mean(scored, tokenizer):
    """Labels set from the oracle: 3 examples right by the sum only, 1 by the mean only, 1 by both, 1 by
    neither -> accuracy 4/6, normalised accuracy 2/6."""
    model, candidates, oracle = scored
    differ, agree = [], []
    for example, losses in zip(candidates, oracle, strict=True):
        by_sum, by_avg = clear_argmin(losses[:, 0]), clear_argmin(losses[:, 1])
        if by_sum is not None and by_avg is not None:
            (agree if by_sum == by_avg else differ).append((example, by_sum, by_avg))
    assert len(differ) >= 5 and len(agree) >= 1, (len(differ), len(agree))
    examples = [{**example, "label": by_sum} for example, by_sum, _ in differ[:3]]
    example, by_sum, by_avg = differ[3]
    examples.append({**example, "label": by_avg})
    example, by_sum, by_avg = differ[4]
    examples.append({**example, "label": ({0, 1, 2, 3} - {by_sum, by_avg}).pop()})
    example, both, _ = agree[0]
    examples.append({**example, "label": both})

    m = hellaswag_metrics(model, tokenizer, examples, "cpu")

    assert (m["count"], m["correct"], m["correct_norm"]) == (6, 4, 2)
    assert m["accuracy"] == 4 / 6 and m["accuracy_norm"] == 2 / 6


def test_an_ending_must_fit_the_context_and_every_character_must_be_known(tokenizer):
    model = random_gpt(tokenizer, 8)
    long = {"ctx": "The king", "endings": ["sword", "is a qu", "a", "b"], "label": 0}  # " is a qu": 8 tokens
    with pytest.raises(UserError, match="example 1: an ending of 8 tokens does not fit .* context of 8"):
        hellaswag_metrics(model, tokenizer, [long])
    tokens, mask = render_example(tokenizer, {**long, "endings": ["sword"] * 4}, 8)
    assert tokens.shape == (4, 8) and tokenizer.decode(tokens[0]) == "ng sword"  # the ending whole, the ctx cut
    assert mask[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    unknown = {"ctx": "The king~", "endings": ["a", "b", "c", "d"], "label": 0}
    with pytest.raises(UserError, match="example 1: 1 character.*'~'"):
        hellaswag_metrics(model, tokenizer, [unknown])


GOOD = {"ind": 4, "activity_label": "Roof", "ctx_a": "A man", "ctx_b": "he", "ctx": "A man is on a roof. he",
        "split": "val", "split_type": "indomain", "label": 3, "endings": ["a", "b", "c", "d"], "source_id": "x"}


@pytest.mark.parametrize("line, words", [
    ("{not json", "not a JSON object"),
    ("[1, 2]", "not a JSON object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "label"}), "no 'label'"),
    (json.dumps({**GOOD, "label": 4}), "label must be 0, 1, 2 or 3, got 4"),
    (json.dumps({**GOOD, "label": "1"}), "label must be 0, 1, 2 or 3, got '1'"),
    (json.dumps({**GOOD, "endings": ["a", "b", "c"]}), "endings must be a list of 4 strings"),
    (json.dumps({**GOOD, "ctx": ""}), "ctx must be a non-empty string"),
])
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, line, words):
    path = tmp_path / "hs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"hs.jsonl:2: {words}"):
        read_hellaswag(path)


def test_read_hellaswag_keeps_every_example_and_skips_blank_lines(tmp_path):
    path = tmp_path / "hs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "ind": 5, "label": 0}) + "\n", encoding="utf-8")
    examples = read_hellaswag(path)
    assert [(ex["ind"], ex["label"]) for ex in examples] == [(4, 3), (5, 0)]


# --- the command -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_data(trained_run, tmp_path_factory, tiny_text):
    """The trained run, a prepared folder in its tokenizer, and a HellaSwag file of 5 examples."""
    out_dir = trained_run[0]
    tokenizer = CharTokenizer.load(out_dir / "scratch_tokenizer.json")
    root = tmp_path_factory.mktemp("evaluate")
    write_prepared(root / "data", tokenizer, {"val": [[tiny_text[:300], tiny_text[300:400]], [tiny_text[400:450]]],
                                              "train": [[tiny_text[500:900]]]})
    examples = [{**GOOD, "ind": i, "ctx": ex["ctx"], "endings": ex["endings"], "label": i % 4}
                for i, ex in enumerate(candidate_examples(tiny_text, n=5, seed=3))]
    (root / "hs.jsonl").write_text("".join(json.dumps(ex) + "\n" for ex in examples), encoding="utf-8")
    return out_dir, root


def test_the_command_prints_the_table_of_the_functions_numbers(run_data, run_cli):
    out_dir, root = run_data
    proc = run_cli("src/evaluate.py", "--out-dir", out_dir, "--data", root / "data", "--hellaswag",
                   root / "hs.jsonl", "--limit", "4", "--batch-size", "3")
    assert proc.returncode == 0, proc.stderr
    results = main(["--out-dir", str(out_dir), "--data", str(root / "data"), "--hellaswag", str(root / "hs.jsonl"),
                    "--limit", "4", "--batch-size", "3"])
    val, hs = results["validation"], results["hellaswag"]
    rows = [re.fullmatch(r"  (\S.*?)\s{2,}(\S.*)", line) for line in proc.stdout.splitlines()]
    lines = {row[1]: row[2] for row in rows if row}
    assert lines["tokens evaluated"] == f"{val['tokens']:,}" == f"{302 + 102 - 1 + 52 - 1}"  # 2 prefix tokens a doc
    assert lines["loss"] == f"{val['loss']:.4f} nats/token"
    assert lines["perplexity"] == f"{val['perplexity']:.2f}"
    assert lines["bits per byte"] == f"{val['bits_per_byte']:.4f}"
    assert lines["examples"] == "4" and hs["count"] == 4
    assert lines["accuracy"] == f"{hs['accuracy']:.4f} ({hs['correct']}/4)"
    assert lines["normalised accuracy"] == f"{hs['accuracy_norm']:.4f} ({hs['correct_norm']}/4)"
    assert "0.2955" in proc.stdout and "build-nanogpt" in proc.stdout


def test_block_size_override_a_stage_and_the_released_name_path(run_data, monkeypatch):
    out_dir, root = run_data
    short = main(["--out-dir", str(out_dir), "--data", str(root / "data"), "--block-size", "4"])["validation"]
    full = main(["--out-dir", str(out_dir), "--data", str(root / "data")])["validation"]
    assert short["tokens"] == full["tokens"] and short["loss"] != full["loss"]  # less context, other loss
    with pytest.raises(UserError, match="--block-size must be 1..16"):
        main(["--out-dir", str(out_dir), "--data", str(root / "data"), "--block-size", "17"])
    best = main(["--out-dir", str(out_dir), "--stage", "best", "--data", str(root / "data")])["validation"]
    assert best["tokens"] == full["tokens"]

    asked = []

    def offline(name):
        asked.append(name)
        raise UserError("offline")

    monkeypatch.setattr("src.engine.stages.load_pretrained", offline)
    with pytest.raises(UserError, match="offline"):
        main(["--out-dir", "gpt2", "--hellaswag", str(root / "hs.jsonl")])
    assert asked == ["gpt2"]  # not a folder here: a released GPT-2 by name


def test_a_malformed_line_is_one_line_on_stderr_and_a_non_zero_exit(run_data, run_cli):
    out_dir, root = run_data
    (root / "broken.jsonl").write_text(json.dumps(GOOD) + "\n{oops\n", encoding="utf-8")
    proc = run_cli("src/evaluate.py", "--out-dir", out_dir, "--hellaswag", root / "broken.jsonl")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and "broken.jsonl:2: not a JSON object" in proc.stderr


def test_nothing_to_evaluate_no_such_folder_or_an_unfinished_one_is_refused(run_data, capsys, tmp_path):
    """The other bad inputs, in this process: a UserError is one line by run_cli (test above)."""
    out_dir, root = run_data
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error: status 2, one line
        main(["--out-dir", str(out_dir)])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and "give --data DIR, --hellaswag FILE.jsonl" in err
    with pytest.raises(UserError, match="no prepared data at .*nowhere"):
        main(["--out-dir", str(out_dir), "--data", str(root / "nowhere")])
    with pytest.raises(UserError, match="not a folder written by prepare.py"):
        main(["--out-dir", str(out_dir), "--data", str(out_dir)])
    with pytest.raises(SystemExit):
        main(["--out-dir", str(out_dir), "--data", str(root / "data"), "--limit", "3"])  # --limit: HellaSwag only
    assert "no --hellaswag" in capsys.readouterr().err
    shutil.copytree(root / "data", tmp_path / "unfinished")
    manifest = json.loads((tmp_path / "unfinished" / "manifest.json").read_text())
    (tmp_path / "unfinished" / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(UserError, match="did not finish: run the same prepare.py command again"):
        main(["--out-dir", str(out_dir), "--data", str(tmp_path / "unfinished")])
