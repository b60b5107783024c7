"""Figures of `python -m gitune.report`: pooled per-class values vs class size, few-shot accuracy against a
tuned parameter, parameter importances, and group means and paired differences with their confidence intervals.

Plain matplotlib (Agg) figures; the caller saves them. Inputs are plain lists, so the figures can be drawn
without MLflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

FEW_MAX, MANY_MIN = 20, 100  # shot groups: few < 20 training images, many > 100 (docs/method.md, long-tailed data)


@dataclass
class Group:
    """One colour group of the pooled scatter: its label, and its points (class size, value, stopped early)."""

    label: str
    sizes: list[float]
    values: list[float]
    early: list[bool]
    trials: int


def group_colours(n: int, ordered: bool) -> list:
    """Distinct colours: a sequential map for ordered (numeric) groups, tab10 for categories."""
    if ordered and n > 1:
        cmap = plt.get_cmap("viridis")
        return [cmap(0.05 + 0.8 * i / (n - 1)) for i in range(n)]
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def size_bins(sizes: Sequence[float]) -> list[tuple[float, float]]:
    """Bins of class size for the trend line: each distinct size when there are few (a fixed long-tail
    profile), else 8 log-spaced bins over the pooled range. Half-open [lo, hi)."""
    distinct = sorted(set(float(s) for s in sizes))
    if not distinct:
        return []
    if len(distinct) <= 12:
        return [(s, math.nextafter(s, math.inf)) for s in distinct]
    edges = np.geomspace(distinct[0], distinct[-1], 9)
    edges[-1] = math.nextafter(edges[-1], math.inf)
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]


def binned_medians(sizes: Sequence[float], values: Sequence[float],
                   bins: Sequence[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """Median class size and median value of the points in each bin (bins with no points skipped)."""
    s, v = np.asarray(sizes, float), np.asarray(values, float)
    xs, ys = [], []
    for lo, hi in bins:
        sel = (s >= lo) & (s < hi)
        if sel.any():
            xs.append(float(np.median(s[sel])))
            ys.append(float(np.median(v[sel])))
    return xs, ys


def _shot_group_guides(ax, xmin: float, xmax: float) -> None:
    """Dotted lines at the shot-group boundaries, labelled along the top edge."""
    for x in (FEW_MAX, MANY_MIN):
        if xmin < x < xmax:
            ax.axvline(x, color="0.55", linestyle=":", linewidth=1.0, zorder=0)
    trans = ax.get_xaxis_transform()
    for label, lo, hi in (("few", xmin, FEW_MAX), ("medium", FEW_MAX, MANY_MIN), ("many", MANY_MIN, xmax)):
        lo, hi = max(lo, xmin), min(hi, xmax)
        if hi > lo and math.log10(hi / lo) > 0.12:
            ax.text(math.sqrt(lo * hi), 0.985, f"{label}-shot", transform=trans, ha="center", va="top",
                    fontsize=7.5, color="0.4")


def pooled_vs_size(groups: Sequence[Group], ordered: bool, legend_title: str, ylabel: str, title: str,
                   subtitle: str = ""):
    """One point per (trial, class): training class size (log x) against a per-class value, coloured by
    group, with each group's median per size bin as a line. Stopped-early trials are hollow markers.
    Groups are offset slightly along x (and points jittered) so that trials with the same class sizes
    do not hide each other."""
    fig, ax = plt.subplots(figsize=(8.4, 5.0), dpi=120)
    colours = group_colours(len(groups), ordered)
    all_sizes = [s for g in groups for s in g.sizes]
    all_values = [v for g in groups for v in g.values]
    bins = size_bins(all_sizes)
    rng = np.random.default_rng(0)
    n = len(groups)
    width = 0.07 if n > 1 else 0.0  # total horizontal spread of the groups, in decades
    any_early = False
    for i, (g, colour) in enumerate(zip(groups, colours)):
        if not g.sizes:
            continue
        shift = (i - (n - 1) / 2) * (width / max(n - 1, 1))
        s = np.asarray(g.sizes, float)
        v = np.asarray(g.values, float)
        early = np.asarray(g.early, bool)
        jitter = rng.uniform(-0.012, 0.012, size=s.size)
        x = s * 10 ** (shift + jitter)
        label = f"{g.label}  ({g.trials} trial{'s' if g.trials != 1 else ''})"
        if (~early).any():
            ax.scatter(x[~early], v[~early], s=22, color=colour, alpha=0.7, linewidths=0, label=label, zorder=2)
        if early.any():
            any_early = True
            ax.scatter(x[early], v[early], s=22, facecolors="none", edgecolors=[colour], alpha=0.85,
                       linewidths=1.0, zorder=2, label="_nolegend_" if (~early).any() else label)
        mx, my = binned_medians(s, v, bins)
        if len(mx) > 1:
            ax.plot(np.asarray(mx) * 10 ** shift, my, color=colour, linewidth=2.2, alpha=0.95, zorder=3,
                    marker="D", markersize=4.5, markeredgecolor="white", markeredgewidth=0.6)
    ax.set_xscale("log")
    if all_values:
        positive = [v for v in all_values if v > 0]
        if positive and len(positive) == len(all_values):
            lo, hi = np.quantile(positive, [0.05, 0.95])
            if lo > 0 and hi / lo > 300:
                ax.set_yscale("log")
        if ax.get_yscale() == "linear":
            ax.set_ylim(bottom=min(0.0, min(all_values)))
    if all_sizes:
        xmin, xmax = min(all_sizes) / 1.35, max(all_sizes) * 1.35
        ax.set_xlim(xmin, xmax)
        _shot_group_guides(ax, xmin, xmax)
    _plain_log_ticks(ax)
    ax.set_xlabel("training images in the class (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=9.5, loc="left")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", axis="x", alpha=0.12)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="0.3", linewidth=2.2, marker="D", markersize=4.5,
                          markeredgecolor="white"))
    labels.append("median per class-size bin")
    if any_early:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="0.3"))
        labels.append("hollow: trial stopped early (earlier epoch)")
    ax.legend(handles, labels, title=legend_title, fontsize=7.5, title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.text(0.01, 0.01, "one point per class per trial; points offset horizontally by group for visibility",
             fontsize=7, color="0.45")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def metric_vs_param(series: Sequence[tuple[str, list, list[float], list[bool]]], param: str, categorical: bool,
                    log_x: bool, ylabel: str, title: str, percent: bool = False):
    """A metric against one trial parameter, one series per metric (e.g. validation and test).

    `series`: (label, parameter values, metric values, stopped-early flags). Categorical parameters get a
    box per category with the points over it; numeric ones a scatter (log x for loguniform spaces).
    `percent`: the values are percentages (y axis from 0)."""
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=120)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    markers = ["o", "^", "s", "v"]
    rng = np.random.default_rng(0)
    any_early = False
    if categorical:
        cats = _ordered_categories([x for _, xs, _, _ in series for x in xs])
        pos = {c: i for i, c in enumerate(cats)}
        k = len(series)
        step = 0.8 / max(k, 1)
        for j, ((label, xs, ys, early), colour, marker) in enumerate(zip(series, colours, markers)):
            off = (j - (k - 1) / 2) * step
            by_cat = {c: [y for x, y in zip(xs, ys) if _cat(x) == c] for c in cats}
            data = [(pos[c] + off, vals) for c, vals in by_cat.items() if len(vals) >= 3]
            if data:
                bp = ax.boxplot([d for _, d in data], positions=[p for p, _ in data], widths=step * 0.7,
                                showfliers=False, patch_artist=True, manage_ticks=False)
                for box in bp["boxes"]:
                    box.set(facecolor=colour, alpha=0.18, edgecolor=colour)
                for part in ("whiskers", "caps", "medians"):
                    for line in bp[part]:
                        line.set(color=colour, alpha=0.8)
            px = np.array([pos[_cat(x)] + off for x in xs], float) + rng.uniform(-step * 0.18, step * 0.18, len(xs))
            any_early |= _filled_and_hollow(ax, px, ys, early, colour, marker, label, 30)
        ax.set_xticks(range(len(cats)))
        ax.set_xticklabels([str(c) for c in cats], rotation=0 if len(cats) <= 6 else 30,
                           ha="center" if len(cats) <= 6 else "right")
        ax.set_xlim(-0.6, len(cats) - 0.4)
        ax.set_xlabel(param)
    else:
        for (label, xs, ys, early), colour, marker in zip(series, colours, markers):
            any_early |= _filled_and_hollow(ax, xs, ys, early, colour, marker, label, 32)
        if log_x:
            ax.set_xscale("log")
            _plain_log_ticks(ax)
        ax.set_xlabel(f"{param} (log scale)" if log_x else param)
    ax.set_ylabel(ylabel)
    if percent:
        top = max([y for _, _, ys, _ in series for y in ys if math.isfinite(y)] + [0.0])
        ax.set_ylim(-2.0, min(102.0, max(10.0, top * 1.08 + 2.0)))
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if any_early:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="0.3"))
        labels.append("hollow: stopped early (value from an earlier epoch)")
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _filled_and_hollow(ax, xs, ys, early, colour, marker, label: str, size: float) -> bool:
    """Finished trials as filled markers, trials stopped early as hollow ones (one legend entry);
    returns whether any was stopped early."""
    x, y, e = np.asarray(xs, float), np.asarray(ys, float), np.asarray(early, bool)
    if (~e).any():
        ax.scatter(x[~e], y[~e], s=size, color=colour, marker=marker, alpha=0.85, label=label, zorder=3)
    if e.any():
        ax.scatter(x[e], y[e], s=size, facecolors="none", edgecolors=colour, marker=marker, zorder=3,
                   label="_nolegend_" if (~e).any() else label)
    return bool(e.any())


def importance_bars(names: Sequence[str], values: Sequence[float], xlabel: str, title: str):
    """Horizontal bars, most important parameter on top."""
    order = sorted(range(len(names)), key=lambda i: values[i])
    fig, ax = plt.subplots(figsize=(6.6, 1.4 + 0.42 * len(names)), dpi=120)
    ys = range(len(order))
    ax.barh(list(ys), [values[i] for i in order], color="tab:blue", alpha=0.8)
    ax.set_yticks(list(ys))
    ax.set_yticklabels([names[i] for i in order])
    for y, i in zip(ys, order):
        ax.text(values[i], y, f" {values[i]:.2f}", va="center", fontsize=8)
    top = max([v for v in values if math.isfinite(v)] + [0.0])
    ax.set_xlim(0, max(top * 1.18, 0.05))
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def _plain_log_ticks(ax) -> None:
    """Log x axis labelled 5, 10, 20, 50, ... (or 0.01, 0.02, 0.05) instead of 10^1."""
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _cat(x):
    return "none" if x is None else x


def _ordered_categories(values: list) -> list:
    distinct = list(dict.fromkeys(_cat(v) for v in values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return sorted(distinct)
    return sorted(distinct, key=str)


def save(fig, path) -> None:
    fig.savefig(path)
    plt.close(fig)


@dataclass
class Interval:
    """One row of a forest plot: a mean with its confidence interval (NaN: none) and the values behind it."""

    label: str
    mean: float
    low: float
    high: float
    points: list[float]


def intervals_grid(rows: Sequence[tuple[str, Sequence[Interval], Sequence[Interval] | None]], left_title: str,
                   right_title: str, title: str):
    """Forest plots, one row of panels per metric: each group's mean with its 95 % CI and its trials as small
    dots (left), and, when a row has them, paired differences against the baseline with a line at zero
    (right). Groups are listed top to bottom in the order given."""
    paired = any(right is not None for _, _, right in rows)
    heights = [max(1.3, 0.34 * max(len(left), len(right or [])) + 0.75) for _, left, right in rows]
    fig, axes = plt.subplots(len(rows), 2 if paired else 1, figsize=(11.0 if paired else 6.4, sum(heights) + 0.6),
                             dpi=110, squeeze=False, gridspec_kw={"height_ratios": heights})
    for r, (metric, left, right) in enumerate(rows):
        _forest(axes[r][0], left, metric, "tab:blue", zero=False)
        if r == 0:
            axes[r][0].set_title(left_title, fontsize=9, loc="left")
        if paired:
            if right:
                _forest(axes[r][1], right, f"Δ {metric}", "tab:red", zero=True)
            else:
                axes[r][1].axis("off")
            if r == 0:
                axes[r][1].set_title(right_title, fontsize=9, loc="left")
    fig.suptitle(title, fontsize=10, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return fig


def _forest(ax, items: Sequence[Interval], xlabel: str, colour: str, zero: bool) -> None:
    """Horizontal intervals, first item on top; dots for the individual values, a dashed line at 0 if asked."""
    rng = np.random.default_rng(0)
    n = len(items)
    for i, it in enumerate(items):
        y = n - 1 - i
        pts = [p for p in it.points if math.isfinite(p)]
        if pts:
            ax.scatter(pts, y + rng.uniform(-0.12, 0.12, len(pts)), s=10, color="0.55", alpha=0.7, zorder=2,
                       linewidths=0)
        if math.isfinite(it.low) and math.isfinite(it.high):
            ax.plot([it.low, it.high], [y, y], color=colour, linewidth=2.0, zorder=3, solid_capstyle="butt")
            ax.plot([it.low, it.high], [y, y], linestyle="none", marker="|", markersize=9, color=colour, zorder=3)
        if math.isfinite(it.mean):
            ax.plot([it.mean], [y], marker="D", markersize=5.5, color=colour, markeredgecolor="white", zorder=4)
    if zero:
        ax.axvline(0.0, color="0.3", linestyle="--", linewidth=1.0, zorder=1)
    ax.set_yticks(range(n))
    ax.set_yticklabels([it.label for it in reversed(items)], fontsize=8)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlabel(xlabel, fontsize=8.5)
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(True, axis="x", alpha=0.3)
