"""Training records: one JSON object per line in `metrics.jsonl`, and a loss plot in `loss.png`.

JSON Lines is easy to read back (`[json.loads(l) for l in open(path)]`), to append to, and to plot with
any tool. Each row has `step` and `tokens` (tokens trained on so far); training rows add `train_loss`,
`lr`, `grad_norm`, `tokens_per_s`; evaluation rows (`"event": "eval"`) add `val_loss` and bits per
character / byte.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from src.corpus import atomic_write_bytes, atomic_write_text


def bits(loss_nats: float, tokens_per_unit: float) -> float:
    """Convert a per-token loss in nats to bits per character (or byte): loss / ln 2 * tokens per unit.

    A char-level model has ~1 token per character; a BPE model has far fewer tokens per byte but a
    higher loss per token. Bits per byte puts both on the same axis.
    """
    return loss_nats / math.log(2) * tokens_per_unit


class MetricsLog:
    """Appends rows to `metrics.jsonl`; keeps them in memory for the plot."""

    def __init__(self, path: str | Path, resume: bool = False, keep_until: int = 0):
        """A fresh log, or with `resume` the existing one up to step `keep_until` (rows logged after the
        last save are dropped: the resumed run will compute them again)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        if resume and self.path.exists():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.rows = [r for r in rows if r["step"] <= keep_until]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))

    def log(self, **row) -> None:
        row = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
        self.rows.append(row)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self, path: str | Path, title: str = "") -> None:
        """Train and val loss against tokens seen, as a PNG (written atomically)."""
        import matplotlib

        matplotlib.use("Agg")  # no screen needed
        import matplotlib.pyplot as plt

        train = [(r["tokens"], r["train_loss"]) for r in self.rows if r.get("event") == "train"]
        val = [(r["tokens"], r["val_loss"]) for r in self.rows if r.get("event") == "eval"]
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        if train:
            ax.plot([t for t, _ in train], [loss for _, loss in train], label="train", alpha=0.6, linewidth=1)
        if val:
            ax.plot([t for t, _ in val], [loss for _, loss in val], "o-", label="validation", linewidth=2)
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("loss (nats per token)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        atomic_write_bytes(path, buf.getvalue())
