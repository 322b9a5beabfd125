"""Loading GPT-2 weights saved by Hugging Face `transformers`, and fine-tuning from them, all offline.

The released GPT-2 files cannot be downloaded in a test, so Hugging Face stands in for OpenAI: a
`GPT2LMHeadModel` with random weights, saved with `save_pretrained`, is a folder laid out exactly like
openai-community/gpt2 (same key names, Conv1D layout, config.json). Our `load_model` must read it and give
HF's logits, loss and greedy text, for several shapes including GPT-2 124M's own (12 layers, 768 wide,
12 heads, 50257 tokens, context 1024).

Greedy comparisons use `spread` weights: at GPT-2's init (std 0.02) the logits of a random model are
nearly equal, and two correct implementations can pick different argmaxes over a 1e-6 difference.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import src.engine.hub as hub
from src.engine.checkpoint import load_model, save_checkpoint
from src.engine.errors import UserError
from src.engine.hub import hub_repo
from src.model import GPT, GPTConfig
from src.tokenizer import CharTokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
GPT2Config, GPT2LMHeadModel = transformers.GPT2Config, transformers.GPT2LMHeadModel

REPO_ROOT = Path(__file__).resolve().parent.parent
GPT2_VOCAB = 50257

# (n_layer, n_head, n_embd, n_positions, vocab_size)
SMALL_SHAPES = [(2, 4, 64, 64, GPT2_VOCAB), (1, 1, 24, 40, 97), (3, 8, 64, 32, 300)]
GPT2_124M = (12, 12, 768, 1024, GPT2_VOCAB)

HELLO = [15496, 11, 616, 3290, 318, 257, 1310]  # "Hello, my dog is a little" in GPT-2's tokenizer
# Ids of the kind emoji and CJK text become: single-byte tokens (< 256: pieces of one UTF-8 character),
# ids near the top of the vocabulary, and "<|endoftext|>" (50256) in the middle.
EMOJI_CJK_LIKE = [47249, 222, 171, 120, 5525, 231, 121, 50256, 19526, 254, 161, 98]


def hf_model(shape, seed: int = 0) -> GPT2LMHeadModel:
    """A random GPT2LMHeadModel with Hugging Face's own init (std 0.02, like GPT-2's)."""
    n_layer, n_head, n_embd, n_positions, vocab_size = shape
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                        vocab_size=vocab_size)
    return GPT2LMHeadModel(config).eval()


def spread(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-draw every matrix from N(0, 0.1) (see the module docstring; as bench/generate.py does)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1, generator=g)
    return model


def ids(B: int, T: int, vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(vocab, (B, T), generator=torch.Generator().manual_seed(seed))


def char_tokenizer(vocab_size: int) -> CharTokenizer:
    """Any tokenizer of the right size, for save_checkpoint (these tests never decode)."""
    return CharTokenizer([chr(0x100 + i) for i in range(vocab_size)])


@pytest.fixture(scope="module")
def gpt2_124m(tmp_path_factory):
    """GPT-2 124M's shape with HF's init, saved by HF: (folder, HF model loaded from it, our model)."""
    folder = tmp_path_factory.mktemp("gpt2-124m")
    hf_model(GPT2_124M).save_pretrained(folder)
    hf = GPT2LMHeadModel.from_pretrained(folder).eval()
    ours = load_model(folder).eval()
    return folder, hf, ours


def assert_same_logits_and_loss(ours: GPT, hf, x: torch.Tensor) -> None:
    with torch.no_grad():
        our_logits, our_loss = ours(x[:, :-1], x[:, 1:])
        out = hf(x, labels=x)  # HF shifts the labels itself
        full, _ = ours(x)
    assert our_logits.abs().max() > 0.1  # a real comparison, not of two near-zero tensors
    assert (full - out.logits).abs().max() <= 1e-4
    assert (our_logits - out.logits[:, :-1]).abs().max() <= 1e-4
    assert our_loss.item() == pytest.approx(out.loss.item(), abs=1e-5)


# --- parity with Hugging Face ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=[f"L{s[0]}-H{s[1]}-C{s[2]}-V{s[4]}" for s in SMALL_SHAPES])
def test_logits_and_loss_match_hugging_face(tmp_path, shape):
    hf_model(shape).save_pretrained(tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ours = load_model(tmp_path).eval()
    assert isinstance(ours, GPT)
    assert (ours.config.n_layer, ours.config.n_head, ours.config.d_model, ours.config.block_size,
            ours.config.vocab_size) == shape
    assert_same_logits_and_loss(ours, hf, ids(3, min(shape[3], 24), shape[4]))


def test_gpt2_124m_shape_logits_and_loss_match_hugging_face(gpt2_124m):
    _, hf, ours = gpt2_124m
    assert ours.num_params() == 124_439_808
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert_same_logits_and_loss(ours, hf, torch.tensor([HELLO, EMOJI_CJK_LIKE[:7]]))


def greedy_hf(hf, prompt: list[int], n: int) -> list[int]:
    hf.generation_config.eos_token_id = None  # never stop early at 50256: we compare all n tokens
    out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0].tolist()


@pytest.mark.parametrize("prompt", [HELLO, EMOJI_CJK_LIKE, [50256]], ids=["hello", "emoji-cjk-like", "endoftext"])
def test_greedy_20_tokens_equal_hugging_face_generate(tmp_path, prompt):
    spread(hf_model(SMALL_SHAPES[0])).save_pretrained(tmp_path)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ours = load_model(tmp_path)
    expected = greedy_hf(hf, prompt, 20)
    for use_cache in (True, False):
        assert ours.generate(prompt, 20, temperature=0, use_cache=use_cache) == expected
    assert len(set(expected[len(prompt):])) > 3  # a varied continuation, not one token repeated


def test_gpt2_124m_shape_greedy_equals_hugging_face(gpt2_124m):
    folder, _, ours_at_init = gpt2_124m
    hf = spread(GPT2LMHeadModel.from_pretrained(folder)).eval()
    ours = copy.deepcopy(ours_at_init)  # then HF's spread tensors, mapped the way load_model maps a folder
    ours.load_hf_state_dict(hf.state_dict())
    expected = greedy_hf(hf, EMOJI_CJK_LIKE, 20)  # one prompt: 20 steps of a 124M model take seconds on a CPU
    assert ours.generate(EMOJI_CJK_LIKE, 20, temperature=0) == expected
    assert len(set(expected[len(EMOJI_CJK_LIKE):])) > 3


def test_sampled_ids_stay_inside_the_vocabulary(gpt2_124m):
    _, _, ours = gpt2_124m
    out = ours.generate(torch.tensor([HELLO] * 2), 12, temperature=2.0, seed=0)
    assert out.shape == (2, len(HELLO) + 12)
    assert 0 <= out.min() and out.max() < GPT2_VOCAB


# --- folders in and out ----------------------------------------------------------------------------------------


def test_round_trip_hf_folder_to_ours_to_folder_to_hf(tmp_path):
    shape = SMALL_SHAPES[2]
    hf = spread(hf_model(shape))
    hf.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf")
    save_checkpoint(tmp_path / "ours", ours, char_tokenizer(shape[4]))
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "ours").eval()
    x = ids(2, 20, shape[4])
    with torch.no_grad():
        expected = hf(x).logits
        assert (again(x).logits - expected).abs().max() <= 1e-5
    saved = load_file(tmp_path / "ours" / "model.safetensors")
    original = load_file(tmp_path / "hf" / "model.safetensors")
    assert set(saved) == set(original) - {"lm_head.weight"}
    for name in saved:  # the same tensors, in HF's layout (Conv1D weights transposed back)
        assert torch.equal(saved[name], original[name]), name


@pytest.mark.parametrize("attn_dropout", [None, 0.0, 0.25])
def test_dropout_rates_cross_to_hugging_face_and_back(tmp_path, attn_dropout):
    """Residual-only dropout (attn_dropout 0) is GPT-2's attn_pdrop 0: transformers reads the rates we write,
    and we read back the config we saved (None, "as dropout", comes back as None)."""
    config = GPTConfig(vocab_size=30, block_size=16, n_layer=1, n_head=2, d_model=16, dropout=0.1,
                       attn_dropout=attn_dropout)
    save_checkpoint(tmp_path, GPT(config), char_tokenizer(30))
    hf = GPT2Config.from_pretrained(tmp_path)
    assert (hf.resid_pdrop, hf.embd_pdrop) == (0.1, 0.1)
    assert hf.attn_pdrop == (0.1 if attn_dropout is None else attn_dropout)
    assert load_model(tmp_path).config == config
    # a new dropout on loading (fine-tuning) sets every rate; attention's follows it unless given
    assert load_model(tmp_path, dropout=0.2).config.attn_pdrop == 0.2
    assert load_model(tmp_path, dropout=0.2, attn_dropout=0.0).config.attn_pdrop == 0.0
    alone = load_model(tmp_path, attn_dropout=0.05).config  # attention's rate alone: the rest as saved
    assert (alone.dropout, alone.attn_pdrop) == (0.1, 0.05)


def write_pytorch_model_bin(hf, folder: Path) -> None:
    """An old-style HF folder: config.json + pytorch_model.bin (a pickle of the state dict).

    transformers 5 can no longer write one (`safe_serialization=False` is gone), so it is written the way
    older versions did: torch.save of the state dict.
    """
    folder.mkdir(parents=True, exist_ok=True)
    hf.config.save_pretrained(folder)
    torch.save(hf.state_dict(), folder / "pytorch_model.bin")


def test_pytorch_model_bin_folder_loads(tmp_path):
    shape = SMALL_SHAPES[0]
    hf = spread(hf_model(shape))
    write_pytorch_model_bin(hf, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    ours = load_model(tmp_path).eval()
    x = ids(2, 16, shape[4])
    with torch.no_grad():
        assert (ours(x)[0] - hf(x).logits).abs().max() <= 1e-4


class RunsACommand:
    """Unpickling this object runs a shell command: what a malicious pytorch_model.bin does."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    hf = hf_model(SMALL_SHAPES[1])
    write_pytorch_model_bin(hf, tmp_path)
    marker = tmp_path / "pwned"
    state = dict(hf.state_dict())
    state["transformer.wte.weight"] = RunsACommand(f'echo pwned > "{marker}"')
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match="pytorch_model.bin"):
        load_model(tmp_path)
    assert not marker.exists()  # weights_only=True refused the object before running anything
    # The test is meaningful: an unrestricted unpickle of the same file does run the command.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "pytorch_model.bin", weights_only=True)
    torch.load(tmp_path / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


# --- released GPT-2 names -----------------------------------------------------------------------------------------


def test_hub_names_map_to_the_official_repositories():
    assert hub_repo("gpt2") == "openai-community/gpt2"
    assert hub_repo("gpt2-medium") == "openai-community/gpt2-medium"
    assert hub_repo("gpt2-large") == "openai-community/gpt2-large"
    assert hub_repo("gpt2-xl") == "openai-community/gpt2-xl"
    assert hub_repo("openai-community/gpt2") == "openai-community/gpt2"
    assert hub_repo("openai-community/gpt2-xl") == "openai-community/gpt2-xl"
    assert hub_repo("gpt3") is None
    assert hub_repo("out") is None
    assert hub_repo("someone/gpt2") is None


@pytest.mark.parametrize("reachable", [False, True], ids=["hub-unreachable", "download-fails"])
def test_loading_gpt2_offline_says_what_to_put_where(tmp_path, monkeypatch, reachable):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.chdir(tmp_path)  # no local folder named gpt2
    calls = []

    def offline(repo_id, filename, **kwargs):  # not in the local cache, and no network either
        calls.append(kwargs.get("local_files_only", False))
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(hub, "hub_reachable", lambda *args, **kwargs: reachable)
    with pytest.raises(UserError) as err:
        load_model("gpt2")
    message = str(err.value)
    for words in ("openai-community/gpt2", "config.json", "model.safetensors",
                  "https://huggingface.co/openai-community/gpt2", "folder"):
        assert words in message
    assert "\n" not in message
    assert calls[0] is True  # the local cache is asked first
    if reachable:  # a download was attempted, and its failure is named
        assert calls == [True, False]
        assert "downloading them from the Hugging Face Hub failed (ConnectionError)" in message
    else:  # the Hub cannot be reached: the error comes at once, with no download attempt
        assert calls == [True]
        assert "the Hugging Face Hub cannot be reached" in message


def test_loading_gpt2_without_huggingface_hub_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes `import huggingface_hub` fail
    with pytest.raises(UserError, match="pip install huggingface_hub"):
        load_model("gpt2-medium")


def test_a_local_folder_named_like_a_released_model_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hf_model(SMALL_SHAPES[1]).save_pretrained(tmp_path / "gpt2")
    assert load_model("gpt2").config.d_model == SMALL_SHAPES[1][2]  # no download attempted


# --- weights that do not fit ----------------------------------------------------------------------------------------


@pytest.fixture
def hf_folder(tmp_path):
    folder = tmp_path / "hf"
    hf_model(SMALL_SHAPES[1]).save_pretrained(folder)
    return folder


def edit_weights(folder: Path, edit) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda t: t.pop("transformer.h.0.ln_1.bias"), ["missing", "h.0.ln_1.bias"]),
        (lambda t: t.update({"transformer.h.0.attn.extra": torch.zeros(3)}), ["unexpected", "attn.extra"]),
        (lambda t: t.update({"transformer.wpe.weight": t["transformer.wpe.weight"][:10]}),
         ["weight transformer.wpe.weight is (10, 24), the config says (40, 24)"]),
        (lambda t: t.update({"transformer.h.0.mlp.c_fc.weight": t["transformer.h.0.mlp.c_fc.weight"].t().contiguous()}),
         ["weight transformer.h.0.mlp.c_fc.weight is (24, 96), the config says (96, 24)"]),
    ],
    ids=["missing-key", "unexpected-key", "wrong-shape", "untransposed-conv1d"],
)
def test_weights_that_do_not_fit_the_config_are_user_errors(hf_folder, edit, words):
    edit_weights(hf_folder, edit)
    with pytest.raises(UserError) as err:
        load_model(hf_folder)
    for word in words:
        assert word in str(err.value)


def test_a_config_that_gpt2_code_cannot_run_is_a_user_error(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    config["activation_function"] = "relu"
    (hf_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="activation_function"):
        load_model(hf_folder)


# --- a shorter context for fine-tuning ----------------------------------------------------------------------------


def test_block_size_crops_the_position_table_and_keeps_the_logits(tmp_path):
    shape = (2, 4, 64, 128, 300)
    spread(hf_model(shape)).save_pretrained(tmp_path)
    full = load_model(tmp_path).eval()
    cropped = load_model(tmp_path, block_size=64, dropout=0.1).eval()
    assert cropped.config.block_size == 64 and cropped.config.dropout == 0.1
    assert cropped.transformer.wpe.weight.shape == (64, 64)
    assert torch.equal(cropped.transformer.wpe.weight, full.transformer.wpe.weight[:64])
    assert cropped.lm_head.weight is cropped.transformer.wte.weight  # still tied after the resize
    x = ids(2, 64, shape[4])
    with torch.no_grad():
        assert torch.equal(cropped(x)[0], full(x)[0])
        assert torch.equal(cropped(x[:, :5])[0], full(x[:, :5])[0])
        with pytest.raises(ValueError, match="block_size=64"):
            cropped(ids(1, 65, shape[4]))
    with pytest.raises(UserError, match="longer than this model's context"):
        load_model(tmp_path, block_size=129)


# --- fine-tuning with train.py --init-from ------------------------------------------------------------------------

FINETUNE_TEXTS = [
    "The queen rode out at night. Her sword was bright, and the crown was heavy on her head.\n" * 6,
    "Once there was a king who loved the sea. Every day he would look at the water and sing.\n" * 6,
    "My heart is a long road. I walk it day and night, and I find you at every turn of it.\n" * 6,
]


def train_gpt2_standin_tokenizer(folder: Path) -> tuple[int, int]:
    """A tiny byte-level BPE trained with HF `tokenizers`, saved as GPT-2's vocab.json + merges.txt.

    Returns (vocabulary size, id of "<|endoftext|>")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(FINETUNE_TEXTS, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.model.save(str(folder))  # vocab.json + merges.txt
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    return max(vocab.values()) + 1, vocab["<|endoftext|>"]


def test_finetune_from_a_hugging_face_folder_with_the_gpt2_tokenizer_fallback(tmp_path):
    """`train.py --init-from FOLDER` on a GPT-2-style folder (no scratch_tokenizer.json), offline.

    GPT_SCRATCH_CACHE puts the token cache into tmp_path: the test writes nothing into the repository.
    """
    tokenizer_dir = tmp_path / "gpt2-tokenizer"
    vocab_size, eot = train_gpt2_standin_tokenizer(tokenizer_dir)
    base = tmp_path / "base"
    hf_model((2, 2, 32, 64, vocab_size)).save_pretrained(base)
    assert not (base / "scratch_tokenizer.json").exists()  # so train.py must fall back to GPT-2's tokenizer
    data = tmp_path / "data"
    data.mkdir()
    for i, text in enumerate(FINETUNE_TEXTS):
        (data / f"{i}.txt").write_text(text, encoding="utf-8")
    (data / "ignored.md").write_text("not a .txt file", encoding="utf-8")
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(GPT2_TOKENIZER_DIR=str(tokenizer_dir), OMP_NUM_THREADS="2", HF_HUB_OFFLINE="1",
               GPT_SCRATCH_CACHE=str(cache))
    out = tmp_path / "out"
    flags = ["--init-from", str(base), "--data", str(data), "--out-dir", str(out), "--eval-interval", "3",
             "--eval-iters", "2", "--block-size", "32", "--batch-size", "2", "--sample-tokens", "10", "--lr", "1e-3",
             "--device", "cpu", "--dtype", "float32", "--peak-flops", "1e12"]
    proc = subprocess.run([sys.executable, "src/train.py", *flags, "--max-iters", "6"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "--- samples before fine-tuning ---" in proc.stdout
    assert "--- samples after fine-tuning ---" in proc.stdout
    assert f"bpe tokenizer with {vocab_size} tokens" in proc.stdout
    for name in ("config.json", "model.safetensors", "scratch_tokenizer.json", "best/config.json",
                 "best/model.safetensors"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["n_positions"] == 32  # the context was cropped from 64 to --block-size
    assert config["vocab_size"] == vocab_size and config["eos_token_id"] == eot
    training = json.loads((out / "training.json").read_text())
    assert training["step"] == 6 and training["config"]["preset"] == "finetune"
    assert any((cache / "tokens").iterdir())  # the token cache went to GPT_SCRATCH_CACHE

    tuned = load_model(out)
    before = load_model(base, block_size=32)
    assert not torch.equal(tuned.transformer.h[0].mlp.c_fc.weight, before.transformer.h[0].mlp.c_fc.weight)

    for folder in (out, base):  # our checkpoint, and the HF folder with GPT-2's tokenizer as a fallback
        sample = subprocess.run(
            [sys.executable, "src/sample.py", "--out-dir", str(folder), "--prompt", "The queen",
             "--max-new-tokens", "10", "--seed", "3"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert sample.returncode == 0, sample.stderr
        assert sample.stdout.startswith("The queen")
        assert len(sample.stdout) > len("The queen\n")

    # Resumed, the model is no longer the one before fine-tuning: no samples under that title.
    resumed = subprocess.run([sys.executable, "src/train.py", *flags, "--max-iters", "7", "--resume"],
                             cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "before fine-tuning" not in resumed.stdout and "--- samples after fine-tuning ---" in resumed.stdout
