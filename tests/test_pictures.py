"""`src/pictures.py`: the numbers behind each picture against the model's own forward pass, and the pictures
themselves as real, non-blank PNG files.

Checkpoints are built in the test (random weights, no training): a char GPT, a byte-level BPE GPT and a bigram.
The commands run in process (`main([...])`); one subprocess checks the one-line error a user sees.

Each test was checked by breaking the code on purpose (no softmax, the wrong PCA axis, a byte dropped from a
token's text, the attention of the wrong batch row, ...) and watching it fail.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from src.bigram import BigramLanguageModel
from src.bpe import BPETokenizer
from src.engine.checkpoint import save_checkpoint
from src.engine.errors import run_cli
from src.engine.snapshots import Snapshots
from src.model import GPT
from src.pictures import (
    attention_maps,
    attention_picture,
    embedding_labels,
    embedding_projection,
    main,
    next_token_probs,
    position_similarity,
    principal_components,
    similarity_by_distance,
    token_groups,
    token_spans,
)
from src.tokenizer import CharTokenizer

REPO_ROOT = Path(__file__).resolve().parent.parent
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
UNICODE = "héllo 😀 wörld, 中文 ñ"
PICTURES = ["attention.png", "next_token.png", "embeddings.png", "positions.png", "tokens.png"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def spread(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights far from GPT-2's tiny init, so attention and probabilities are not all alike."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    """A char GPT checkpoint folder, with one snapshot (step 0): (folder, model, tokenizer)."""
    out = tmp_path_factory.mktemp("char")
    tokenizer = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = spread(GPT(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=2, n_head=2, d_model=32))
    save_checkpoint(out, model, tokenizer, {"step": 0})
    Snapshots(out, model, tokenizer, max_params=10**9, fresh=True).save(model, 0)
    return out, model, tokenizer


@pytest.fixture(scope="module")
def bpe_tokenizer():
    # the Unicode line occurs once: its rare characters stay split into bytes, some over several tokens
    text = TEXT * 20 + UNICODE
    return BPETokenizer.train(text, vocab_size=300, special_tokens=["<|endoftext|>"])


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory, bpe_tokenizer):
    out = tmp_path_factory.mktemp("bpe")
    torch.manual_seed(1)
    model = spread(GPT(vocab_size=bpe_tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, d_model=32), 1)
    save_checkpoint(out, model, bpe_tokenizer)
    return out, model, bpe_tokenizer


@pytest.fixture(scope="module")
def bigram_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bigram")
    tokenizer = CharTokenizer.from_text(TEXT)
    model = spread(BigramLanguageModel(vocab_size=tokenizer.vocab_size), 2)
    save_checkpoint(out, model, tokenizer)
    return out, model, tokenizer


def assert_real_png(path: Path) -> None:
    """A PNG file (magic bytes), of some size, that is not one flat colour."""
    import matplotlib.image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, (path, len(data))
    pixels = matplotlib.image.imread(path)[..., :3]  # (H, W, 3) in 0..1
    assert pixels.std() > 0.05, path
    assert (pixels.min(axis=2) < 0.9).mean() > 0.01, f"{path}: almost all white"


def distances(points: torch.Tensor) -> torch.Tensor:
    """(N, C) -> (N, N): the distance between every two points (written out: cdist's fast path is inexact)."""
    return (points[:, None, :] - points[None, :, :]).norm(dim=-1)


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the command through run_cli as the script does: a non-zero exit and one line on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(argv))
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --- the numbers ---------------------------------------------------------------------------------------------


def test_next_token_probs_are_the_softmax_of_the_models_logits(char_run):
    _, model, tokenizer = char_run
    ids = tokenizer.encode("But soft, what")  # 14 tokens: within the context of 16
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))  # (1, T, V)
    for position in (-1, 0, 5):
        expected = F.softmax(logits[0, position], dim=-1)  # (V,)
        top = next_token_probs(model, ids, position)
        assert len(top) == 10
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert [t for t, _ in top] == torch.topk(expected, 10).indices.tolist()
        torch.testing.assert_close(torch.tensor(probs), torch.topk(expected, 10).values, atol=1e-5, rtol=1e-4)
        everything = next_token_probs(model, ids, position, k=tokenizer.vocab_size)
        assert sorted(t for t, _ in everything) == list(range(tokenizer.vocab_size))
        assert sum(p for _, p in everything) == pytest.approx(1.0, abs=1e-5)


def test_next_token_probs_of_a_long_prompt_use_the_last_block_size_tokens(char_run):
    _, model, tokenizer = char_run
    ids = tokenizer.encode(TEXT[:40])  # 40 tokens, the context is 16
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[30 - 15 : 31]]))  # what the model reads to predict after token 30
    expected = F.softmax(logits[0, -1], dim=-1)
    top = next_token_probs(model, ids, 30, k=5)
    torch.testing.assert_close(torch.tensor([p for _, p in top]), torch.topk(expected, 5).values)
    assert [t for t, _ in top] == torch.topk(expected, 5).indices.tolist()


def test_attention_maps_are_what_the_model_returns_and_rows_add_up_to_one(char_run):
    _, model, tokenizer = char_run
    ids = tokenizer.encode("ROMEO:\nBut soft")
    T = len(ids)
    attention = attention_maps(model, ids)
    with torch.no_grad():
        _, _, expected = model(torch.tensor([ids]), return_attention=True)  # (n_layer, 1, n_head, T, T)
    assert attention.shape == (2, 2, T, T)
    torch.testing.assert_close(attention, expected[:, 0])
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 2, T))
    assert (attention.triu(diagonal=1) == 0).all()  # no token reads the future
    assert attention.std() > 0.05  # the spread weights make the heads look at different tokens


def test_the_bigram_has_no_attention_maps(bigram_run):
    _, model, tokenizer = bigram_run
    assert attention_maps(model, tokenizer.encode("ROMEO")).shape == (0, 0, 5, 5)


def test_embedding_projection_recovers_a_plane_in_8d():
    # A 11 x 5 grid in a plane: its two principal axes are the grid's axes (x spreads more than y), so PCA
    # must give back the grid coordinates (up to a sign each), and every distance between points.
    x, y = torch.meshgrid(torch.linspace(-5, 5, 11), torch.linspace(-1, 1, 5), indexing="ij")
    coords = torch.stack([x.flatten(), y.flatten()], dim=1)  # (55, 2)
    basis, _ = torch.linalg.qr(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)))  # (8, 2) orthonormal
    weight = coords @ basis.T + torch.arange(8.0)  # (55, 8): the plane, moved away from the origin
    points = embedding_projection(weight)
    assert points.shape == (55, 2)
    torch.testing.assert_close(distances(points), distances(weight), atol=1e-4, rtol=1e-4)
    for axis in range(2):
        sign = torch.sign((points[:, axis] * coords[:, axis]).sum())
        torch.testing.assert_close(points[:, axis] * sign, coords[:, axis], atol=1e-4, rtol=1e-4)
    _, variance = principal_components(weight)
    total = coords.var(dim=0).sum()
    torch.testing.assert_close(variance, coords.var(dim=0) / total, atol=1e-5, rtol=1e-4)


def test_embedding_projection_of_a_line_is_the_position_on_it():
    t = torch.linspace(-3, 3, 20)
    direction = F.normalize(torch.arange(1.0, 9.0), dim=0)  # (8,)
    weight = t[:, None] * direction + 2.0  # (20, 8): 20 points on a line
    points, variance = principal_components(weight)
    torch.testing.assert_close(points[:, 0], t, atol=1e-4, rtol=1e-4)  # the sign rule: largest entry positive
    torch.testing.assert_close(points[:, 1], torch.zeros(20), atol=1e-4, rtol=0)
    torch.testing.assert_close(variance, torch.tensor([1.0, 0.0]), atol=1e-5, rtol=0)


def test_position_similarity_is_the_cosine_of_rows():
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [-3.0, 0.0]])
    sim = position_similarity(weight)
    s = 2**-0.5
    expected = torch.tensor([[1, s, 0, -1], [s, 1, s, -s], [0, s, 1, 0], [-1, -s, 0, 1]])
    torch.testing.assert_close(sim, expected)
    torch.testing.assert_close(similarity_by_distance(sim), torch.tensor([1.0, (s + s + 0) / 3, (0 - s) / 2, -1.0]))


def test_token_spans_put_back_together_give_the_text(bpe_tokenizer):
    char = CharTokenizer.from_text(TEXT + UNICODE)
    for text in (TEXT, UNICODE, "a\n\nb  e"):
        assert token_spans(char, text) == list(text)  # one character, one token
    for text in (TEXT, UNICODE, "héllo 😀 wörld", "😀😀", " \n\n  x"):
        spans = token_spans(bpe_tokenizer, text)
        assert "".join(spans) == text and all(spans), spans
        ids = bpe_tokenizer.encode(text)
        groups = token_groups(bpe_tokenizer, ids)
        assert [i for _, group in groups for i in group] == ids  # every token in exactly one piece
        assert all(bpe_tokenizer.decode_bytes(group) == piece.encode() for piece, group in groups)
    # the test is about something: these characters occur once in the BPE's training text, so their bytes were
    # never merged, and each is split over several tokens
    groups = token_groups(bpe_tokenizer, bpe_tokenizer.encode("héllo 😀 wörld"))
    split = [(piece, len(group)) for piece, group in groups if len(group) > 1]
    assert split == [("é", 2), ("😀", 4), ("ö", 2)], groups


def test_a_large_vocabulary_labels_its_longer_tokens(bpe_tokenizer, monkeypatch):
    import src.pictures

    labels, which = embedding_labels(CharTokenizer.from_text(TEXT), len(set(TEXT)))
    assert len(labels) == len(set(TEXT)) and which == f"all {len(set(TEXT))} tokens"
    monkeypatch.setattr(src.pictures, "MAX_EMBEDDING_LABELS", 20)
    labels, which = embedding_labels(bpe_tokenizer, bpe_tokenizer.vocab_size)
    assert list(labels) == list(range(256, 276))  # the first 20 merges: the commonest pairs
    assert "the first 20 tokens longer than one byte" in which and "commonest pairs" in which
    wide = CharTokenizer.from_text("ab" + "".join(chr(0x4E00 + i) for i in range(30)))  # 32 characters, CJK
    labels, which = embedding_labels(wide, wide.vocab_size)  # ids by code point: neither BPE nor commonest
    assert len(labels) == 20 and "commonest" not in which


# --- the pictures ------------------------------------------------------------------------------------------------


def test_a_gpt_gets_five_real_pictures(char_run, tmp_path, capsys):
    out, _, _ = char_run
    written = main(["--out-dir", str(out), "--prompt", "ROMEO:\nBut soft", "--position", "3", "--to",
                    str(tmp_path)])
    assert [p.name for p in written] == PICTURES
    assert capsys.readouterr().out.split() == [str(tmp_path / name) for name in PICTURES]
    for name in PICTURES:
        assert_real_png(tmp_path / name)


def test_the_default_folder_is_out_dir_pictures(char_run):
    out, _, _ = char_run
    written = main(["--out-dir", str(out), "--stage", "snapshots/step-000000"])  # the default prompt, a snapshot
    assert written == [out / "pictures" / name for name in PICTURES]
    for path in written:
        assert_real_png(path)


def test_a_bpe_model_with_split_characters_draws_without_missing_glyphs(bpe_run, tmp_path, capsys):
    out, _, _ = bpe_run
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*[Gg]lyph")  # matplotlib: "Glyph 20013 (...) missing from font"
        written = main(["--out-dir", str(out), "--prompt", UNICODE, "--to", str(tmp_path)])
    assert [p.name for p in written] == PICTURES
    for path in written:
        assert_real_png(path)


def test_a_long_prompt_is_cropped_to_the_context_and_says_so(char_run):
    _, model, tokenizer = char_run
    ids = tokenizer.encode(TEXT[:40])
    fig = attention_picture(model, tokenizer, ids, "here")
    assert "the last 16 of the prompt's 40 tokens (the model's context)" in fig._suptitle.get_text().replace(
        "\n", " ")
    shown = torch.tensor(fig.axes[0].images[0].get_array().filled(0.0))  # layer 0, head 0; the future drawn empty
    torch.testing.assert_close(shown, attention_maps(model, ids[-16:])[0, 0])


def test_the_bigram_gets_three_pictures_and_notes_for_the_other_two(bigram_run, tmp_path, capsys):
    out, _, _ = bigram_run
    written = main(["--out-dir", str(out), "--prompt", "ROMEO", "--to", str(tmp_path)])
    assert [p.name for p in written] == ["next_token.png", "embeddings.png", "tokens.png"]
    for path in written:
        assert_real_png(path)
    assert not (tmp_path / "attention.png").exists() and not (tmp_path / "positions.png").exists()
    err = capsys.readouterr().err
    assert "the bigram model has no attention" in err and "positions.png" in err


@pytest.mark.parametrize("args, words", [
    (["--stage", "../x"], "outside the output folder"),
    (["--stage", "snapshots/step-000999"], "no snapshot of step 999"),
    (["--stage", "nothing"], "no stage 'nothing'"),
    (["--prompt", ""], "the prompt is empty"),
    (["--prompt", "ROMEO~"], "not in the tokenizer's vocabulary"),
    (["--position", "15"], "--position 15 is outside the prompt, which has 15 token(s)"),
    (["--position", "-16"], "outside the prompt"),
    (["--position", "x"], "invalid int value"),
])
def test_bad_input_is_one_line(char_run, tmp_path, capsys, args, words):
    out, _, _ = char_run
    line = one_line_error(capsys, ["--out-dir", str(out), "--prompt", "ROMEO:\nBut soft", "--to", str(tmp_path),
                                   *args])
    assert words in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_missing_folder_is_one_line_from_the_command_line(tmp_path):
    proc = subprocess.run([sys.executable, "src/pictures.py", "--out-dir", str(tmp_path / "missing")], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "missing" in lines[0], proc.stderr
