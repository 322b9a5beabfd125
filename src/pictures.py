"""Pictures of a trained model: what it looks at, what it expects next, where it puts tokens and positions.

A loss curve says how well a model predicts; it does not say how. These five pictures open the model up on
one prompt, with nothing but its weights and one forward pass:

    python src/pictures.py --out-dir out --prompt "ROMEO:"                  # -> out/pictures/*.png
    python src/pictures.py --out-dir out --stage snapshots/step-000250      # the same model at step 250

    attention.png    every head of every layer: for each token of the prompt (a row), how much it takes from
                     each earlier token (a column). Each row adds up to 1; above the diagonal is the future,
                     which a GPT cannot see. Some heads look at the token just before, some at the start of the
                     line, some at the same letter earlier: nobody told them to.
    next_token.png   the 10 tokens the model finds likeliest after a position of the prompt, with their
                     probabilities (the softmax of its logits), and the token that really comes next there.
    embeddings.png   the token embedding table (one row of d_model numbers per token) flattened to 2-D with
                     PCA, the two directions in which the rows differ most. Tokens used alike end up close:
                     in a character model the vowels gather, capitals gather, punctuation gathers.
    positions.png    the position embedding table (one row per position, added to the token's row) and how
                     alike the rows of two positions are: a trained model makes neighbouring positions alike,
                     which is how it knows "near" from "far".
    tokens.png       the prompt cut into its tokens, one coloured box each: what the model actually reads.

The bigram model has no attention and no positions (it looks at one token), so it gets three pictures; its
"embedding" is its whole table, row i = the scores of the token after token i.

Each picture is two steps: a small function computes the numbers from the model or tokenizer
(`attention_maps`, `next_token_distribution`, `principal_components`, `position_similarity`, `token_groups`;
`next_token_probs`, `embedding_projection` and `token_spans` give the same numbers in the handier form the
tutorial uses), and a `draw_*` function of engine/drawing.py turns those numbers into a matplotlib Figure. The
tests check the numbers against the model's own forward pass; the drawing only has to show them.

Long prompts are cropped: the model sees at most its context (`block_size`) of tokens, and an attention
grid of more than 64 tokens is too fine to read, so attention.png shows the last ones and says so.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as `python src/pictures.py`: make the `src` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.nn import functional as F

from src.engine.drawing import (
    draw_attention,
    draw_embeddings,
    draw_next_token,
    draw_positions,
    draw_tokens,
    save_figure,
    snippet,
    token_label,
)
from src.engine.errors import ArgumentParser, UserError, run_cli
from src.engine.stages import load_described
from src.tokenizer import Tokenizer

DEFAULT_PROMPT = "ROMEO:\nBut soft, what light"  # 27 characters of the default corpus: short enough to label
MAX_ATTENTION_TOKENS = 64  # more and each cell of the attention grid is too small to read
MAX_AXIS_LABELS = 32  # token labels on the attention grid's axes up to this many tokens
MAX_EMBEDDING_LABELS = 200  # a larger vocabulary gets this many labelled points (the rest are dots)
TOP_K = 10  # bars in next_token.png


# --- the numbers ---------------------------------------------------------------------------------------------


@contextmanager
def evaluating(model):
    """The model in eval mode (no dropout) with no autograd, put back as it was afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def _batch(model, ids: list[int]) -> torch.Tensor:
    """ids -> a (1, T) tensor on the model's device."""
    device = next(model.parameters()).device
    return torch.tensor([list(ids)], dtype=torch.long, device=device)


def attention_maps(model, ids: list[int]) -> torch.Tensor:
    """Every head's attention weights on the sequence `ids` (at most block_size tokens): (n_layer, n_head, T, T).

    [layer, head, q, k] is the share of token k in what the token at position q gathers: each row q adds up
    to 1 over k = 0..q, and k > q (the future) is 0. The bigram model has no layers: (0, 0, T, T).
    """
    with evaluating(model):
        _, _, attention = model(_batch(model, ids), return_attention=True)  # (n_layer, 1, n_head, T, T)
    return attention[:, 0].float().cpu()


def resolve_position(position: int, n_tokens: int) -> int:
    """A position in the prompt, counted from the end when negative (-1 = the last token), as 0..n_tokens-1."""
    if not -n_tokens <= position < n_tokens:
        raise UserError(f"--position {position} is outside the prompt, which has {n_tokens} token(s): "
                        f"use 0..{n_tokens - 1}, or -1 for the last")
    return position % n_tokens


def next_token_distribution(model, ids: list[int], position: int = -1) -> torch.Tensor:
    """The model's probabilities for the token after `ids[position]`: (V,), adding up to 1.

    The model reads what it would read there: the tokens up to `position`, the last block_size of them.
    """
    position = resolve_position(position, len(ids))
    start = max(0, position + 1 - model.block_size)
    with evaluating(model):
        logits, _ = model(_batch(model, ids[start : position + 1]))  # (1, t, V)
    return F.softmax(logits[0, -1].float(), dim=-1).cpu()  # (V,): scores -> probabilities


def next_token_probs(model, ids: list[int], position: int = -1, k: int = TOP_K) -> list[tuple[int, float]]:
    """The `k` likeliest tokens after `ids[position]`, as (token id, probability), likeliest first."""
    probs = next_token_distribution(model, ids, position)  # (V,)
    top = torch.topk(probs, min(k, probs.numel()))
    return list(zip(top.indices.tolist(), top.values.tolist(), strict=True))


def embedding_table(model) -> tuple[torch.Tensor, str]:
    """(the table whose rows stand for the tokens (V, C), what it is, in words).

    A GPT's token embedding `wte`; the bigram has none, and its one table plays the part: its row i is the
    scores of the token after token i, so two tokens whose rows are close are followed by the same tokens.
    """
    state = model.state_dict()
    if "transformer.wte.weight" in state:
        return state["transformer.wte.weight"], "token embeddings (wte)"
    return state["token_embedding_table.weight"], "the bigram's table (row i = scores of the token after i)"


def position_table(model) -> torch.Tensor | None:
    """The position embedding `wpe` (block_size, C), or None for a model without one (the bigram)."""
    return model.state_dict().get("transformer.wpe.weight")


def principal_components(weight: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """PCA of the rows of `weight` (N, C): (each row's coordinates on the k main axes (N, k), the share of
    the rows' variance each axis holds (k,)).

    Centre the rows (PCA looks at how rows differ, not where they all sit); the axes are then the eigenvectors
    of the rows' C x C covariance matrix x^T x, in order of their eigenvalues, the variance along each axis.
    (The same axes as the singular value decomposition of x, and much faster for a large table: for GPT-2's
    50257 x 768 it is a 768 x 768 problem.)
    """
    x = weight.detach().float().cpu()  # (N, C)
    x = x - x.mean(dim=0, keepdim=True)
    variance, vectors = torch.linalg.eigh((x.T @ x).double())  # (C,), (C, C): ascending, one axis per column
    variance, vectors = variance.flip(0).clamp_min(0), vectors.flip(1)  # largest first
    axes = torch.zeros(k, x.shape[1])
    axes[: min(k, x.shape[1])] = vectors[:, :k].T.float()  # (k, C); zeros if C < k
    # An axis's sign is arbitrary: make each one's largest entry positive, so pictures do not flip for nothing.
    signs = torch.sign(axes.gather(1, axes.abs().argmax(dim=1, keepdim=True)))  # (k, 1)
    axes = axes * torch.where(signs == 0, 1.0, signs)
    share = torch.zeros(k)
    share[: min(k, variance.numel())] = (variance[:k] / variance.sum().clamp_min(1e-30)).float()
    return x @ axes.T, share  # (N, k), (k,)


def embedding_projection(weight: torch.Tensor) -> torch.Tensor:
    """The rows of `weight` (N, C) as points in 2-D (N, 2): their coordinates on the two main PCA axes."""
    return principal_components(weight, 2)[0]


def position_similarity(weight: torch.Tensor) -> torch.Tensor:
    """Cosine similarity between every two rows of a position table (T, C): (T, T), 1 on the diagonal."""
    unit = F.normalize(weight.detach().float().cpu(), dim=1)  # (T, C), each row of length 1
    return unit @ unit.T


def similarity_by_distance(similarity: torch.Tensor) -> torch.Tensor:
    """(T,): entry d is the average similarity of two positions d apart (the mean of the d-th diagonal)."""
    return torch.stack([similarity.diagonal(d).mean() for d in range(similarity.shape[0])])


def token_groups(tokenizer: Tokenizer, ids: list[int]) -> list[tuple[str, list[int]]]:
    """The text of each token, as (text, [its id]); a character whose bytes are split over several tokens
    (a byte-level BPE does that to rare characters) makes one group, (the character, [the ids])."""
    groups, pending, pending_ids = [], b"", []
    for token in ids:
        pending += tokenizer.decode_bytes([token])
        pending_ids.append(token)
        try:
            text = pending.decode("utf-8")
        except UnicodeDecodeError as err:
            if err.reason == "unexpected end of data":
                continue  # the character goes on in the next token
            text = pending.decode("utf-8", errors="replace")  # bytes that are no text at all
        groups.append((text, pending_ids))
        pending, pending_ids = b"", []
    if pending_ids:  # the ids ended in the middle of a character
        groups.append((pending.decode("utf-8", errors="replace"), pending_ids))
    return groups


def token_spans(tokenizer: Tokenizer, text: str) -> list[str]:
    """`text` cut where its tokens end: the pieces, which put together give `text` back."""
    return [piece for piece, _ in token_groups(tokenizer, tokenizer.encode(text))]


# --- the five pictures of one model and prompt ------------------------------------------------------------------


def attention_picture(model, tokenizer: Tokenizer, ids: list[int], where: str):
    """attention.png's figure, or None for a model without attention."""
    window = min(model.block_size, MAX_ATTENTION_TOKENS)
    shown = ids[-window:]
    attention = attention_maps(model, shown)  # (n_layer, n_head, T, T)
    if attention.shape[0] == 0:
        return None
    T = len(shown)
    labels = [token_label(tokenizer, t) for t in shown] if T <= MAX_AXIS_LABELS else None
    cropped = ""
    if T < len(ids):
        why = "the model's context" if window == model.block_size else "more would be unreadable"
        cropped = f", the last {T} of the prompt's {len(ids)} tokens ({why})"
    return draw_attention(attention, labels, f"attention of every head{cropped}: row = a token (the query), "
                                              "column = an earlier token it reads (the key); grey = the future, "
                                              f"which it cannot see\n{where}")


def next_token_picture(model, tokenizer: Tokenizer, ids: list[int], position: int, where: str):
    """next_token.png's figure: the likeliest tokens after `ids[position]`, and the one that follows in the prompt."""
    position = resolve_position(position, len(ids))
    probs = next_token_distribution(model, ids, position)  # (V,)
    top = torch.topk(probs, min(TOP_K, probs.numel()))
    bars = [(token_label(tokenizer, t), p) for t, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)]
    actual = None
    if position + 1 < len(ids):
        token = ids[position + 1]
        top_ids = top.indices.tolist()
        rank = top_ids.index(token) + 1 if token in top_ids else int((probs > probs[token]).sum()) + 1  # 1 = likeliest
        actual = (token_label(tokenizer, token), float(probs[token]), rank)
    context = tokenizer.decode(ids[max(0, position + 1 - model.block_size) : position + 1])
    title = (f"what comes after '{snippet(context)}'? (after token {position} of 0..{len(ids) - 1}; "
             f"the {len(bars)} likeliest of {probs.numel()} tokens)\n{where}")
    return draw_next_token(bars, actual, title)


def embedding_labels(tokenizer: Tokenizer, vocab_size: int) -> tuple[dict[int, str], str]:
    """Which tokens get a label in embeddings.png: ({id: label}, which ones, in words).

    All of a small vocabulary. Of a large one, the first MAX_EMBEDDING_LABELS tokens longer than one byte:
    a BPE learns its merges in the order of how common the pair is, so these are its commonest pieces of text.
    """
    if vocab_size <= MAX_EMBEDDING_LABELS:
        return {t: token_label(tokenizer, t) for t in range(vocab_size)}, f"all {vocab_size} tokens"
    chosen = {}
    for token in range(vocab_size):
        try:
            raw = tokenizer.decode_bytes([token])
        except UserError:  # an id the tokenizer does not use (a model's table can be larger)
            continue
        if len(raw) > 1:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                continue  # part of a character: nothing to read
            chosen[token] = token_label(tokenizer, token)
            if len(chosen) == MAX_EMBEDDING_LABELS:
                break
    if not chosen:  # every token is one byte or one character: label the first ones
        chosen = {t: token_label(tokenizer, t) for t in range(MAX_EMBEDDING_LABELS)}
        return chosen, f"labels: the first {len(chosen)} of {vocab_size} tokens"
    why = " (a BPE learns the commonest pairs first)" if tokenizer.kind == "bpe" else ""
    return chosen, f"labels: the first {len(chosen)} tokens longer than one byte, of {vocab_size}{why}"


def embeddings_picture(model, tokenizer: Tokenizer, where: str):
    """embeddings.png's figure: every token's row of the embedding table, flattened to 2-D."""
    weight, what = embedding_table(model)  # (V, C)
    points, variance = principal_components(weight, 2)  # (V, 2), (2,)
    labels, which = embedding_labels(tokenizer, weight.shape[0])
    title = f"{what}: {weight.shape[0]} rows of {weight.shape[1]} numbers, seen along their 2 main axes (PCA)\n"
    return draw_embeddings(points, labels, variance, f"{title}{which}; {where}")


def positions_picture(model, where: str):
    """positions.png's figure, or None for a model without a position table."""
    weight = position_table(model)  # (block_size, C)
    if weight is None:
        return None
    similarity = position_similarity(weight)  # (T, T)
    return draw_positions(weight.float().cpu(), similarity, similarity_by_distance(similarity),
                          f"{weight.shape[0]} positions x {weight.shape[1]} channels; {where}")


def tokens_picture(tokenizer: Tokenizer, text: str, ids: list[int]):
    """tokens.png's figure: `text` (whose ids are `ids`) on one coloured box per token."""
    groups = token_groups(tokenizer, ids)
    pieces = [piece for piece, _ in groups]
    split = {i for i, (_, group) in enumerate(groups) if len(group) > 1}
    n_bytes = len(text.encode("utf-8"))
    title = (f"{len(ids)} tokens for {len(text)} characters ({n_bytes} bytes): the {tokenizer.kind} tokenizer, "
             f"vocabulary {tokenizer.vocab_size}; one coloured box per token")
    if split:
        title += "\na dashed box: one character whose bytes are split over several tokens"
    return draw_tokens(pieces, title, ids=ids, split=split)


# --- the command line ------------------------------------------------------------------------------------------


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python src/pictures.py",
                       description="Draw what a trained model does with a prompt: attention, next-token "
                                   "probabilities, embeddings, positions, tokens (PNG files).")
    p.add_argument("--out-dir", default="out", help="the folder train.py wrote (default: out)")
    p.add_argument("--stage", default=".",
                   help="which model in it: . (the latest, default), best, snapshots/step-000250, ...")
    p.add_argument("--prompt", default=None, help=f"the text to look at (default: {DEFAULT_PROMPT!r})")
    p.add_argument("--position", type=int, default=-1,
                   help="next_token.png: after which token of the prompt (0 = the first, default -1 = the last)")
    p.add_argument("--to", default=None, help="where to write the pictures (default: OUT_DIR/pictures)")
    return p


def prompt_ids(tokenizer: Tokenizer, prompt: str | None) -> tuple[str, list[int]]:
    """(the prompt, its ids): the default prompt when none is given; a one-line error for one the model cannot
    read or that has no tokens."""
    text = DEFAULT_PROMPT if prompt is None else prompt
    try:
        ids = tokenizer.encode(text)
    except UserError as err:
        if prompt is None:
            raise UserError(f"the default prompt {DEFAULT_PROMPT!r} does not suit this model ({err}): "
                            "give one with --prompt") from None
        raise
    if not ids:
        raise UserError("the prompt is empty: give some text with --prompt")
    return text, ids


def main(argv: list[str] | None = None) -> list[Path]:
    args = build_parser().parse_args(argv)
    model, tokenizer, where = load_described(args.out_dir, args.stage)
    text, ids = prompt_ids(tokenizer, args.prompt)
    resolve_position(args.position, len(ids))  # a bad --position fails before any picture is written
    folder = Path(args.to) if args.to is not None else Path(args.out_dir) / "pictures"
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write pictures into {folder}: it is a file, not a folder")
    pictures = {
        "attention.png": lambda: attention_picture(model, tokenizer, ids, where),
        "next_token.png": lambda: next_token_picture(model, tokenizer, ids, args.position, where),
        "embeddings.png": lambda: embeddings_picture(model, tokenizer, where),
        "positions.png": lambda: positions_picture(model, where),
        "tokens.png": lambda: tokens_picture(tokenizer, text, ids),
    }
    skipped = {"attention.png": "the bigram model has no attention (it looks at the current token only)",
               "positions.png": "the model has no position embedding (it looks at the current token only)"}
    written = []
    for name, make in pictures.items():
        fig = make()
        if fig is None:
            print(f"note: no {name}: {skipped[name]}", file=sys.stderr)
            continue
        written.append(save_figure(fig, folder / name))
        print(os.fspath(folder / name))
    return written


if __name__ == "__main__":
    run_cli(main)
