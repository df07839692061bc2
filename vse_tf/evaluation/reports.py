"""Reports of ranking metrics: text tables, Recall@K curves and their plot."""

from __future__ import annotations

import numpy as np


def recall_curves(image_ranks: np.ndarray, caption_ranks: np.ndarray, max_k: int = 50) -> dict[str, np.ndarray]:
    """R@K in percent for K = 1..max_k, both directions: ``{"k", "i2t", "t2i"}``."""
    ks = np.arange(1, max_k + 1)
    return {
        "k": ks,
        "i2t": 100.0 * np.mean(np.asarray(image_ranks)[:, None] < ks[None, :], axis=0),
        "t2i": 100.0 * np.mean(np.asarray(caption_ranks)[:, None] < ks[None, :], axis=0),
    }


def plot_recall_curves(curves: dict[str, np.ndarray], path, title: str = "") -> None:
    """Saves the two R@K curves as a PNG (matplotlib's Agg canvas; no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(curves["k"], curves["i2t"], label="image annotation (image -> text)")
    axes.plot(curves["k"], curves["t2i"], label="image search (text -> image)")
    axes.set_xlabel("K")
    axes.set_ylabel("R@K (%)")
    axes.set_ylim(0, 100)
    axes.set_xlim(1, int(curves["k"][-1]))
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    if title:
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path)


def format_recall_table(metrics: dict[str, float], title: str = "") -> str:
    """A small fixed-width table of both directions."""
    header = f"{'direction':<28} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'medr':>6} {'meanr':>7}"
    rows = [title] if title else []
    rows += [header, "-" * len(header)]
    for prefix, label in (("i2t", "image annotation (i->t)"), ("t2i", "image search (t->i)")):
        rows.append(
            f"{label:<28} {metrics[f'{prefix}_r1']:6.1f} {metrics[f'{prefix}_r5']:6.1f} "
            f"{metrics[f'{prefix}_r10']:6.1f} {metrics[f'{prefix}_medr']:6.0f} {metrics[f'{prefix}_meanr']:7.1f}"
        )
    rows.append(f"{'rsum':<28} {metrics['rsum']:6.1f}")
    return "\n".join(rows)


def format_map_table(metrics: dict[str, float], at: int | None = None) -> str:
    """MAP both ways (and MAP@R when present) as a small table."""
    columns = [("MAP", "")] + ([(f"MAP@{at}", f"_at_{at}")] if at else [])
    rows = [f"{'category MAP':<28} " + " ".join(f"{name:>8}" for name, _ in columns)]
    for prefix, label in (("i2t", "image -> text"), ("t2i", "text -> image"), ("mean", "mean")):
        rows.append(f"{label:<28} " + " ".join(f"{metrics[f'{prefix}_map{suffix}']:8.4f}" for _, suffix in columns))
    return "\n".join(rows)
