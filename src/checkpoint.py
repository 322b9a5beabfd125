"""Saving and loading models as Hugging Face GPT-2 folders: safetensors weights + JSON, never pickle.

A checkpoint folder holds:
    config.json              GPT-2's config, as Hugging Face writes it (model_type "gpt2")
    model.safetensors        the weights, under Hugging Face's names and layout
    scratch_tokenizer.json   our tokenizer (char or BPE), so sampling needs nothing but this folder
    training.json            our training metadata: step, losses, the training settings

So `transformers.GPT2LMHeadModel.from_pretrained(folder)` loads what `train.py` saved, and
`load_model(folder)` here loads a folder that Hugging Face saved. Two details of the HF layout:
- GPT-2 was written with "Conv1D" layers that store their weight as (in, out), the transpose of
  `nn.Linear`'s (out, in). Four weights per block need a transpose on the way in and out.
- `lm_head.weight` is not stored: it is tied to `transformer.wte.weight` and re-tied on load.

(Our tokenizer file is not named `tokenizer.json`, because that name means a Hugging Face `tokenizers` file.)

Every file is written to a temporary name and renamed into place, so a crash in the middle of a save
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from src.bigram import BigramConfig, BigramLanguageModel
from src.corpus import atomic_write_bytes, atomic_write_text, read_json
from src.errors import UserError
from src.hub import download, hub_repo
from src.model import GPT, GPTConfig
from src.quantize import is_quantized
from src.tokenizer import load_tokenizer

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "pytorch_model.bin"  # older Hugging Face folders; read with weights_only=True
TOKENIZER = "scratch_tokenizer.json"
TRAINING = "training.json"

# GPT-2's Conv1D weights: stored (in, out) by Hugging Face, (out, in) by nn.Linear.
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Buffers some GPT-2 files carry (old causal-mask tensors); they are not parameters.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


# --- config.json ---------------------------------------------------------------------------------------


def hf_config(config: GPTConfig, eos_token_id: int | None = None) -> dict:
    """Our GPTConfig as a Hugging Face GPT2Config dictionary."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.d_model,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # None = 4 * n_embd
        "activation_function": "gelu_new",  # the tanh approximation of GELU
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "torch_dtype": "float32",
    }


def gpt_config_from_hf(hf: dict) -> GPTConfig:
    """A Hugging Face GPT-2 config dictionary -> our GPTConfig, refusing what GPT-2 code cannot run."""
    if hf.get("activation_function", "gelu_new") != "gelu_new":
        raise UserError(f"unsupported activation_function {hf['activation_function']!r} (GPT-2 uses gelu_new)")
    try:
        if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
            raise UserError(f"unsupported n_inner {hf['n_inner']} (GPT-2 uses 4 * n_embd)")
        return GPTConfig(
            vocab_size=hf["vocab_size"],
            block_size=hf["n_positions"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            d_model=hf["n_embd"],
            dropout=hf.get("resid_pdrop", 0.0),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"invalid GPT-2 config.json ({err!r})") from None


# --- weights ---------------------------------------------------------------------------------------------


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our state dict -> Hugging Face names and layout (Conv1D weights transposed, tied lm_head left out)."""
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # the same tensor as transformer.wte.weight
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        tensors[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return tensors


def from_hf_state_dict(tensors: dict[str, torch.Tensor], model: GPT) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors -> a state dict for `model`, checking every name and shape.

    Accepts keys with or without the `transformer.` prefix (GPT2LMHeadModel vs GPT2Model files).
    """
    expected = {k: v.shape for k, v in model.state_dict().items() if k != "lm_head.weight"}
    state, unexpected = {}, []
    for name, tensor in tensors.items():
        if name.endswith(IGNORED_SUFFIXES) or name == "lm_head.weight":
            continue  # mask buffers; lm_head is re-tied to wte
        key = name if name.startswith("transformer.") else "transformer." + name
        if key not in expected:
            unexpected.append(name)
            continue
        if key.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()
        if tensor.shape != expected[key]:
            raise UserError(f"weight {name} has shape {tuple(tensor.shape)}, the config says {tuple(expected[key])}")
        state[key] = tensor
    missing = sorted(expected.keys() - state.keys())
    if missing or unexpected:
        raise UserError(
            f"weights do not match a GPT-2 of this config: missing {missing[:5]}{'...' if len(missing) > 5 else ''}"
            f", unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    return state


# --- whole folders ---------------------------------------------------------------------------------------


def save_checkpoint(out_dir: str | os.PathLike, model, tokenizer, training: dict | None = None) -> None:
    """Write model, tokenizer and training metadata into `out_dir` (each file atomically)."""
    out_dir = Path(out_dir)
    if is_quantized(model):  # its int8 weights are not what a GPT-2 folder holds
        raise ValueError("an int8-quantized model is for generation only: save the float model instead")
    if isinstance(model, GPT):
        eos = getattr(tokenizer, "eot_token_id", None)
        config = hf_config(model.config, eos_token_id=eos)
        tensors = to_hf_state_dict(model)
    else:  # the bigram baseline is not a GPT-2, so its folder is ours alone
        config = {"model_type": "bigram", **model.config.to_dict()}
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(out_dir / WEIGHTS, safetensors_bytes(tensors, metadata={"format": "pt"}))
    atomic_write_text(out_dir / CONFIG, json.dumps(config, indent=2) + "\n")
    tokenizer.save(out_dir / TOKENIZER)
    atomic_write_text(out_dir / TRAINING, json.dumps(training or {}, indent=2) + "\n")


def resolve_pretrained(name: str | os.PathLike) -> Path:
    """The folder to load: `name` itself, or for a released GPT-2 name ("gpt2", "gpt2-medium", ...) its
    download from the Hugging Face Hub (a local folder of that name wins)."""
    path = Path(name)
    repo = hub_repo(str(name))
    if repo is not None and not path.exists():
        path = download(repo, [CONFIG, WEIGHTS])
    return path


def load_model(path: str | os.PathLike, block_size: int | None = None, dropout: float | None = None):
    """Load the model of a checkpoint folder (ours or a Hugging Face GPT-2 folder).

    `path` may also name a released GPT-2 ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"), which is
    downloaded from the Hugging Face Hub on first use (a local folder of that name wins).

    For fine-tuning, `block_size` can shorten the context (GPT-2's is 1024): the position embedding
    table `wpe` keeps only its first `block_size` rows, which is exactly what the model used for
    positions 0..block_size-1, so nothing else changes. `dropout` replaces the saved dropout rate.
    """
    path = resolve_pretrained(path)
    config = _read_config(path)
    tensors = _read_weights(path)
    if config.get("model_type") == "bigram":
        try:
            model = BigramLanguageModel(BigramConfig(config["vocab_size"], config.get("block_size", 1)))
            model.load_state_dict(tensors)
        except (KeyError, TypeError, RuntimeError) as err:
            raise UserError(f"{path / WEIGHTS} does not match {path / CONFIG}: {str(err).splitlines()[0]}") from None
        return model
    if config.get("model_type") != "gpt2":
        raise UserError(f"{path / CONFIG}: model_type {config.get('model_type')!r} is not gpt2")
    saved = gpt_config_from_hf(config)
    model = GPT(saved)
    model.load_state_dict(from_hf_state_dict(tensors, model), strict=False)  # strict=False: lm_head is tied
    if block_size is None and dropout is None:
        return model
    if block_size is not None and block_size > saved.block_size:
        raise UserError(f"--block-size {block_size} is longer than this model's context ({saved.block_size})")
    wanted = GPTConfig(**{**saved.to_dict(), "block_size": block_size or saved.block_size,
                          "dropout": saved.dropout if dropout is None else dropout})
    resized = GPT(wanted)
    state = model.state_dict()
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][: wanted.block_size]
    resized.load_state_dict(state)
    return resized


def folder_tokenizer(path: str | os.PathLike):
    """The tokenizer a model folder was trained with: ours if the folder holds one, else GPT-2's (a Hugging
    Face GPT-2 folder, or a released model's name, carries no tokenizer of ours)."""
    path = Path(path)
    if (path / TOKENIZER).exists():
        return load_tokenizer(path / TOKENIZER)
    from src.bpe import BPETokenizer  # imported here: only folders without our tokenizer need GPT-2's

    return BPETokenizer.gpt2()


def load_checkpoint(path: str | os.PathLike):
    """Load (model, tokenizer, training metadata) from a folder saved by `save_checkpoint`."""
    path = Path(path)
    model = load_model(path)
    tokenizer = load_tokenizer(path / TOKENIZER)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise UserError(
            f"tokenizer has {tokenizer.vocab_size} tokens but the model {model.config.vocab_size}: "
            f"{path / TOKENIZER} does not belong to this checkpoint"
        )
    training = {}
    if (path / TRAINING).exists():
        training = read_json(path / TRAINING, "training metadata file")
    return model, tokenizer, training


def _read_config(path: Path) -> dict:
    if not path.is_dir():
        raise UserError(f"no checkpoint folder at {path} (train one with: python src/train.py --out-dir {path})")
    if not (path / CONFIG).exists() or not any((path / name).exists() for name in (WEIGHTS, LEGACY_WEIGHTS)):
        raise UserError(
            f"no checkpoint in {path}: expected {CONFIG} and {WEIGHTS} "
            f"(train one with: python src/train.py --out-dir {path})"
        )
    return read_json(path / CONFIG, "model config")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of `model.safetensors`, or of an older folder's `pytorch_model.bin`.

    A .bin file is a pickle, and unpickling can run arbitrary code; `weights_only=True` makes PyTorch
    accept nothing but tensors and plain containers, so a malicious file fails to load instead.
    """
    file = path / WEIGHTS if (path / WEIGHTS).exists() else path / LEGACY_WEIGHTS
    try:
        if file.name == WEIGHTS:
            return load_file(file)
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, garbage, or refused by weights_only: to the user it is all "corrupt"
        raise UserError(f"{file} is corrupt or truncated ({str(err)[:200]}); re-train or restore it") from None
