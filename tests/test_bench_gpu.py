"""bench/gpu.py, the one-command GPU benchmark: its --quick smoke test on a CPU, and its refusal without a GPU.

The numbers it exists for need a GPU, which the test machines lack; what a CPU can check is that every part
runs the project's real code paths end to end, writes its JSON, and that a machine without CUDA gets one
clear line instead of a traceback.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

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
    assert [e["step"] for e in shakespeare["evals"]] == [0, 10, 20, 30]
    assert all(e["training_s"] is not None for e in shakespeare["evals"])  # each evaluation line was clocked
    assert shakespeare["tokens_per_s"] > 0
    assert shakespeare["best_val_loss"] <= shakespeare["final_val_loss"] < shakespeare["evals"][0]["val_loss"]
    assert shakespeare["reached"] and shakespeare["target_step"] > 0  # the loose --quick target (3.7)

    decode = parts["decode"]
    assert decode["new_tokens"] == 20
    assert set(decode["weights"]) == {"float32", "bfloat16"}
    assert all(row["tokens_per_s"] > 0 for row in decode["weights"].values())


def test_a_failing_part_is_reported_and_the_others_still_run(run_cli, tmp_path):
    out = tmp_path / "gpu.json"
    result = run_cli(BENCH, "--quick", "--device", "cpu", "--parts", "shakespeare", "decode",
                     "--data", tmp_path / "missing.txt", "--out", out, timeout=120)
    assert result.returncode == 1
    assert "error: shakespeare failed: FileNotFoundError: --data" in result.stdout
    parts = json.loads(out.read_text())["parts"]
    assert parts["shakespeare"]["status"] == "failed" and "missing.txt" in parts["shakespeare"]["error"]
    assert parts["decode"]["status"] == "ok"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_in_one_line(run_cli, tmp_path):
    result = run_cli(BENCH, "--out", tmp_path / "gpu.json", timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip() == NO_GPU
    assert not (tmp_path / "gpu.json").exists()
