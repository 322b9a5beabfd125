"""End-to-end tests of the two command-line scripts, run as real subprocesses from the repo root.

`src/train.py` must train, save a checkpoint and its records, and print a sample; `src/sample.py` must continue
a prompt from that checkpoint. Every mistake a user can make must end with exit status != 0 and one line
`error: ...` on stderr -- never a Python traceback -- and must leave an existing checkpoint untouched.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from src.engine.checkpoint import load_pretrained
from src.model import GPT
from src.tokenizer import CharTokenizer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


REPEATABLE = ("event", "step", "tokens", "train_loss", "val_loss", "lr", "grad_norm")


def losses(rows: list[dict]) -> list[tuple]:
    """What in the metrics must repeat exactly under the same seed: losses, lr, gradient norms (not timings)."""
    return [tuple((k, row[k]) for k in REPEATABLE if k in row) for row in rows]


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- training end to end -----------------------------------------------------------------------------------


def test_train_script_writes_checkpoint_metrics_plot_and_prints_a_sample(trained_run):
    out_dir, data, proc = trained_run
    assert "Traceback" not in proc.stderr
    names = {p.name for p in out_dir.iterdir()}
    assert {"config.json", "model.safetensors", "scratch_tokenizer.json", "training.json", "metrics.jsonl",
            "loss.png"} <= names
    assert (out_dir / "loss.png").read_bytes().startswith(PNG_SIGNATURE)

    rows = read_metrics(out_dir)
    train_rows = [r for r in rows if r.get("event") == "train"]
    eval_rows = [r for r in rows if r.get("event") == "eval"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]  # --log-interval 1, --max-iters 6
    assert [r["step"] for r in eval_rows] == [0, 3, 6]  # at the start, every --eval-interval, at the end
    for r in train_rows:
        assert {"step", "train_loss", "lr", "tokens_per_s"} <= r.keys()
        assert r["lr"] > 0 and r["tokens_per_s"] > 0
    for r in eval_rows:
        assert {"step", "train_loss", "val_loss"} <= r.keys()
    seen = {k for r in rows for k in r}
    assert {"step", "train_loss", "val_loss", "lr", "tokens_per_s"} <= seen

    training = json.loads((out_dir / "training.json").read_text())
    assert training["step"] == 6
    assert training["config"]["d_model"] == 32 and training["config"]["data"] == str(data)
    assert training["val_loss"] == pytest.approx(eval_rows[-1]["val_loss"], abs=1e-5)

    model, tokenizer = load_pretrained(out_dir)
    assert isinstance(model, GPT) and model.config.n_layer == 1 and model.config.block_size == 16
    assert tokenizer.chars == CharTokenizer.from_text(data.read_text(encoding="utf-8")).chars

    assert "--- sample ---" in proc.stdout
    sample = proc.stdout.split("--- sample ---\n", 1)[1].split("\n--------------", 1)[0]
    assert sample.strip() and set(sample) <= set(tokenizer.chars)


def test_module_entry_point_runs_and_reproduces_the_script_run_exactly(trained_run, run_cli, tmp_path,
                                                                         tiny_train_flags):
    """`python -m src.train` works, and the same seed and flags give the same losses and the same sample."""
    first_dir, data, first = trained_run
    data_copy = tmp_path / "input.txt"
    shutil.copy(data, data_copy)
    proc = run_cli("-m", "src.train", "--data", data_copy, "--out-dir", tmp_path / "out", *tiny_train_flags)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "model.safetensors").exists()
    assert (tmp_path / "out" / "loss.png").read_bytes().startswith(PNG_SIGNATURE)
    assert losses(read_metrics(tmp_path / "out")) == losses(read_metrics(first_dir))
    assert first.stdout.split("--- sample ---")[1] == proc.stdout.split("--- sample ---")[1]


def test_bigram_trains_and_samples(run_cli, tmp_path, text_file):
    out = tmp_path / "bigram"
    proc = run_cli("src/train.py", "--model", "bigram", "--data", text_file, "--out-dir", out, "--block-size", "8",
                   "--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--lr", "0.1",
                   "--sample-tokens", "20", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["model_type"] == "bigram"
    evals = [r for r in read_metrics(out) if r.get("event") == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"]  # it learned something
    proc = run_cli("src/sample.py", "--out-dir", out, "--prompt", "the ", "--max-new-tokens", "30")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("the ") and len(proc.stdout) == len("the ") + 30 + 1  # one char a token


def test_training_on_the_default_corpus(run_cli, tmp_path, repo_root):
    proc = run_cli("src/train.py", "--out-dir", tmp_path / "out", "--n-layer", "1", "--n-head", "1", "--d-model", "16",
                   "--block-size", "16", "--batch-size", "2", "--max-iters", "1", "--eval-iters", "1",
                   "--sample-tokens", "0", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    if not (repo_root / "data" / "data.txt").exists():
        assert "Shakespeare" in proc.stdout
        tokenizer = load_pretrained(tmp_path / "out")[1]
        assert set("ROMEO:\n") <= set(tokenizer.chars)


# --- sampling ------------------------------------------------------------------------------------------------


def test_sample_continues_the_prompt_and_is_reproducible(trained_run, run_cli):
    out_dir = trained_run[0]
    args = ("src/sample.py", "--out-dir", out_dir, "--prompt", "the king", "--max-new-tokens", "40")
    a = run_cli(*args, "--seed", "7")
    b = run_cli(*args, "--seed", "7")
    c = run_cli(*args, "--seed", "8")
    for proc in (a, b, c):
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("the king")
        assert len(proc.stdout) >= len("the king") + 40
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout


def test_sample_several_and_greedy(trained_run, run_cli):
    out_dir = trained_run[0]
    proc = run_cli("src/sample.py", "--out-dir", out_dir, "--prompt", "a", "--num-samples", "2",
                   "--max-new-tokens", "10", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert "--- sample 1 ---" in proc.stdout and "--- sample 2 ---" in proc.stdout
    first, second = proc.stdout.split("--- sample 2 ---\n")
    assert first.split("--- sample 1 ---\n")[1] == second  # greedy: both rows identical


@pytest.mark.parametrize("script", ["src/train.py", "src/sample.py"])
def test_help(run_cli, script):
    proc = run_cli(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage:")
    assert "--out-dir" in proc.stdout and "--seed" in proc.stdout


# --- usage errors: rejected by the parser (exit 2) ------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--d-model", "30", "--n-head", "4"], ["--d-model (30) must be divisible by --n-head (4)"]),
        (["--n-layer", "0"], ["argument --n-layer: must be >= 1, got 0"]),
        (["--block-size", "-3"], ["argument --block-size: must be >= 1, got -3"]),
        (["--batch-size", "0"], ["--batch-size"]),
        (["--lr", "0"], ["--lr", "must be > 0"]),
        (["--lr", "-0.001"], ["--lr"]),
    ],
    ids=["d_model-n_head", "n_layer-0", "block-negative", "batch-0", "lr-0", "lr-negative"],
)
def test_parser_rejects_impossible_values(run_cli, tmp_path, text_file, args, words):
    proc = run_cli("src/train.py", "--data", text_file, "--out-dir", tmp_path / "out", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    line = assert_one_line_error(proc, *words)  # one line, no usage block
    assert line.endswith("(`python src/train.py --help` lists the flags)"), line
    assert not (tmp_path / "out").exists()


# --- bad inputs to train.py -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, words",
    [
        (None, ["data file not found"]),
        (b"", ["is empty"]),
        (b"   \n\n\t \n", ["is empty"]),
        (b"PK\x03\x04\x00\x00binary", ["looks binary", "offset 4"]),
        (b"good text, then \xe9 latin-1", ["not UTF-8", "offset 16"]),
        (b"a tiny corpus", ["block_size 16", "at least 17"]),
    ],
    ids=["missing", "empty", "whitespace", "binary", "not-utf8", "too-short"],
)
def test_bad_training_data_is_one_line_error(run_cli, tmp_path, tiny_train_flags, content, words):
    data = tmp_path / "data.txt"
    if content is not None:
        data.write_bytes(content)
    proc = run_cli("src/train.py", "--data", data, "--out-dir", tmp_path / "out", *tiny_train_flags)
    assert_one_line_error(proc, *words)
    assert proc.returncode == 1


def test_failed_training_leaves_an_existing_checkpoint_alone(trained_run, run_cli, tmp_path, digest,
                                                              tiny_train_flags):
    out_dir = tmp_path / "out"
    shutil.copytree(trained_run[0], out_dir)
    before = digest(out_dir)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not utf-8")
    proc = run_cli("src/train.py", "--data", bad, "--out-dir", out_dir, *tiny_train_flags)
    assert_one_line_error(proc, "offset 0")
    after = digest(out_dir)
    assert after.keys() == before.keys()  # no file added or removed
    # Every file is untouched, but .lock: the failed run held the folder, and its lock file names the holder.
    assert {k: v for k, v in after.items() if k != ".lock"} == {k: v for k, v in before.items() if k != ".lock"}


# --- bad inputs to sample.py ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--prompt", "the king~ \u2603"], ["2 character(s)", "'~'", "'\u2603'"]),
        (["--temperature", "-0.5"], ["temperature"]),
        (["--top-k", "0"], ["top_k"]),
        (["--top-p", "0"], ["top_p"]),
        (["--top-p", "1.5"], ["top_p"]),
        (["--max-new-tokens", "-1"], ["--max-new-tokens"]),
        (["--num-samples", "0"], ["--num-samples"]),
        (["--prompt-file", "/nonexistent/prompt.txt"], ["prompt file not found"]),
        (["--prompt-file", "/"], ["cannot read prompt file /", "directory"]),
    ],
    ids=["unknown-chars", "temperature", "top-k", "top-p-0", "top-p-1.5", "max-new-tokens", "num-samples",
         "prompt-file", "prompt-file-folder"],
)
def test_bad_sampling_input_is_one_line_error_and_checkpoint_is_unchanged(trained_run, run_cli, digest, args, words):
    out_dir = trained_run[0]
    before = digest(out_dir)
    proc = run_cli("src/sample.py", "--out-dir", out_dir, "--max-new-tokens", "5", *args)
    assert_one_line_error(proc, *words)
    assert proc.stdout == ""
    assert digest(out_dir) == before  # nothing saved is lost


def test_a_prompt_longer_than_the_context_is_cut_with_a_note(trained_run, run_cli, digest):
    """Not an error: the model sees the prompt's last block_size tokens, and a note on stderr says so."""
    out_dir = trained_run[0]
    before = digest(out_dir)
    prompt = "the king " * 10  # 90 characters = 90 tokens; the context is 16
    proc = run_cli("src/sample.py", "--out-dir", out_dir, "--max-new-tokens", "5", "--prompt", prompt)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == ["note: the prompt is 90 tokens long and the model's context is 16: it sees only the last 16"]
    assert proc.stdout.startswith(prompt) and len(proc.stdout) == len(prompt) + 5 + 1  # one char a token
    assert digest(out_dir) == before


def test_sample_without_a_checkpoint(run_cli, tmp_path):
    proc = run_cli("src/sample.py", "--out-dir", tmp_path / "missing")
    assert_one_line_error(proc, "no checkpoint folder", "python src/train.py")
    (tmp_path / "empty").mkdir()
    proc = run_cli("src/sample.py", "--out-dir", tmp_path / "empty")
    assert_one_line_error(proc, "no checkpoint in", "config.json")


def test_sample_with_truncated_weights(trained_run, run_cli, tmp_path):
    out_dir = tmp_path / "out"
    shutil.copytree(trained_run[0], out_dir)
    weights = out_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    proc = run_cli("src/sample.py", "--out-dir", out_dir, "--prompt", "the")
    assert_one_line_error(proc, "model.safetensors is corrupt or truncated")


def test_sample_with_a_tokenizer_from_another_text(trained_run, run_cli, tmp_path):
    out_dir = tmp_path / "out"
    shutil.copytree(trained_run[0], out_dir)
    CharTokenizer.from_text("only these letters").save(out_dir / "scratch_tokenizer.json")
    proc = run_cli("src/sample.py", "--out-dir", out_dir, "--prompt", "the")
    assert_one_line_error(proc, "does not belong to this checkpoint")


# --- Ctrl-C ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(repo_root, tmp_path_factory, cli_env, tiny_text):
    """Start a long training run, wait until it has logged a few steps, press Ctrl-C (SIGINT).

    Returns (out_dir, returncode, stdout, stderr)."""
    if sys.platform == "win32":
        pytest.skip("SIGINT to a child process is POSIX")
    root = tmp_path_factory.mktemp("interrupted")
    data = root / "input.txt"
    data.write_text(tiny_text, encoding="utf-8")
    out_dir = root / "out"
    cmd = [sys.executable, "src/train.py", "--data", str(data), "--out-dir", str(out_dir),
           "--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "4",
           "--max-iters", "1000000", "--eval-interval", "1000000", "--eval-iters", "2", "--log-interval", "1",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=repo_root, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.time() + 30
        metrics = out_dir / "metrics.jsonl"
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and any(r.get("event") == "train" and r["step"] >= 3 for r in _rows(metrics)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out_dir, proc.returncode, stdout, stderr


@pytest.mark.slow
def test_ctrl_c_saves_a_loadable_checkpoint_and_exits_0(interrupted_run):
    out_dir, returncode, stdout, stderr = interrupted_run
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert re.search(r"at step \d+", stdout), stdout
    model, tokenizer = load_pretrained(out_dir)
    assert isinstance(model, GPT) and tokenizer.vocab_size == model.config.vocab_size
    assert (out_dir / "loss.png").read_bytes().startswith(PNG_SIGNATURE)
    logged = max(r["step"] for r in _rows(out_dir / "metrics.jsonl") if r.get("event") == "train")
    assert logged >= 3


@pytest.mark.slow
def test_interrupted_checkpoint_records_the_step_it_was_saved_at(interrupted_run):
    out_dir = interrupted_run[0]
    training = json.loads((out_dir / "training.json").read_text())
    logged = max(r["step"] for r in _rows(out_dir / "metrics.jsonl") if r.get("event") == "train")
    assert training["step"] == logged  # --log-interval 1: the last logged step is the last completed one


def _rows(path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return rows
