"""Activation checkpointing (`--activation-checkpointing`): the same gradients, with less kept in memory.

The oracle for "the same" is the model without it: every gradient is bitwise equal (recomputing a block
in backward repeats exactly the same operations; dropout's random numbers are replayed). The oracle for
"less memory" is autograd itself: `saved_tensors_hooks` sees every tensor the forward pass keeps for
backward, and their bytes are counted with and without.
"""

from __future__ import annotations

import pytest
import torch

from src.model import GPT, GPTConfig


def gradients(model: GPT, idx, targets, recompute: bool) -> tuple[dict[str, torch.Tensor], int]:
    """(every parameter's gradient, bytes of the tensors the forward pass saved for backward)."""
    model.zero_grad(set_to_none=True)
    model.recompute_activations = recompute
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    torch.manual_seed(7)  # the same dropout masks for both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _, loss = model(idx, targets)
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}, sum(saved)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_same_gradients_with_less_saved_for_backward(dropout):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=4, n_head=2, d_model=32, dropout=dropout)).train()
    idx, targets = torch.randint(50, (4, 32)), torch.randint(50, (4, 32))
    plain, plain_bytes = gradients(model, idx, targets, recompute=False)
    recomputed, recomputed_bytes = gradients(model, idx, targets, recompute=True)
    assert plain.keys() == recomputed.keys()
    assert all(torch.equal(plain[name], recomputed[name]) for name in plain), "gradients differ"
    assert recomputed_bytes < 0.4 * plain_bytes, (recomputed_bytes, plain_bytes)


def test_eval_and_generation_ignore_it():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, d_model=32))
    model.recompute_activations = True
    idx = torch.randint(50, (1, 5))
    with torch.no_grad():
        a = model.eval()(idx)[0]
    model.recompute_activations = False
    with torch.no_grad():
        b = model(idx)[0]
    assert torch.equal(a, b)
    assert model.generate(idx, max_new_tokens=5).shape == (1, 10)


def test_training_with_it_is_training_without_it(tmp_path, run_cli, tiny_train_flags, text_file, digest):
    flags = [*tiny_train_flags, "--data", str(text_file), "--sample-tokens", "0", "--dtype", "float32",
             "--n-layer", "2", "--dropout", "0.1"]
    plain = run_cli("src/train.py", *flags, "--out-dir", str(tmp_path / "plain"))
    recomputed = run_cli("src/train.py", *flags, "--activation-checkpointing", "--out-dir", str(tmp_path / "ac"))
    assert plain.returncode == 0 and recomputed.returncode == 0, recomputed.stderr[-2000:]
    assert digest(tmp_path / "plain")["model.safetensors"] == digest(tmp_path / "ac")["model.safetensors"]
    bigram = run_cli("src/train.py", "--model", "bigram", "--activation-checkpointing", "--out-dir", str(tmp_path))
    assert bigram.returncode != 0 and "--activation-checkpointing is for --model gpt" in bigram.stderr
