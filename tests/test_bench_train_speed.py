"""Tests for bench/train_speed.py's peer: Hugging Face's GPT-2 must do the same work as our model.

The benchmark's "/HF fp32" ratio only means something if both models train the same network on the same
data: the same weights, the same batches, the same loss and the same optimizer step. Here, on a tiny shape
in float32, the HF peer and ours start from identical tensors, give the same first loss, and after one
AdamW step (each its own, from its own gradients) still give nearly the same loss on the next batch. A peer
that used HF's `labels=` (which shifts the targets a second time), another optimizer grouping or another
GELU would fail.
"""

from __future__ import annotations

import time

import pytest
import torch

from tests.conftest import load_bench

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

TINY = ["--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "2"]


@pytest.fixture(scope="module")
def bench():
    return load_bench("train_speed")


def test_peer_is_a_gpt2_of_the_same_sizes(bench):
    cfg, models, _ = bench.contenders(TINY, "float32")
    hf = models["HF"].config
    assert (hf.n_layer, hf.n_head, hf.n_embd, hf.n_positions, hf.vocab_size) == (1, 2, 32, 16, bench.VOCAB)
    assert (hf.resid_pdrop, hf.embd_pdrop, hf.attn_pdrop) == (0.0, 0.0, 0.0)
    assert hf.activation_function == "gelu_new" and hf.layer_norm_epsilon == 1e-5
    assert models["HF"].training  # from_pretrained returns eval mode; the peer must train


def test_peer_starts_from_our_weights_and_takes_the_same_step(bench):
    _, models, steps_of = bench.contenders(TINY, "float32")
    _, ours_tensors = models["ours"].export()  # HF's names and layout
    hf_state = models["HF"].state_dict()
    for name, tensor in ours_tensors.items():
        assert torch.equal(tensor, hf_state[name]), name

    first_ours, first_hf = steps_of["ours"]().item(), steps_of["HF"]().item()  # the same first batch
    assert first_ours == pytest.approx(first_hf, abs=1e-5)
    second_ours, second_hf = steps_of["ours"]().item(), steps_of["HF"]().item()  # after one update each
    assert second_ours == pytest.approx(second_hf, abs=1e-4)
    assert second_ours != first_ours  # the optimizer did step (and a new batch came)


def test_alternating_timer_times_every_contender_after_warmup(bench):
    calls = []
    times = bench.time_alternating({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 2, 1)
    assert calls == ["a", "b", "b", "a", "a", "b"]  # who goes first swaps every round
    assert {name: len(t) for name, t in times.items()} == {"a": 2, "b": 2}


def test_the_levers_written_out_newton_schulz_is_muons(bench):
    """--levers times Muon's orthogonalisation written out against ours: both must compute the same."""
    from src.engine.muon import orthogonalize

    stack = torch.randn(4, 24, 96, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bench.written_out_newton_schulz(stack), orthogonalize(stack), atol=1e-5, rtol=1e-4)


def fake_contenders(calls: list):
    """A stand-in for `contenders`: steps that only record who ran (and sleep a millisecond, so medians are
    not 0), a model that counts 1,000 FLOPs per token, and an HF config naming its attention kernel."""
    from types import SimpleNamespace

    def make(flags, dtype):
        cfg = SimpleNamespace(batch_size=2, block_size=8)
        ours = SimpleNamespace(flops_per_token=lambda: 1000.0)
        hf = SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))

        def step(name):
            return lambda: (calls.append((name, dtype)), time.sleep(0.001))

        return cfg, {"ours": ours, "HF": hf}, {"ours": step("ours"), "HF": step("HF")}

    return make


def test_every_arm_of_a_shape_takes_turns_with_every_other(bench, monkeypatch):
    """The goal's ratio, ours bf16 / HF fp32, crosses precisions: all four arms must share each round."""
    calls = []
    monkeypatch.setattr(bench, "contenders", fake_contenders(calls))
    rows, kernel = bench.measure("laptop", ["float32", "bfloat16"], steps=2, warmup=1)
    arms = {("ours", "float32"), ("HF", "float32"), ("ours", "bfloat16"), ("HF", "bfloat16")}
    rounds = [calls[i : i + 4] for i in range(0, len(calls), 4)]
    assert len(rounds) == 3 and all(set(r) == arms for r in rounds)  # warm-up + 2 timed, each arm once a round
    assert rounds[0] != rounds[1]  # the order changes between rounds
    assert {(row.model, row.dtype): len(row.times) for row in rows} == dict.fromkeys(arms, 2)
    assert kernel == "sdpa"


def test_the_table_divides_by_peaks_measured_in_the_run(bench, monkeypatch):
    """Not by peaks cached on another day: the footer gives the run's own figures, the goal line uses them."""
    monkeypatch.setattr(bench, "contenders", fake_contenders([]))
    monkeypatch.setattr(bench, "measure_matmul_flops", lambda dtype: 7e9 if dtype == torch.float32 else 11e9)
    table = bench.speed_table(2, 1, ["float32", "bfloat16"], ["laptop"])
    assert "matmul peaks measured in this run, before the steps: fp32 7 GFLOP/s, bf16 11 GFLOP/s" in table
    assert "laptop shape: ours bf16 = " in table and "x HF fp32" in table


def test_bf16_is_timed_by_default_only_where_the_cpu_has_bf16_instructions(bench, monkeypatch):
    """Without bf16 units every bf16 product is converted in software: at the user's shape a step takes minutes,
    so the default run times float32 alone there (bfloat16 stays one flag away)."""
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: False)
    assert bench.default_dtypes() == ["float32"]
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: True)
    assert bench.default_dtypes() == ["float32", "bfloat16"]


def test_a_row_is_a_share_of_its_own_precisions_peak_only(bench):
    """A float32 step against the bf16 peak of a CPU without bf16 units would read thousands of percent."""
    peaks = {"fp32": 100e9, "bf16": 1e9}
    fp32 = bench.Row("ours", "user", "float32", [1.0], 1000, 50e6)  # 50 GFLOP/s: half the fp32 peak
    bf16 = bench.Row("ours", "user", "bfloat16", [1.0], 1000, 0.5e6)  # 0.5 GFLOP/s: half the bf16 peak
    assert bench.format_row(fp32, peaks, None).split()[-3:] == ["50.0%", "-", "-"]
    assert bench.format_row(bf16, peaks, None).split()[-3:] == ["-", "50.0%", "-"]
