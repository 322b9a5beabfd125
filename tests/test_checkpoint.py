"""Tests for src/engine/checkpoint.py: parity with Hugging Face GPT-2, the folder format, bad inputs, atomic saves.

Hugging Face `transformers` is the oracle: a folder we save must load into `GPT2LMHeadModel` and give the same
logits, loss and greedy text; a folder HF saves must load into our GPT.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types

import pytest
import torch

import src.engine.files as files
import src.engine.hub as hub
from src.bigram import BigramLanguageModel
from src.bpe import BPETokenizer
from src.engine.checkpoint import load_model, load_pretrained, read_training, save_checkpoint
from src.engine.errors import UserError
from src.engine.gpt2_files import BYTE_TO_UNICODE
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


def test_load_pretrained_returns_model_and_tokenizer_and_read_training_the_metadata(saved):
    folder, model = saved
    loaded, tokenizer = load_pretrained(folder)
    training = read_training(folder)
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
    loaded, tokenizer = load_pretrained(tmp_path)
    training = read_training(tmp_path)
    assert isinstance(loaded, BigramLanguageModel)
    assert torch.equal(loaded.token_embedding_table.weight, model.token_embedding_table.weight)
    assert training == {"step": 3} and tokenizer.vocab_size == V


# --- bad inputs: each a UserError with a useful message ------------------------------------------------------


def test_missing_folder_or_empty_folder(tmp_path):
    with pytest.raises(UserError, match="no checkpoint folder"):
        load_pretrained(tmp_path / "nope")
    with pytest.raises(UserError, match="no checkpoint in .*config.json and model.safetensors"):
        load_pretrained(tmp_path)
    assert read_training(tmp_path) == {}  # a folder without training.json has no metadata


def test_truncated_weights(saved):
    folder, _ = saved
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="model.safetensors is corrupt or truncated"):
        load_pretrained(folder)


def test_garbage_weights(saved):
    folder, _ = saved
    (folder / "model.safetensors").write_bytes(os.urandom(64) + b"not a safetensors file" * 10)
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_pretrained(folder)


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
        load_pretrained(folder)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"activation_function": "relu"}, "activation_function"),
        ({"n_inner": 7}, "n_inner"),
        ({"n_head": 5}, "invalid GPT-2 config.json"),  # 32 not divisible by 5
        # a weight whose shape is not the config's: "weight NAME is (saved shape), the config says (shape)"
        ({"n_embd": 64, "n_head": 4}, r"weight transformer\.\S+ is \([\d, ]+\), the config says \([\d, ]+\)"),
        ({"vocab_size": V + 3}, rf"weight transformer\.wte\.weight is \({V}, 32\), the config says \({V + 3}, 32\)"),
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


def write_gpt2_tokenizer_files(folder) -> int:
    """A minimal tokenizer in GPT-2's Hugging Face layout (vocab.json + merges.txt): the 256 byte tokens, no
    merges, and "<|endoftext|>". Returns its vocabulary size."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {char: byte for byte, char in BYTE_TO_UNICODE.items()} | {"<|endoftext|>": 256}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return len(vocab)


@pytest.fixture
def offline_hub(monkeypatch):
    """A Hugging Face Hub with an empty local cache that cannot be reached; returns the hf_hub_download calls."""
    calls = []

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs))
        raise FileNotFoundError(f"{filename} of {repo_id} is not in the local cache")

    fake = types.ModuleType("huggingface_hub")
    fake.hf_hub_download = hf_hub_download
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    monkeypatch.setattr(hub, "hub_reachable", lambda *args, **kwargs: False)
    return calls


def test_tokenizer_that_does_not_belong_to_the_model(saved, tmp_path, monkeypatch, offline_hub):
    folder, _ = saved
    CharTokenizer.from_text("abc").save(folder / "scratch_tokenizer.json")
    with pytest.raises(UserError, match=f"tokenizer has 3 tokens but the model {V}"):
        load_pretrained(folder)

    # A GPT folder without our tokenizer falls back to GPT-2's (as for a Hugging Face folder). Offline and
    # without GPT-2's files: one line that says which files to put where, and no download was attempted.
    (folder / "scratch_tokenizer.json").unlink()
    gpt2_dir = tmp_path / "gpt2-tokenizer"
    monkeypatch.setenv("GPT2_TOKENIZER_DIR", str(gpt2_dir))
    with pytest.raises(UserError) as err:
        load_pretrained(folder)
    message = str(err.value)
    assert message.startswith(
        "cannot get vocab.json and merges.txt of openai-community/gpt2: the Hugging Face Hub cannot be reached"
    ), message
    assert f"GPT-2's tokenizer files are not in {gpt2_dir}/ either" in message
    assert "GPT2_TOKENIZER_DIR" in message and "\n" not in message
    assert offline_hub and all(kwargs == {"local_files_only": True} for _, _, kwargs in offline_hub)
    assert {repo for repo, _, _ in offline_hub} == {"openai-community/gpt2"}

    # With GPT-2's files in place the fallback is found, and its size is checked against the model's too.
    n = write_gpt2_tokenizer_files(gpt2_dir)
    with pytest.raises(UserError, match=f"tokenizer has {n} tokens but the model {V}: GPT-2's tokenizer does not"):
        load_pretrained(folder)


def test_gpt_folder_without_our_tokenizer_loads_with_gpt2s(tmp_path, monkeypatch, offline_hub):
    gpt2_dir = tmp_path / "gpt2-tokenizer"
    n = write_gpt2_tokenizer_files(gpt2_dir)
    monkeypatch.setenv("GPT2_TOKENIZER_DIR", str(gpt2_dir))
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=n, block_size=16, n_layer=1, n_head=2, d_model=32))
    save_checkpoint(tmp_path / "ckpt", model, CharTokenizer([chr(0x100 + i) for i in range(n)]))
    (tmp_path / "ckpt" / "scratch_tokenizer.json").unlink()
    loaded, tokenizer = load_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded, GPT) and loaded.config == model.config
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == n and tokenizer.eot_token_id == 256
    assert tokenizer.decode(tokenizer.encode("Héllo, wörld")) == "Héllo, wörld"
    assert offline_hub == []  # the files were found locally: the Hub was never asked


def test_bigram_folder_without_its_tokenizer(tmp_path):
    save_checkpoint(tmp_path, BigramLanguageModel(vocab_size=V), TOKENIZER)
    (tmp_path / "scratch_tokenizer.json").unlink()
    with pytest.raises(UserError, match="tokenizer file not found: .*scratch_tokenizer.json"):
        load_pretrained(tmp_path)


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
        monkeypatch.setattr(files.os, "replace", crash)
    else:  # dies while writing the temporary file
        monkeypatch.setattr(files.os, "fsync", crash)
    with pytest.raises(UserError, match="cannot write .*simulated crash: disk full; the previous file is untouched"):
        save_checkpoint(folder, new, TOKENIZER, {"step": 8})
    monkeypatch.undo()
    assert not [p.name for p in folder.iterdir() if ".tmp" in p.name]  # the failed write cleaned up after itself

    after = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}
    assert after == before  # every real file byte-identical
    loaded, _ = load_pretrained(folder)
    assert torch.equal(loaded.transformer.wte.weight, old.transformer.wte.weight)
    assert read_training(folder)["step"] == 7

    save_checkpoint(folder, new, TOKENIZER, {"step": 8})  # a save that completes does replace it
    loaded, _ = load_pretrained(folder)
    assert torch.equal(loaded.transformer.wte.weight, new.transformer.wte.weight)
    assert read_training(folder)["step"] == 8


def test_save_creates_missing_folders(tmp_path):
    model = randomized_gpt(*SHAPES[0])
    save_checkpoint(tmp_path / "a" / "b", model, TOKENIZER)
    assert load_pretrained(tmp_path / "a" / "b")[0].config == model.config
    shutil.rmtree(tmp_path / "a")
