"""Accuracy overall, per class, balanced, and per shot group (docs/method.md, long-tailed data).

Shot groups by training-set class size: many > 100 images, medium 20..100 (inclusive), few < 20.
All accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SHOT_GROUPS = ("many", "medium", "few")


def class_key(c: int) -> str:
    """Metric-name suffix for class c: 'c007' (zero-padded so names sort in class order)."""
    return f"c{int(c):03d}"


def shot_groups(class_counts: Sequence[int]) -> dict[str, list[int]]:
    """Class indices of each shot group, keys 'many', 'medium', 'few' (lists may be empty)."""
    groups: dict[str, list[int]] = {g: [] for g in SHOT_GROUPS}
    for c, n in enumerate(class_counts):
        n = int(n)
        groups["many" if n > 100 else "few" if n < 20 else "medium"].append(c)
    return groups


def per_class_accuracy(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Float tensor (num_classes,) on the input's device; NaN for classes with no samples."""
    labels = labels.long().reshape(-1)
    correct = (preds.reshape(-1) == labels).long()
    # One unweighted bincount over (label, correct) pairs: deterministic on CUDA, unlike weighted bincount.
    hist = torch.bincount(labels + num_classes * correct, minlength=2 * num_classes).view(2, num_classes)
    return hist[1].float() / hist.sum(0).float()  # 0/0 -> NaN for empty classes


def group_means(per_class: Sequence[float], class_counts: Sequence[int]) -> dict[str, float]:
    """Mean of finite per-class values in each shot group; a group with none is left out."""
    out = {}
    for group, classes in shot_groups(class_counts).items():
        vals = [per_class[c] for c in classes if not math.isnan(per_class[c])]
        if vals:
            out[group] = sum(vals) / len(vals)
    return out


def classification_metrics(preds: torch.Tensor, labels: torch.Tensor, class_counts: Sequence[int],
                           prefix: str) -> dict[str, float]:
    """{prefix}/acc, /bal_acc, /acc_many|medium|few, /class_acc/cNNN as Python floats.

    bal_acc and the group means average over classes that have samples here; a group with no such
    class is left out, and so is class_acc of a class with no samples (its accuracy is undefined).
    """
    num_classes = len(class_counts)
    per_class = per_class_accuracy(preds, labels, num_classes)
    n = labels.numel()
    overall = (preds.reshape(-1) == labels.reshape(-1)).sum()
    # One device->host transfer for everything.
    values = torch.cat([per_class, overall.float().reshape(1)]).cpu().tolist()
    per_class_list, n_correct = values[:num_classes], values[num_classes]

    present = [v for v in per_class_list if not math.isnan(v)]
    out = {
        f"{prefix}/acc": n_correct / n if n else float("nan"),
        f"{prefix}/bal_acc": sum(present) / len(present) if present else float("nan"),
    }
    for group, mean in group_means(per_class_list, class_counts).items():
        out[f"{prefix}/acc_{group}"] = mean
    for c, v in enumerate(per_class_list):
        if not math.isnan(v):
            out[f"{prefix}/class_acc/{class_key(c)}"] = v
    return out
