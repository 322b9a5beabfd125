"""Looking inside a model: the explicit attention path, snapshots of training, stages, and the loss plot.

The oracle for the attention weights is Hugging Face `transformers` run with its eager attention and
`output_attentions=True` on the same weights. Each test was checked by breaking the code on purpose (the
mask shifted by one, the scale dropped, the snapshot saved from the wrong step, the stage check removed).
"""

from __future__ import annotations

import os

import matplotlib.image
import pytest
import torch
import transformers

from src.bigram import BigramLanguageModel
from src.engine.checkpoint import load_pretrained, save_checkpoint
from src.engine.config import parse_args
from src.engine.errors import UserError
from src.engine.metrics import MetricsLog, overfitting_start
from src.engine.snapshots import Snapshots, list_snapshots, load_snapshot, snapshot_file
from src.engine.stages import list_stages, load_stage
from src.model import GPT
from src.tokenizer import CharTokenizer
from src.train import train

TINY = ["--n-layer", "2", "--d-model", "32", "--block-size", "16", "--batch-size", "4", "--eval-iters", "2",
        "--sample-tokens", "0", "--dtype", "float32", "--device", "cpu", "--compile", "off", "--seed", "7",
        "--warmup-iters", "2", "--lr", "3e-3"]


def gpt(seed: int = 0, **sizes) -> GPT:
    torch.manual_seed(seed)
    return GPT(**{"vocab_size": 30, "block_size": 16, "n_layer": 3, "n_head": 4, "d_model": 32, **sizes}).eval()


# --- the explicit attention path -------------------------------------------------------------------------------


def test_return_attention_gives_the_fast_paths_logits_and_proper_weights():
    model = gpt()
    idx = torch.randint(0, 30, (2, 11))
    fast, _ = model(idx)
    logits, loss, attention = model(idx, targets=idx, return_attention=True)
    assert attention.shape == (3, 2, 4, 11, 11)  # (n_layer, B, n_head, T, T)
    torch.testing.assert_close(logits, fast, atol=1e-5, rtol=1e-5)
    assert loss is not None
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 2, 4, 11), atol=1e-6, rtol=0)
    assert torch.all(attention.triu(diagonal=1) == 0)  # exactly zero on the future, not just small
    past = torch.ones(11, 11, dtype=torch.bool).tril()
    assert torch.all(attention[..., past] > 0)  # every earlier position gets some weight


def test_attention_weights_equal_hugging_faces_eager_attention():
    model = gpt(seed=1)
    config, tensors = model.export()
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config, attn_implementation="eager")).eval()
    hf.load_state_dict(tensors, strict=False)
    idx = torch.randint(0, 30, (1, 16))
    with torch.no_grad():
        out = hf(idx, output_attentions=True)
    _, _, attention = model(idx, return_attention=True)
    torch.testing.assert_close(attention, torch.stack(out.attentions), atol=1e-5, rtol=1e-4)


def test_the_fast_path_and_cached_decoding_never_take_the_explicit_path(monkeypatch):
    import src.model

    model = gpt()

    def refuse(*args):
        raise AssertionError("the explicit attention ran on the fast path")

    monkeypatch.setattr(src.model, "explicit_attention", refuse)
    model(torch.randint(0, 30, (1, 8)))
    model.generate([1, 2, 3], max_new_tokens=20)  # prefill, decode and a slide past block_size
    with pytest.raises(AssertionError, match="explicit"):
        model(torch.randint(0, 30, (1, 8)), return_attention=True)
    with pytest.raises(ValueError, match="without a KV cache"):
        model(torch.tensor([[1]]), cache=model.new_kv_cache(1), return_attention=True)


def test_the_bigram_has_no_attention_to_return():
    logits, _, attention = BigramLanguageModel(vocab_size=5)(torch.tensor([[1, 2, 3]]), return_attention=True)
    assert logits.shape == (1, 3, 5) and attention.shape == (0, 1, 0, 3, 3)


# --- snapshots ------------------------------------------------------------------------------------------------


def run(text_file, out_dir, cache, *flags):
    return train(parse_args([*TINY, "--data", str(text_file), "--out-dir", str(out_dir), "--cache-dir", str(cache),
                             *map(str, flags)]))


def test_training_keeps_a_snapshot_per_evaluation_close_to_the_checkpoint(text_file, tmp_path):
    out = tmp_path / "out"
    run(text_file, out, tmp_path / "cache", "--max-iters", "6", "--eval-interval", "3")
    assert list_snapshots(out) == [0, 3, 6]
    snap, snap_tok = load_snapshot(out, 6)
    model, tokenizer = load_pretrained(out)  # the latest checkpoint is step 6's
    assert snap_tok.to_dict() == tokenizer.to_dict()
    idx = torch.tensor([tokenizer.encode("the king said")])
    gap = (snap(idx)[0] - model(idx)[0]).abs().max().item()
    assert 0 < gap < 1e-2  # float16 weights: close, not equal (the snapshots docstring says ~1e-3)
    first, _ = load_snapshot(out, 0)
    assert not torch.equal(first.transformer.wte.weight, snap.transformer.wte.weight)  # each step its own
    with pytest.raises(UserError, match=r"no snapshot of step 4 .*\[0, 3, 6\]"):
        load_snapshot(out, 4)

    # A fresh run in the same folder removes the old run's snapshots; a model above the cap keeps none.
    run(text_file, out, tmp_path / "cache", "--max-iters", "4", "--eval-interval", "2", "--snapshot-max-params", "10")
    assert list_snapshots(out) == [] and not snapshot_file(out, 6).exists()
    run(text_file, out, tmp_path / "cache", "--max-iters", "4", "--eval-interval", "2")
    assert list_snapshots(out) == [0, 2, 4]


def test_snapshots_are_small_and_only_under_the_cap(tmp_path):
    model, tokenizer = gpt(), CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .,!")
    Snapshots(tmp_path, model, tokenizer, max_params=model.num_params(), fresh=True).save(model, 5)
    size = snapshot_file(tmp_path, 5).stat().st_size
    assert size < 2 * model.num_params() + 4096  # 2 bytes a weight (float16), plus the header
    Snapshots(tmp_path / "big", model, tokenizer, max_params=model.num_params() - 1, fresh=True).save(model, 5)
    assert list_snapshots(tmp_path / "big") == []
    Snapshots(tmp_path / "other", model, tokenizer, max_params=10**9, fresh=True, enabled=False).save(model, 5)
    assert list_snapshots(tmp_path / "other") == []  # not the main process: writes nothing


def test_the_snapshot_sizes_the_readme_states_for_the_default_run(tmp_path):
    """README and snapshots.py: the default model keeps 9 snapshots of 1.7 MB in 2,000 steps; GPT-2 124M is over
    the cap."""
    from src.engine.config import TrainConfig
    from src.train import build_model

    cfg = TrainConfig()
    model = build_model(cfg, vocab_size=71)  # the default corpus has 71 characters
    Snapshots(tmp_path, model, CharTokenizer.from_text("ab"), cfg.snapshot_max_params, fresh=True).save(model, 0)
    assert cfg.max_iters // cfg.eval_interval + 1 == 9  # step 0, 250, ..., 2000
    assert snapshot_file(tmp_path, 0).stat().st_size / 1e6 == pytest.approx(1.7, abs=0.05)
    assert 124_000_000 > cfg.snapshot_max_params > model.num_params()


# --- stages -------------------------------------------------------------------------------------------------


def test_stages_list_snapshots_then_folders_and_refuse_paths_outside(tmp_path):
    out = tmp_path / "out"
    model, tokenizer = gpt(), CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .,!")
    save_checkpoint(out, model, tokenizer, {"step": 20})
    save_checkpoint(out / "best", model, tokenizer, {"step": 10})
    snapshots = Snapshots(out, model, tokenizer, max_params=10**9, fresh=True)
    for step in (0, 10, 20):
        snapshots.save(model, step)
    save_checkpoint(tmp_path / "secret", model, tokenizer)
    os.symlink(tmp_path / "secret", out / "link")
    stages = list_stages(out)
    assert [(s.name, s.label, s.step) for s in stages] == [
        ("snapshots/step-000000", "step 0", 0), ("snapshots/step-000010", "step 10", 10),
        ("snapshots/step-000020", "step 20", 20), ("best", "best (step 10)", 10), (".", "latest (step 20)", 20)]
    # (the link to a folder outside is not listed)
    for stage in stages:
        loaded, loaded_tok = load_stage(out, stage.name)
        assert loaded.config == model.config and loaded_tok.chars == tokenizer.chars
    for bad in ("..", "../secret", str(tmp_path / "secret"), "snapshots/../../secret", "link", "best/../.."):
        with pytest.raises(UserError, match="outside the output folder"):
            load_stage(out, bad)
    for unknown in ("snapshots/step-000005", "snapshots", "nothing"):
        with pytest.raises(UserError, match="no s"):
            load_stage(out, unknown)


def test_a_bigram_folder_is_a_stage_too(tmp_path):
    save_checkpoint(tmp_path, BigramLanguageModel(vocab_size=3), CharTokenizer.from_text("abc"))
    model, _ = load_stage(tmp_path, ".")
    assert model.num_params() == 9


# --- the loss plot ----------------------------------------------------------------------------------------------


def evals(*pairs):
    return [{"step": 100 * i, "tokens": 6400 * i, "train_loss": t, "val_loss": v} for i, (t, v) in enumerate(pairs)]


def test_overfitting_starts_at_the_best_validation_loss_once_validation_rises():
    assert overfitting_start([]) is None
    assert overfitting_start(evals((4.0, 4.0), (2.0, 2.1), (1.5, 1.8))) is None  # still improving
    assert overfitting_start(evals((4.0, 4.0), (2.0, 2.1), (1.9, 2.105))) is None  # flat, within the noise
    assert overfitting_start(evals((4.0, 4.0), (2.0, 2.1), (1.5, 1.9), (1.0, 2.0), (0.8, 2.3)))["step"] == 200
    assert overfitting_start(evals((4.0, 4.0), (2.0, 2.1), (2.4, 2.5))) is None  # both rose: diverging, not overfitting


def test_loss_plot_marks_ln_v_and_overfitting(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for row in evals((4.2, 4.2), (2.0, 2.1), (1.5, 1.9), (1.0, 2.0), (0.8, 2.3)):
        log.log(event="eval", **row)
        log.log(event="train", **{**row, "step": row["step"] + 1, "tokens": row["tokens"] + 64})
    log.plot(tmp_path / "loss.png", title="test", vocab_size=65)
    image = matplotlib.image.imread(tmp_path / "loss.png")  # (H, W, 4) floats
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.5) & (image[..., 2] < 0.5)  # the overfitting marks
    assert red.sum() > 50
    log2 = MetricsLog(tmp_path / "m2.jsonl")
    for row in evals((4.2, 4.2), (2.0, 2.1), (1.5, 1.8)):
        log2.log(event="eval", **row)
    log2.plot(tmp_path / "loss2.png", title="test", vocab_size=65)
    image = matplotlib.image.imread(tmp_path / "loss2.png")
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.5) & (image[..., 2] < 0.5)
    assert red.sum() == 0  # no overfitting, no marks
