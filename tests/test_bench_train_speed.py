"""Tests for bench/train_speed.py's peer: Hugging Face's GPT-2 must do the same work as our model.

The benchmark's "/HF fp32" ratio only means something if both models train the same network on the same
data: the same weights, the same batches, the same loss and the same optimizer step. Here, on a tiny shape
in float32, the HF peer and ours start from identical tensors, give the same first loss, and after one
AdamW step (each its own, from its own gradients) still give nearly the same loss on the next batch. A peer
that used HF's `labels=` (which shifts the targets a second time), another optimizer grouping or another
GELU would fail.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

BENCH = Path(__file__).resolve().parent.parent / "bench" / "train_speed.py"
TINY = ["--n-layer", "1", "--n-head", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "2"]


def load_bench():
    """bench/train_speed.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_train_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return load_bench()


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
