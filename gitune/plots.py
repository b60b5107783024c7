"""Figures and tables of per-class results against class size (the paper's view of invariance transfer).

Plain matplotlib figures and CSV text; the caller decides where they go (MLflow, a report folder).
"""

from __future__ import annotations

import csv
import io
import math
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gitune.metrics.accuracy import shot_groups  # noqa: E402
from gitune.metrics.invariance import spearman  # noqa: E402

GROUP_COLOURS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}


def _group_of(counts: Sequence[int]) -> list[str]:
    names = [""] * len(counts)
    for group, classes in shot_groups(list(counts)).items():
        for c in classes:
            names[c] = group
    return names


def per_class_vs_size(counts: Sequence[int], values: Sequence[float], ylabel: str, title: str):
    """Scatter of one per-class value against training class size (log x), coloured by shot group,
    with Spearman's rank correlation in the title (negative for eKLD when invariance fails to transfer)."""
    fig, ax = plt.subplots(figsize=(6.0, 4.2), dpi=110)
    groups = _group_of(counts)
    pts = [(n, v, g) for n, v, g in zip(counts, values, groups) if v is not None and math.isfinite(v)]
    for g, colour in GROUP_COLOURS.items():
        sel = [(n, v) for n, v, gg in pts if gg == g]
        if sel:
            label = {"many": "many-shot (>100)", "medium": "medium-shot (20–100)", "few": "few-shot (<20)"}[g]
            ax.scatter([n for n, _ in sel], [v for _, v in sel], s=28, color=colour, label=label, alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("training images in class (log scale)")
    ax.set_ylabel(ylabel)
    rho = spearman([float(n) for n, _, _ in pts], [float(v) for _, v, _ in pts]) if len(pts) > 2 else float("nan")
    ax.set_title(f"{title}\nSpearman ρ(class size, value) = {rho:+.2f}" if math.isfinite(rho) else title,
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if pts:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def per_class_csv(counts: Sequence[int], names: Sequence[str], columns: dict[str, Sequence[float]]) -> str:
    """One row per class: index, name, training count, shot group, then each named column."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["class", "name", "train_count", "shot_group", *columns])
    groups = _group_of(counts)
    for c, (n, name) in enumerate(zip(counts, names)):
        row = [c, name, n, groups[c]]
        for vals in columns.values():
            v = vals[c] if c < len(vals) else None
            row.append("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.6g}")
        w.writerow(row)
    return buf.getvalue()


def close(fig) -> None:
    plt.close(fig)
