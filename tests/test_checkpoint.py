"""Tests for src/checkpoint.py: parity with Hugging Face GPT-2, the folder format, bad inputs, atomic saves.

Hugging Face `transformers` is the oracle: a folder we save must load into `GPT2LMHeadModel` and give the same
logits, loss and greedy text; a folder HF saves must load into our GPT.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import src.corpus as corpus
from src.bigram import BigramLanguageModel
from src.checkpoint import load_checkpoint, load_model, save_checkpoint
from src.errors import UserError
from src.model import GPT, GPTConfig
from src.tokenizer import CharTokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
GPT2LMHeadModel = transformers.GPT2LMHeadModel

TEXT = "The quick brown fox jumps over the lazy dog!\nSphinx of black quartz, judge my vow?"
TOKENIZER = CharTokenizer.from_text(TEXT)
V = TOKENIZER.vocab_size

# (n_layer, n_head, d_model, block_size): several head counts, so a head split/merge bug would show.
SHAPES = [(2, 2, 32, 32), (1, 4, 64, 48), (3, 1, 24, 40), (2, 8, 64, 32)]


def randomized_gpt(n_layer: int, n_head: int, d_model: int, block_size: int, seed: int = 0) -> GPT:
    """A GPT whose every parameter is random and non-trivial (LayerNorm gains and all biases too), so a
    swapped, untransposed or dropped tensor changes the logits. The scales give logits spread over several
    units (greedy choices far from ties) and a greedy continuation that is not one token repeated."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=V, block_size=block_size, n_layer=n_layer, n_head=n_head, d_model=d_model))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".ln_" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif name == "transformer.wte.weight":
                p.copy_(0.2 * torch.randn_like(p))
            else:
                p.copy_(0.2 * torch.randn_like(p))
    return model.eval()


def random_ids(n: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(V, (n, T), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def saved(tmp_path):
    """A small random GPT saved with save_checkpoint: returns (folder, model)."""
    model = randomized_gpt(*SHAPES[0])
    folder = tmp_path / "ckpt"
    save_checkpoint(folder, model, TOKENIZER, {"step": 7, "val_loss": 1.5})
    return folder, model


# --- parity with Hugging Face ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=[f"L{s[0]}-H{s[1]}-C{s[2]}" for s in SHAPES])
def test_hugging_face_loads_our_checkpoint_with_the_same_logits_loss_and_greedy_text(tmp_path, shape):
    ours = randomized_gpt(*shape)
    save_checkpoint(tmp_path, ours, TOKENIZER)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert hf.config.n_head == shape[1] and hf.config.n_layer == shape[0]
    assert hf.dtype == torch.float32

    ids = random_ids(3, shape[3])
    with torch.no_grad():
        our_logits, our_loss = ours(ids[:, :-1], ids[:, 1:])
        out = hf(ids, labels=ids)  # HF shifts the labels itself
        hf_logits = out.logits
    assert our_logits.abs().max() > 1  # not a degenerate all-zero comparison
    assert (our_logits - hf_logits[:, :-1]).abs().max() <= 1e-4
    with torch.no_grad():
        full_logits, _ = ours(ids)
    assert (full_logits - hf_logits).abs().max() <= 1e-4
    assert our_loss.item() == pytest.approx(out.loss.item(), abs=1e-5)

    prompt = TOKENIZER.encode("The fox")
    ours_greedy = ours.generate(prompt, max_new_tokens=20, temperature=0)
    hf_greedy = hf.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=20, do_sample=False, pad_token_id=0,
    )[0].tolist()
    assert ours_greedy == hf_greedy
    assert len(set(ours_greedy[len(prompt):])) > 1  # a real continuation, not one token repeated


def test_state_dict_keys_match_hugging_face_after_mapping(tmp_path):
    from safetensors.torch import load_file

    ours = randomized_gpt(*SHAPES[0])
    save_checkpoint(tmp_path, ours, TOKENIZER)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path)
    saved_keys = set(load_file(tmp_path / "model.safetensors"))
    hf_keys = {k for k in hf.state_dict() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert saved_keys == hf_keys - {"lm_head.weight"}
    # Conv1D layout: HF stores c_attn as (in, out) = (C, 3C), the transpose of our nn.Linear
    torch.testing.assert_close(
        hf.transformer.h[0].attn.c_attn.weight, ours.transformer.h[0].attn.c_attn.weight.t(), rtol=0, atol=0
    )
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # HF re-tied it


def test_folder_saved_by_hugging_face_loads_into_our_model(tmp_path):
    """ours -> folder -> HF -> save_pretrained -> ours -> folder -> HF: the logits never change."""
    ours = randomized_gpt(*SHAPES[1])
    ids = random_ids(2, 20)
    with torch.no_grad():
        expected, _ = ours(ids)
    save_checkpoint(tmp_path / "a", ours, TOKENIZER)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "a")
    hf.save_pretrained(tmp_path / "b")
    back = load_model(tmp_path / "b").eval()
    assert isinstance(back, GPT)
    assert back.config == ours.config
    assert back.lm_head.weight is back.transformer.wte.weight  # re-tied on load
    with torch.no_grad():
        torch.testing.assert_close(back(ids)[0], expected, rtol=0, atol=1e-6)
    save_checkpoint(tmp_path / "c", back, TOKENIZER)
    hf_again = GPT2LMHeadModel.from_pretrained(tmp_path / "c").eval()
    with torch.no_grad():
        assert (hf_again(ids).logits - expected).abs().max() <= 1e-4


# --- the folder format --------------------------------------------------------------------------------------


def test_checkpoint_folder_contents_and_config(saved):
    folder, model = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.safetensors", "scratch_tokenizer.json", "training.json",
    ]
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gpt2"
    assert config["activation_function"] == "gelu_new"
    assert config["layer_norm_epsilon"] == 1e-5
    assert (config["n_layer"], config["n_head"], config["n_embd"], config["n_positions"], config["vocab_size"]) == (
        2, 2, 32, 32, V,
    )
    assert config["tie_word_embeddings"] is True


def test_no_pickle_anywhere(saved):
    folder, _ = saved
    for path in folder.iterdir():
        assert path.suffix not in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}
        assert not path.read_bytes().startswith(b"\x80"), f"{path.name} looks like a pickle"
    json.loads((folder / "config.json").read_text())
    json.loads((folder / "training.json").read_text())
    json.loads((folder / "scratch_tokenizer.json").read_text())


def test_load_checkpoint_returns_model_tokenizer_and_metadata(saved):
    folder, model = saved
    loaded, tokenizer, training = load_checkpoint(folder)
    assert isinstance(loaded, GPT) and loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.chars == TOKENIZER.chars
    assert training == {"step": 7, "val_loss": 1.5}
    assert GPT.from_pretrained(folder).config == model.config


def test_bigram_checkpoint_round_trip(tmp_path):
    model = BigramLanguageModel(vocab_size=V)
    with torch.no_grad():
        model.token_embedding_table.weight.normal_()
    save_checkpoint(tmp_path, model, TOKENIZER, {"step": 3})
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bigram"
    loaded, tokenizer, training = load_checkpoint(tmp_path)
    assert isinstance(loaded, BigramLanguageModel)
    assert torch.equal(loaded.token_embedding_table.weight, model.token_embedding_table.weight)
    assert training == {"step": 3} and tokenizer.vocab_size == V


# --- bad inputs: each a UserError with a useful message ------------------------------------------------------


def test_missing_folder_or_empty_folder(tmp_path):
    with pytest.raises(UserError, match="no checkpoint folder"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(UserError, match="no checkpoint in .*config.json and model.safetensors"):
        load_checkpoint(tmp_path)


def test_truncated_weights(saved):
    folder, _ = saved
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="model.safetensors is corrupt or truncated"):
        load_checkpoint(folder)


def test_garbage_weights(saved):
    folder, _ = saved
    (folder / "model.safetensors").write_bytes(os.urandom(64) + b"not a safetensors file" * 10)
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    "config_text, match",
    [
        ("{not json", "config.json is not valid JSON"),
        ("[1, 2, 3]", "does not hold a JSON object"),
        ('{"model_type": "llama"}', "model_type 'llama' is not gpt2"),
    ],
)
def test_corrupt_config(saved, config_text, match):
    folder, _ = saved
    (folder / "config.json").write_text(config_text)
    with pytest.raises(UserError, match=match):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"activation_function": "relu"}, "activation_function"),
        ({"n_inner": 7}, "n_inner"),
        ({"n_head": 5}, "invalid GPT-2 config.json"),  # 32 not divisible by 5
        ({"n_embd": 64, "n_head": 4}, "shape"),  # the weights are 32 wide
        ({"vocab_size": V + 3}, "shape"),
    ],
)
def test_config_that_does_not_fit_the_weights(saved, change, match):
    folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    config.update(change)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=match):
        load_model(folder)


def test_config_missing_a_size_is_a_user_error(saved):
    folder, _ = saved
    config = json.loads((folder / "config.json").read_text())
    del config["n_embd"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError):
        load_model(folder)


def test_tokenizer_that_does_not_belong_to_the_model(saved):
    folder, _ = saved
    CharTokenizer.from_text("abc").save(folder / "scratch_tokenizer.json")
    with pytest.raises(UserError, match=f"tokenizer has 3 tokens but the model {V}"):
        load_checkpoint(folder)
    (folder / "scratch_tokenizer.json").unlink()
    with pytest.raises(UserError, match="tokenizer file not found"):
        load_checkpoint(folder)


# --- atomic saves ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash_in", ["replace", "fsync"])
def test_a_crash_while_saving_leaves_the_previous_checkpoint(saved, monkeypatch, crash_in):
    folder, old = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    new = randomized_gpt(*SHAPES[0], seed=99)
    assert not torch.equal(new.transformer.wte.weight, old.transformer.wte.weight)

    def crash(*args, **kwargs):
        raise OSError("simulated crash: disk full")

    if crash_in == "replace":  # the temporary file is complete, the rename never happens
        monkeypatch.setattr(corpus.os, "replace", crash)
    else:  # dies while writing the temporary file
        monkeypatch.setattr(corpus.os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(folder, new, TOKENIZER, {"step": 8})
    monkeypatch.undo()

    after = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
    assert after == before  # every real file byte-identical
    loaded, _, training = load_checkpoint(folder)
    assert torch.equal(loaded.transformer.wte.weight, old.transformer.wte.weight)
    assert training["step"] == 7

    save_checkpoint(folder, new, TOKENIZER, {"step": 8})  # a save that completes does replace it
    loaded, _, training = load_checkpoint(folder)
    assert torch.equal(loaded.transformer.wte.weight, new.transformer.wte.weight)
    assert training["step"] == 8


def test_save_creates_missing_folders(tmp_path):
    model = randomized_gpt(*SHAPES[0])
    save_checkpoint(tmp_path / "a" / "b", model, TOKENIZER)
    assert load_checkpoint(tmp_path / "a" / "b")[0].config == model.config
    shutil.rmtree(tmp_path / "a")
