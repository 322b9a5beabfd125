"""Tests for exercise 10: `pytest tutorial/exercises/test_ex10_conv1d.py`. The answer keys are the project's
`GPT.load_hf_state_dict` and `GPT.export` (src/model.py), which tests/test_pretrained.py and
tests/test_checkpoint.py prove against Hugging Face `transformers`.

The Hugging Face tensors here come from `GPT.export()` of a random model: that is exactly what a Hugging Face
GPT-2 file holds (names, Conv1D layout, no lm_head), without importing `transformers` for every test.
"""

import pytest
import torch

from src.model import GPT

EXERCISE = "ex10_conv1d"
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def random_gpt(seed: int = 0, **sizes) -> GPT:
    """A small GPT whose weights are all different numbers (no symmetric matrix by accident)."""
    torch.manual_seed(seed)
    model = GPT(**{"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 4, "d_model": 32, **sizes})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.normal_(1.0, 0.1)  # LayerNorm gains: near 1
            else:
                p.normal_(0.0, 0.1)
    return model.eval()


def hf_tensors(model: GPT) -> dict[str, torch.Tensor]:
    return model.export()[1]  # {name: tensor} as in a Hugging Face GPT2LMHeadModel's model.safetensors


def test_the_names_are_exactly_ours(exercise):
    model = random_gpt()
    converted = exercise.hf_to_ours(hf_tensors(model))
    assert sorted(converted) == sorted(model.state_dict())


def test_every_tensor_equals_what_load_hf_state_dict_loads(exercise):
    model = random_gpt(1)
    converted = exercise.hf_to_ours(hf_tensors(model))
    reference = GPT(model.config)
    reference.load_hf_state_dict(hf_tensors(model))  # the answer key
    for name, tensor in reference.state_dict().items():
        assert converted[name].shape == tensor.shape, f"{name}: {tuple(converted[name].shape)}"
        assert torch.equal(converted[name], tensor), f"{name} differs"


def test_the_square_attention_projection_is_transposed_too(exercise):
    """attn.c_proj.weight is (C, C): a transpose forgotten there changes no shape. Only the name tells."""
    model = random_gpt(2)
    stored = hf_tensors(model)
    converted = exercise.hf_to_ours(stored)
    for layer in range(model.config.n_layer):
        name = f"transformer.h.{layer}.attn.c_proj.weight"
        assert stored[name].shape[0] == stored[name].shape[1]  # square
        assert torch.equal(converted[name], stored[name].T), f"{name} was not transposed"


def test_only_the_four_conv1d_weights_are_transposed(exercise):
    model = random_gpt(3, vocab_size=32)  # wte is (32, 32) here: square, and it must NOT be transposed
    stored = hf_tensors(model)
    converted = exercise.hf_to_ours(stored)
    for name, tensor in stored.items():
        expected = tensor.T if name.endswith(CONV1D) else tensor
        assert torch.equal(converted[name], expected), name


def test_lm_head_is_the_token_embedding(exercise):
    model = random_gpt(4)
    stored = hf_tensors(model)
    assert "lm_head.weight" not in stored
    converted = exercise.hf_to_ours(stored)
    assert torch.equal(converted["lm_head.weight"], stored["transformer.wte.weight"])
    with_head = {**stored, "lm_head.weight": stored["transformer.wte.weight"].clone()}  # a file that has it
    from_file_with_head = exercise.hf_to_ours(with_head)
    assert sorted(from_file_with_head) == sorted(model.state_dict())
    assert torch.equal(from_file_with_head["lm_head.weight"], stored["transformer.wte.weight"])


def test_the_converted_model_gives_the_same_logits(exercise):
    model = random_gpt(5)
    fresh = GPT(model.config).eval()
    fresh.load_state_dict(exercise.hf_to_ours(hf_tensors(model)), strict=True)
    idx = torch.randint(50, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
    with torch.no_grad():
        expected, got = model(idx)[0], fresh(idx)[0]
    assert expected.abs().max() > 1.0  # large logits: a real comparison
    assert (got - expected).abs().max() < 1e-5
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # load_state_dict keeps the tie


def test_mask_buffers_are_skipped_and_real_biases_kept(exercise):
    model = random_gpt(6)
    stored = hf_tensors(model)
    T = model.config.block_size
    for layer in range(model.config.n_layer):  # what older GPT-2 files carry: the causal mask, as buffers
        stored[f"transformer.h.{layer}.attn.bias"] = torch.ones(T, T).tril().view(1, 1, T, T)
        stored[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    before = dict(stored)
    converted = exercise.hf_to_ours(stored)
    assert sorted(converted) == sorted(model.state_dict())  # no buffer, and transformer.h.0.attn.c_attn.bias kept
    assert torch.equal(converted["transformer.h.0.attn.c_attn.bias"], model.transformer.h[0].attn.c_attn.bias)
    assert stored.keys() == before.keys()  # the input is left as it was


def test_names_without_the_transformer_prefix_as_in_openais_file(exercise):
    model = random_gpt(7)
    stored = hf_tensors(model)
    openai_style = {name.removeprefix("transformer."): tensor for name, tensor in stored.items()}
    assert "h.0.attn.c_attn.weight" in openai_style and "wte.weight" in openai_style
    converted = exercise.hf_to_ours(openai_style)
    expected = model.state_dict()
    assert sorted(converted) == sorted(expected)
    for name, tensor in expected.items():
        assert torch.equal(converted[name], tensor), name


@pytest.mark.parametrize("sizes", [{}, {"n_layer": 3, "d_model": 48, "n_head": 3, "vocab_size": 70}])
def test_ours_to_hf_is_what_export_writes(exercise, sizes):
    model = random_gpt(8, **sizes)
    got = exercise.ours_to_hf(model.state_dict())
    expected = hf_tensors(model)
    assert sorted(got) == sorted(expected)  # no lm_head.weight
    for name, tensor in expected.items():
        assert got[name].shape == tensor.shape, f"{name}: {tuple(got[name].shape)}"
        assert torch.equal(got[name], tensor), name
        assert got[name].is_contiguous(), f"{name} is a transposed view: safetensors needs .contiguous()"


def test_there_and_back_again(exercise):
    model = random_gpt(9)
    back = exercise.hf_to_ours(exercise.ours_to_hf(model.state_dict()))
    assert sorted(back) == sorted(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(back[name], tensor), name
