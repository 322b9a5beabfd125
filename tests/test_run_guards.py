"""A training run guards its folder and its inputs: each mistake below used to end in a traceback, a silent
wrong result or a mixed-up folder, and now ends in one line that says what to do.

- `--out-dir` naming an existing file;
- `--resume` with other model flags than the saved run (an optimizer ValueError before);
- `--lr inf` / `nan` (trained to NaN and saved a NaN checkpoint before), and weights that stop being finite;
- two runs on one `--out-dir` (interleaved metrics and mixed checkpoints before), and a lock left by a killed run;
- a mistyped or out-of-range flag (argparse's whole usage text before);
- `--init-from gpt2-medium` offline (half a minute of the Hub client's retries before).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

import src.engine.hub as hub
from src.engine.checkpoint import RunLock, load_model, load_pretrained, read_training
from src.engine.config import parse_args
from src.engine.errors import UserError
from src.engine.precision import Precision
from src.model import GPT
from src.train import train

TINY = ["--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--sample-tokens", "0", "--dtype", "float32", "--peak-flops", "1e12",
        "--device", "cpu", "--compile", "off", "--log-interval", "1", "--seed", "1234", "--warmup-iters", "2"]


def one_line_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def tiny_flags(text_file: Path, out_dir: Path, cache: Path, *extra) -> list[str]:
    return [*TINY, "--data", str(text_file), "--out-dir", str(out_dir), "--cache-dir", str(cache), *map(str, extra)]


# --- the output folder ------------------------------------------------------------------------------------------


def test_out_dir_that_is_a_file_is_one_line(run_cli, tmp_path, text_file):
    taken = tmp_path / "notes.txt"
    taken.write_text("my notes")
    proc = run_cli("src/train.py", *tiny_flags(text_file, taken, tmp_path / "cache", "--max-iters", "2"))
    one_line_error(proc, 1, str(taken), "is a file", "--out-dir")
    assert taken.read_text() == "my notes"  # untouched


def test_an_out_dir_it_cannot_write_in_is_one_line(run_cli, tmp_path, text_file):
    out = tmp_path / "out"
    (out / ".lock").mkdir(parents=True)  # the lock file cannot be opened (root ignores a read-only folder)
    proc = run_cli("src/train.py", *tiny_flags(text_file, out, tmp_path / "cache", "--max-iters", "2"))
    one_line_error(proc, 1, "cannot write in --out-dir", str(out))


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_runs_lock_is_stale(tmp_path, text_file, cli_env,
                                                                                  run_cli):
    out, cache = tmp_path / "out", tmp_path / "cache"
    first = subprocess.Popen(
        [sys.executable, "src/train.py", *tiny_flags(text_file, out, cache, "--max-iters", "100000",
                                                     "--eval-interval", "100000")],
        cwd=Path(__file__).resolve().parent.parent, env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() or "train" not in (out / "metrics.jsonl").read_text():
            assert first.poll() is None, first.communicate()[1]
            assert time.time() < deadline, "the first run never started training"
            time.sleep(0.1)
        metrics_before = (out / "metrics.jsonl").read_text()

        second = run_cli("src/train.py", *tiny_flags(text_file, out, cache, "--max-iters", "4"))
        line = one_line_error(second, 1, str(out), "in use by another training run", f"process {first.pid}",
                              "src/train.py", "--out-dir")
        assert "--max-iters 100000" in line  # the first run's command, so the user knows which one it is
        assert first.poll() is None  # the first run goes on, undisturbed ...
        assert (out / "metrics.jsonl").read_text().startswith(metrics_before)  # ... and its log is its own
    finally:
        first.send_signal(signal.SIGKILL)  # no chance to clean up: the lock file stays behind
        first.wait(timeout=30)
    assert (out / ".lock").exists() and str(first.pid) in (out / ".lock").read_text()

    third = run_cli("src/train.py", *tiny_flags(text_file, out, cache, "--max-iters", "2"))
    assert third.returncode == 0, third.stderr  # the killed run's lock was recognised as stale
    assert read_training(out)["step"] == 2


def test_the_lock_is_released_when_a_run_ends_even_by_an_error(tmp_path):
    with RunLock(tmp_path / "out"):
        with pytest.raises(UserError, match="in use by another training run"):
            with RunLock(tmp_path / "out"):
                pass
    with RunLock(tmp_path / "out"):  # released: taken again at once
        pass
    with pytest.raises(ValueError):
        with RunLock(tmp_path / "out"):
            raise ValueError("a crash inside the run")
    with RunLock(tmp_path / "out"):
        pass


# --- resume with other flags ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, tiny_text) -> tuple[Path, Path, Path]:
    """(text file, run folder, cache) of a 2-step run, trained once for the resume tests, which must leave it as
    it is (they check that)."""
    root = tmp_path_factory.mktemp("saved-run")
    text_file = root / "input.txt"
    text_file.write_text(tiny_text, encoding="utf-8")
    train(parse_args(tiny_flags(text_file, root / "out", root / "cache", "--max-iters", "2")))
    return text_file, root / "out", root / "cache"


@pytest.mark.parametrize(("flag", "value", "saved"), [("--n-layer", "2", "1"), ("--d-model", "64", "32"),
                                                      ("--block-size", "8", "16"), ("--model", "bigram", "gpt"),
                                                      ("--tokenizer", "bpe", "char")])
def test_resume_with_other_model_flags_names_the_setting(saved_run, flag, value, saved):
    text_file, out, cache = saved_run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    changed = tiny_flags(text_file, out, cache, "--max-iters", "4", "--resume")
    if flag in changed:
        changed[changed.index(flag) + 1] = value
    else:
        changed += [flag, value]
    with pytest.raises(UserError) as err:
        train(parse_args(changed))
    for words in ("--resume", f"{flag} {saved}", f"{flag} {value}", str(out)):
        assert words in str(err.value)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing saved was touched


def test_resume_with_another_n_layer_is_one_line_on_the_command_line(run_cli, saved_run):
    """The case the issue met: an optimizer ValueError traceback before."""
    text_file, out, cache = saved_run
    flags = tiny_flags(text_file, out, cache, "--max-iters", "4", "--resume")
    flags[flags.index("--n-layer") + 1] = "2"
    one_line_error(run_cli("src/train.py", *flags), 1, "--n-layer 1", "--n-layer 2")


def test_resume_after_the_text_changed_says_the_shapes_differ(saved_run, tmp_path):
    """Same flags, but a text with other characters: the vocabulary, and so wte's shape, changed."""
    text_file, out, cache = saved_run
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text() + "~^|\n" * 100)  # three new characters
    with pytest.raises(UserError, match="--resume: .* does not fit this model: transformer.wte.weight .*did --data"):
        train(parse_args(tiny_flags(other, out, cache, "--max-iters", "4", "--resume")))


# --- non-finite numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--lr", "--min-lr", "--weight-decay", "--grad-clip", "--max-seconds",
                                  "--peak-flops", "--dropout"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused_by_the_parser(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([f"{flag}={value}"])  # "=": argparse would read a bare "-inf" as a flag
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: argument {flag}: must be")
    assert "--help" in err


def test_weights_that_stop_being_finite_are_never_saved(tmp_path, text_file, monkeypatch):
    """A step that leaves NaN weights (as --lr inf did): the run stops with one line, and the checkpoint of the
    last good evaluation stays as it was."""
    out = tmp_path / "out"
    cfg = parse_args(tiny_flags(text_file, out, tmp_path / "cache", "--max-iters", "6", "--eval-interval", "2"))
    real = Precision.clip_and_step
    steps = []

    def poisoning(self, optimizer, grad_clip):
        result = real(self, optimizer, grad_clip)
        steps.append(1)
        if len(steps) == 3:  # after step 3: the weights are NaN, the step itself looked fine
            with torch.no_grad():
                optimizer.param_groups[0]["params"][0].fill_(math.nan)
        return result

    monkeypatch.setattr(Precision, "clip_and_step", poisoning)
    with pytest.raises(UserError, match="no longer finite.*keeps its last good checkpoint"):
        train(cfg)
    assert read_training(out)["step"] == 2  # the evaluation at step 4 refused to save
    model, _ = load_pretrained(out)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((out / "training.json").read_text())["step"] == 2


# --- flags -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("script", "argv", "words"), [
    ("src/train.py", ["--n-layr", "3"], ["unrecognized arguments: --n-layr 3"]),
    ("src/train.py", ["--lr", "fast"], ["argument --lr", "fast"]),
    ("src/train.py", ["--n-layer", "0"], ["argument --n-layer", ">= 1"]),
    ("src/train.py", ["--dtype", "int4"], ["argument --dtype", "invalid choice"]),
    ("src/train.py", ["--preset", "gpt5"], ["argument --preset", "invalid choice"]),
    ("src/sample.py", ["--temprature", "0.5"], ["unrecognized arguments"]),
    ("src/sample.py", ["--max-new-tokens", "many"], ["argument --max-new-tokens"]),
])
def test_a_bad_flag_is_one_line_pointing_to_help(run_cli, script, argv, words):
    proc = run_cli(script, *argv)
    line = one_line_error(proc, 2, *words)
    assert f"python {script} --help" in line
    assert "usage:" not in proc.stderr and proc.stdout == ""


# --- offline -------------------------------------------------------------------------------------------------------


def fake_hub(calls: list) -> types.ModuleType:
    """A huggingface_hub whose cache is empty; `calls` records every request that would use the network."""

    def hf_hub_download(repo_id, filename, local_files_only=False, **kwargs):
        if local_files_only:
            raise FileNotFoundError(f"{repo_id}/{filename} is not in the local cache")
        calls.append((repo_id, filename))
        raise OSError("the network was used")

    module = types.ModuleType("huggingface_hub")
    module.hf_hub_download = hf_hub_download
    return module


def test_offline_a_released_model_fails_at_once_without_retrying(tmp_path, monkeypatch):
    calls = []
    monkeypatch.chdir(tmp_path)  # no local folder called gpt2-medium
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake_hub(calls))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(hub.socket, "create_connection", no_network)
    for load in (load_model, GPT.from_pretrained):  # the folder loader, and the model's own classmethod
        with pytest.raises(UserError) as err:
            load("gpt2-medium")
        assert calls == []  # not one download attempt, so no retries
        message = str(err.value)
        assert "openai-community/gpt2-medium" in message and "cannot be reached" in message and "\n" not in message

    # online (the probe connects), the download is really attempted
    monkeypatch.setattr(hub.socket, "create_connection", lambda *a, **k: types.SimpleNamespace(close=lambda: None))
    with pytest.raises(UserError, match="failed"):
        load_model("gpt2-medium")
    assert calls == [("openai-community/gpt2-medium", "config.json")]


def test_hf_hub_offline_is_respected_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_call(*args, **kwargs):
        raise AssertionError("HF_HUB_OFFLINE=1 must not open a connection")

    monkeypatch.setattr(hub.socket, "create_connection", no_call)
    assert hub.hub_reachable() is False


def test_init_from_a_released_model_offline_is_one_line_at_once(run_cli, tmp_path, text_file, cli_env):
    """The command itself, with the Hub marked offline: one line, and no retry messages."""
    env = {**cli_env, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "src/train.py", "--init-from", "gpt2-medium", "--data", str(text_file),
         "--out-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"],
        cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=120,
    )
    one_line_error(proc, 1, "gpt2", "cannot be reached")
    assert "Retrying" not in proc.stderr


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_lock_file_names_its_holder(tmp_path):
    with RunLock(tmp_path) as lock:
        holder = json.loads(lock.path.read_text())
        assert holder["pid"] == os.getpid() and holder["command"]
