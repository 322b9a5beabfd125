"""Drawing for pictures.py: figures from numbers, fonts that can show any token, PNG files written atomically.

pictures.py computes what a picture shows (attention weights, probabilities, PCA coordinates, token pieces);
the functions here only lay those numbers out with matplotlib. Each takes plain tensors and strings and
returns a `matplotlib.figure.Figure` (no pyplot: no window, no backend to choose, nothing to close).
Tokens are shown as `visible` text: a newline as ⏎, a space as ␣, and a character the font cannot draw as
its code point, so that no picture shows an empty box.

Who uses it: `pictures.py`.
"""

from __future__ import annotations

import io
import unicodedata
from functools import lru_cache
from pathlib import Path

import torch

from src.engine.files import atomic_write_bytes
from src.tokenizer import Tokenizer

MAX_IDS_SHOWN = 150  # token ids written under the text in tokens.png

# Pastel colours for alternating tokens, as in the tiktokenizer web app.
TOKEN_COLOURS = ["#fde68a", "#a7f3d0", "#bfdbfe", "#fbcfe8", "#ddd6fe", "#fed7aa"]
FONT = "DejaVu Sans"  # matplotlib's own fonts: on every machine that has matplotlib
MONO = "DejaVu Sans Mono"


# --- words for the pictures ---------------------------------------------------------------------------------

_VISIBLE = {"\n": "⏎", "\t": "→", "\r": "␍", " ": "␣"}


@lru_cache(maxsize=4)
def _font_file(family: str):
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    return FT2Font(font_manager.findfont(font_manager.FontProperties(family=family)))


@lru_cache(maxsize=4096)
def has_glyph(char: str, families: tuple[str, ...] = (FONT,)) -> bool:
    """Can one of these fonts draw `char`? (else matplotlib draws an empty box and warns)"""
    return any(_font_file(family).get_char_index(ord(char)) != 0 for family in families)


def visible(text: str, families: tuple[str, ...] = (FONT,)) -> str:
    """Text as a label: newline, tab and space as symbols (a token " the" reads "␣the"), other invisible
    characters and those the font cannot draw as their code point."""
    out = []
    for char in text:
        if char in _VISIBLE:
            out.append(_VISIBLE[char])
        elif unicodedata.category(char)[0] == "C" or not has_glyph(char, families):
            out.append(f"U+{ord(char):04X}" if ord(char) > 0xFF else f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return "".join(out)


def token_label(tokenizer: Tokenizer, token: int) -> str:
    """One token as a label: its bytes as text; bytes that are only part of a character as \\xNN."""
    text = tokenizer.decode_bytes([token]).decode("utf-8", errors="backslashreplace")
    return visible(text).replace("$", r"\$")  # a "$" would start matplotlib's math mode


def snippet(text: str, width: int = 30) -> str:
    """The end of `text`, at most `width` characters, as a label."""
    return ("…" if len(text) > width else "") + visible(text[-width:]).replace("$", r"\$")


# --- the drawings ---------------------------------------------------------------------------------------------


def new_figure(width: float, height: float):
    """A matplotlib Figure not tied to any window (no pyplot: nothing to close, no screen needed)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def wrap_title(title: str, width_inches: float, fontsize: float = 10) -> str:
    """`title` broken into lines that fit a figure `width_inches` wide."""
    import textwrap

    chars = max(30, int(width_inches * 72 / (0.55 * fontsize)))  # an average character is ~0.55 em wide
    return "\n".join(textwrap.fill(line, chars) for line in title.split("\n"))


def draw_attention(attention: torch.Tensor, labels: list[str] | None, title: str):
    """attention (n_layer, n_head, T, T) -> a grid of heat maps, layers down, heads across."""
    import matplotlib

    n_layer, n_head, T, _ = attention.shape
    size = max(1.0, min(4.0, 13 / max(n_layer, n_head)))  # inches per panel: large grids get small panels
    fontsize = min(8.0, size * 72 / T * 0.75)  # a label may take 3/4 of its row
    if labels is not None and fontsize < 4.5:  # smaller is unreadable
        labels = None
    label_room = (max(map(len, labels)) * 0.62 * fontsize / 72 + 0.1) if labels else 0.0
    gap = 0.12
    grid_w, grid_h = n_head * size + (n_head - 1) * gap, n_layer * size + (n_layer - 1) * gap
    left, bottom, right = 0.55 + label_room, 0.45 + label_room, 1.3  # inches: axis titles, labels, colour bar
    width = max(left + grid_w + right, 7.0)
    title = wrap_title(title, width)
    top = 0.35 + 0.2 * (title.count("\n") + 1) + 0.2
    height = bottom + grid_h + top
    fig = new_figure(width, height)
    grid = fig.add_gridspec(n_layer, n_head, left=left / width, right=(left + grid_w) / width,
                            bottom=bottom / height, top=(bottom + grid_h) / height, wspace=gap / size,
                            hspace=gap / size)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#eeeeee")  # the future: light grey
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    image = None
    for layer in range(n_layer):
        for head in range(n_head):
            ax = fig.add_subplot(grid[layer, head])
            weights = attention[layer, head].masked_fill(future, float("nan"))  # (T, T)
            image = ax.imshow(weights.numpy(), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
            if head == 0:
                ax.set_ylabel(f"layer {layer}", fontsize=9)
            if labels and head == 0:
                ax.set_yticks(range(T), labels, fontsize=fontsize)
            if labels and layer == n_layer - 1:
                ax.set_xticks(range(T), labels, fontsize=fontsize, rotation=90)
    bar = fig.add_axes(((left + grid_w + 0.25) / width, bottom / height, 0.18 / width, grid_h / height))
    fig.colorbar(image, cax=bar).set_label("attention weight (each row adds up to 1)", fontsize=8)
    fig.suptitle(title, fontsize=10, y=1 - 0.15 / height, va="top")
    return fig


def draw_next_token(top: list[tuple[str, float]], actual: tuple[str, float, int] | None, title: str):
    """Bars of the likeliest next tokens [(label, probability)], likeliest on top. `actual` = (label,
    probability, rank from 1) of the token that really comes next, marked (and added below if not in the top)."""
    rows = [(f"'{label}'", p) for label, p in top]
    colours = ["tab:blue"] * len(rows)
    if actual is not None:
        label, prob, rank = actual
        if rank <= len(rows):
            colours[rank - 1] = "tab:orange"
        else:
            rows.append((f"'{label}' (no. {rank})", prob))
            colours.append("tab:orange")
    fig = new_figure(7.0, 1.4 + 0.34 * len(rows))
    ax = fig.add_subplot()
    y = list(range(len(rows)))
    ax.barh(y, [p for _, p in rows], color=colours)
    ax.set_yticks(y, [label for label, _ in rows], fontsize=10)
    ax.invert_yaxis()  # likeliest on top
    for i, (_, p) in enumerate(rows):
        ax.text(p, i, f" {p:.1%}" if p >= 0.01 else f" {p:.2%}", va="center", fontsize=8)
    ax.set_xlim(0, max(p for _, p in rows) * 1.18 + 1e-9)
    ax.set_xlabel("probability (softmax of the logits)")
    if actual is not None:
        from matplotlib.patches import Patch

        ax.legend(handles=[Patch(color="tab:orange", label="what really comes next in the prompt")],
                  fontsize=8, loc="lower right")
    ax.set_title(wrap_title(title, 6.5), fontsize=10)
    fig.tight_layout()
    return fig


def percent(share: float) -> str:
    """0.38 -> '38%', 0.0016 -> '0.2%'."""
    return f"{share:.0%}" if share >= 0.1 else f"{share:.1%}"


def _char_class(label: str) -> str:
    """What a token starts with (after any spaces): for colouring the embedding picture."""
    text = label.lstrip("␣")
    if not text:
        return "space or line break" if label else "punctuation / other"
    first = text[0]
    if first in "⏎→␍":
        return "space or line break"
    if first.islower():
        return "lowercase"
    if first.isupper():
        return "uppercase"
    if first.isdigit():
        return "digit"
    return "punctuation / other"


def draw_embeddings(points: torch.Tensor, labels: dict[int, str], variance: torch.Tensor, title: str):
    """points (N, 2), one per token -> a scatter, with the tokens in `labels` {id: label} written at their point."""
    fig = new_figure(9.0, 7.5)
    ax = fig.add_subplot()
    xy = points.numpy()
    ax.scatter(xy[:, 0], xy[:, 1], s=6 if len(labels) < len(xy) else 0, color="#bbbbbb", linewidths=0)
    classes = {"lowercase": "tab:blue", "uppercase": "tab:red", "digit": "tab:green",
               "space or line break": "tab:purple", "punctuation / other": "#555555"}
    seen = set()
    for token, label in labels.items():
        kind = _char_class(label)
        seen.add(kind)
        ax.text(xy[token, 0], xy[token, 1], label, fontsize=10 if len(labels) <= 100 else 7,
                ha="center", va="center", color=classes[kind])
    from matplotlib.lines import Line2D

    ax.legend(handles=[Line2D([], [], marker="s", linestyle="", color=c, label=k) for k, c in classes.items()
                       if k in seen], fontsize=8, loc="best")
    ax.margins(0.06)
    ax.set_xlabel(f"first principal axis ({percent(variance[0])} of the variance)")
    ax.set_ylabel(f"second principal axis ({percent(variance[1])} of the variance)")
    ax.grid(alpha=0.2)
    ax.set_title(wrap_title(title, 8.5), fontsize=10)
    fig.tight_layout()
    return fig


def draw_positions(weight: torch.Tensor, similarity: torch.Tensor, by_distance: torch.Tensor, title: str):
    """The position table (T, C) as an image, the cosine similarity of its rows (T, T), and that similarity
    averaged over every two positions the same distance apart (T,)."""
    fig = new_figure(15.0, 5.0)
    table, pairs, curve = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.2, 1, 0.8]})
    limit = float(weight.abs().max()) or 1.0
    image = table.imshow(weight.float().numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto",
                         interpolation="nearest")
    fig.colorbar(image, ax=table, fraction=0.05)
    table.set_xlabel("channel (0..d_model-1)")
    table.set_ylabel("position (0 = the first token)")
    table.set_title("position embedding wpe:\nrow t is added to the token at position t", fontsize=9)
    image = pairs.imshow(similarity.numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    fig.colorbar(image, ax=pairs, fraction=0.046)
    pairs.set_xlabel("position")
    pairs.set_ylabel("position")
    pairs.set_title("cosine similarity: how alike the rows of two\npositions are (1 = same direction, 0 = unrelated)",
                    fontsize=9)
    curve.plot(range(len(by_distance)), by_distance.numpy(), color="tab:blue")
    curve.axhline(0, color="grey", linewidth=0.8, linestyle=":")
    curve.set_ylim(min(-0.2, float(by_distance.min()) - 0.05), 1.05)
    curve.set_xlabel("distance between the two positions")
    curve.set_ylabel("average cosine similarity")
    curve.set_title("by distance: a trained model makes near\npositions alike and far ones different",
                    fontsize=9)
    curve.grid(alpha=0.3)
    fig.suptitle(wrap_title(title, 14), fontsize=10)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.12, top=0.82, wspace=0.42)  # tight_layout: 3x slower
    return fig


def _cells(pieces: list[str], wrap: int, max_rows: int) -> tuple[list[tuple[int, float, float, str, int]], int, bool]:
    """Lay the pieces out on a grid of character cells: ([(row, column, width, glyph, piece index)], rows used,
    whether the text was cut off). A wide character (CJK, emoji) takes two cells; a newline is drawn as ⏎
    and starts a new row; a long line wraps after `wrap` cells."""
    cells, row, col = [], 0, 0
    for index, piece in enumerate(pieces):
        for char in piece:
            if char == "\n":
                cells.append((row, col, 1, "⏎", index))
                row, col = row + 1, 0
                continue
            glyph = "·" if char == " " else visible(char, (MONO, FONT))
            if len(glyph) > 1:  # a code point, such as U+4E2D, written small
                width = len(glyph) * 0.6 + 0.6
            else:
                width = 2 if unicodedata.east_asian_width(char) in "WF" else 1
            if col + width > wrap:
                row, col = row + 1, 0
            if row >= max_rows:
                return cells, max_rows, True
            cells.append((row, col, width, glyph, index))
            col += width
        if row >= max_rows:
            return cells, max_rows, True
    return cells, row + 1, False


def draw_tokens(pieces: list[str], title: str, ids: list[int] | None = None, split: set[int] = frozenset(),
                wrap: int = 64, max_rows: int = 40):
    """The text in `pieces` (one string per token), each on a coloured box, colours alternating.

    `split`: indices of pieces that are one character spread over several tokens (drawn with a dashed edge).
    `ids`: the token ids, written below the text.
    """
    import textwrap

    from matplotlib.patches import Rectangle

    cells, rows, cut = _cells(pieces, wrap, max_rows)
    cols = max([c + w for _, c, w, _, _ in cells] + [1])
    fontsize = 14
    cell_w, cell_h = 0.62 * fontsize / 72, 1.75 * fontsize / 72  # inches: a monospace character, a line
    margin = 0.3
    width = max(cols * cell_w + 2 * margin, 7.0)
    title = wrap_title(title, width - 2 * margin)
    id_lines = []
    if ids is not None:
        shown = ids[:MAX_IDS_SHOWN]
        id_text = "ids: " + " ".join(map(str, shown)) + (" …" if len(ids) > len(shown) else "")
        id_lines = textwrap.wrap(id_text, int((width - 2 * margin) * 72 / (0.62 * 8)))  # 8-point monospace
    note = f"(cut off after {max_rows} lines)" if cut else ""
    below = 0.15 + 0.16 * len(id_lines) + (0.2 if note else 0)  # inches under the text
    above = 0.2 + 0.2 * (title.count("\n") + 1) + 0.15
    height = above + rows * cell_h + below
    fig = new_figure(width, height)
    ax = fig.add_axes((margin / width, below / height, cols * cell_w / width, rows * cell_h / height))
    ax.set_xlim(0, cols)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    for row, col, w, glyph, index in cells:
        colour = TOKEN_COLOURS[index % len(TOKEN_COLOURS)]
        edge = dict(edgecolor="tab:red", linestyle="--", linewidth=1.0) if index in split else dict(linewidth=0)
        ax.add_patch(Rectangle((col, row + 0.08), w, 0.84, facecolor=colour, **edge))
        spacer = glyph in ("·", "⏎")  # a space or a line break: drawn, but grey
        ax.text(col + w / 2, row + 0.5, glyph.replace("$", r"\$"), ha="center", va="center",
                family=[MONO, FONT], fontsize=fontsize if len(glyph) <= 2 else fontsize * 0.55,
                color="#888888" if spacer else "black")
    # boxes of neighbouring tokens touch: a thin white line where one token ends and the next begins
    for (row, _, _, _, index), (row2, col2, _, _, index2) in zip(cells, cells[1:], strict=False):
        if index != index2 and row == row2:
            ax.plot([col2, col2], [row + 0.08, row + 0.92], color="white", linewidth=1.5)
    if note:
        fig.text(margin / width, (below - 0.2) / height, note, fontsize=8, color="#666666", va="bottom")
    if id_lines:
        fig.text(margin / width, 0.1 / height, "\n".join(id_lines), fontsize=8, family=MONO, color="#444444",
                 va="bottom", linespacing=1.2)
    fig.text(margin / width, 1 - 0.15 / height, title, fontsize=10, va="top")
    return fig


def save_figure(fig, path: Path) -> Path:
    """The figure as a PNG at `path` (written atomically: a reader never sees half a picture)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path
