"""bench/gpu.py, the one-command GPU benchmark: its --quick smoke test on a CPU, and its refusal without a GPU.

The numbers it exists for need a GPU, which the test machines lack; what a CPU can check is that every part
runs the project's real code paths end to end, writes its JSON, and that a machine without CUDA gets one
clear line instead of a traceback.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from argparse import Namespace

import pytest
import torch

from tests.conftest import load_bench

BENCH = "bench/gpu.py"
NO_GPU = "no CUDA GPU: run this on a GPU machine (bench/gpu.py --quick --device cpu smoke-tests it here)"


@pytest.mark.slow
def test_quick_smoke_run_on_a_cpu_writes_all_three_parts(run_cli, text_file, tmp_path):
    out = tmp_path / "gpu.json"
    result = run_cli(BENCH, "--quick", "--device", "cpu", "--data", text_file, "--out", out, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for heading in ("## train", "## shakespeare", "## decode"):
        assert heading in result.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["device"] == "cpu" and report["torch"] == torch.__version__
    assert "gpu" in report and "cuda" in report
    parts = report["parts"]
    assert {name: part["status"] for name, part in parts.items()} == {
        "train": "ok", "shakespeare": "ok", "decode": "ok"}

    train = parts["train"]
    assert train["tokens_per_s"] > 0 and train["ms_per_step"] > 0
    assert train["compiled"] is False  # no torch.compile on a CPU
    assert abs(train["final_loss"] - math.log(50257)) < 1.0  # random tokens: about ln V

    shakespeare = parts["shakespeare"]
    assert shakespeare["final_step"] == shakespeare["max_iters"] == 30 and not shakespeare["ended_by_budget"]
    assert shakespeare["error"] is None and shakespeare["stopped_by_safety_net"] is False
    assert re.search(r"\[ *[\d.]+ s\] step +10: train loss", result.stdout)  # each echoed line stamped with its time
    assert [e["step"] for e in shakespeare["evals"]] == [0, 10, 20, 30]
    assert all(e["training_s"] is not None for e in shakespeare["evals"])  # each evaluation line was clocked
    assert shakespeare["tokens_per_s"] > 0
    assert shakespeare["best_val_loss"] <= shakespeare["final_val_loss"] < shakespeare["evals"][0]["val_loss"]
    assert shakespeare["reached"] and shakespeare["target_step"] > 0  # the loose --quick target (3.7)

    decode = parts["decode"]
    assert decode["new_tokens"] == 20
    assert set(decode["weights"]) == {"float32", "bfloat16"}
    assert all(row["tokens_per_s"] > 0 for row in decode["weights"].values())
    rows = decode["weights"]
    assert rows["float32"]["vs_float32"] == 1.0
    ratio = rows["bfloat16"]["tokens_per_s"] / rows["float32"]["tokens_per_s"]
    assert rows["bfloat16"]["vs_float32"] == pytest.approx(ratio)


def test_a_failing_part_is_reported_and_the_others_still_run(run_cli, tmp_path):
    out, binary = tmp_path / "gpu.json", tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\x01 not a text")  # train.py refuses it before its first evaluation
    result = run_cli(BENCH, "--quick", "--device", "cpu", "--parts", "shakespeare", "decode",
                     "--data", binary, "--out", out, timeout=120)
    assert result.returncode == 1
    assert "error: shakespeare failed: RuntimeError: train.py exited with status 1: error:" in result.stdout
    parts = json.loads(out.read_text())["parts"]
    assert parts["shakespeare"]["status"] == "failed" and "looks binary" in parts["shakespeare"]["error"]
    assert parts["decode"]["status"] == "ok"


def test_a_missing_text_or_a_count_of_zero_is_one_line_before_anything_runs(run_cli, tmp_path):
    """The device's minutes are few: a --data that is not there, or a count of 0 that would crash a part after
    it had compiled, stops the run at once, in one line, with no JSON written."""
    out = tmp_path / "gpu.json"
    result = run_cli(BENCH, "--quick", "--device", "cpu", "--data", tmp_path / "missing.txt", "--out", out,
                     timeout=120)
    assert result.returncode == 1 and result.stderr.strip() == f"error: --data {tmp_path / 'missing.txt'} is not a file"
    for flag in ("--repeats", "--steps", "--accum", "--warmup", "--new-tokens", "--batch-size"):
        result = run_cli(BENCH, "--quick", "--device", "cpu", flag, "0", "--out", out, timeout=120)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, (flag, result.stderr)
        assert f"argument {flag}: must be >= 1, got 0" in result.stderr
    assert not out.exists()


# A stand-in for train.py that logs two evaluations and dies: what a crash half-way through looks like
FAILING_RUN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    out = Path(sys.argv[sys.argv.index("--out-dir") + 1])
    print("initial loss 4.20", flush=True)
    with open(out / "metrics.jsonl", "w") as f:
        for step, val in ((0, 4.1), (10, 3.5)):
            print(f"step {step}: train loss {val + 0.1:.4f}, val loss {val:.4f}", flush=True)
            f.write(json.dumps(dict(event="eval", step=step, train_loss=val + 0.1, val_loss=val)) + "\\n")
        f.write('{"event": "train", "st')  # the line being written when it died
    print("RuntimeError: CUDA error: an illegal memory access", flush=True)
    sys.exit(3)
""")


def test_a_run_that_dies_keeps_the_evaluations_it_logged(monkeypatch, text_file, capsys):
    """The shakespeare part's train.py dying half-way (a CUDA error, the out-of-memory killer) must not cost the
    evaluations already logged: the part is 'partial', with them and the error, and the table is printed."""
    gpu = load_bench("gpu")
    real_popen = subprocess.Popen
    monkeypatch.setattr(gpu.subprocess, "Popen",
                        lambda command, **kw: real_popen([sys.executable, "-c", FAILING_RUN, *command[2:]], **kw))
    args = Namespace(data=str(text_file), quick=True, target=None, budget=None)
    args.text = gpu.find_data(args)
    result = gpu.shakespeare_time(args, torch.device("cpu"))
    assert result["status"] == "partial" and "status 3: RuntimeError: CUDA error" in result["error"]
    assert [e["val_loss"] for e in result["evals"]] == [4.1, 3.5] and result["reached"]  # 3.5 <= --quick's 3.7
    assert result["final_step"] == 10 and not result["ended_by_budget"]
    assert "(the run failed)" in gpu.shakespeare_table(result)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_line(run_cli, tmp_path):
    result = run_cli(BENCH, "--out", tmp_path / "gpu.json", timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip() == NO_GPU
    assert not (tmp_path / "gpu.json").exists()


def test_only_the_compilers_own_errors_fall_back_to_eager():
    """A failing torch.compile (no Triton on the card's image) costs the compiled figures, not the part; an
    out-of-memory or a non-finite loss is the part's own failure and must not be retried uncompiled."""
    gpu = load_bench("gpu")
    from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError

    assert gpu.compiler_failed(TorchRuntimeError("inductor could not find a C compiler"))
    assert gpu.compiler_failed(BackendCompilerFailed.__new__(BackendCompilerFailed))
    assert not gpu.compiler_failed(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not gpu.compiler_failed(RuntimeError("a non-finite loss or gradient at benchmark step 0"))
