"""Invariance of a classifier to a nuisance distribution T (docs/method.md, measuring invariance).

eKLD(c) = E_{x in c} E_{x' ~ T(.|x)} KL(p(y|x) || p(y|x')), and consistency(c) = the fraction of pairs
whose argmax agree. Every x' is paired with its own x (the reference helper compared different images).
Nuisances are drawn in pixel space ([0, 1] images); `preprocess` maps them to the model's input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from gitune.metrics.accuracy import class_key, group_means


def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities; terms with p = 0 count 0 (no 0 * inf = NaN)."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(dim=-1).clamp_min(0.0)  # rounding can give -1e-9 for identical rows


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the average of the ranks they span."""
    values, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of the first element of each tied group
    return (first + (counts + 1) / 2.0)[inverse.reshape(-1)]


def _as_numpy(v) -> np.ndarray:
    if torch.is_tensor(v):
        v = v.detach().cpu().double().numpy()
    return np.asarray(v, dtype=np.float64).reshape(-1)


def spearman(x, y) -> float:
    """Spearman rank correlation (average ranks for ties); NaN if fewer than 2 points or either is constant."""
    x, y = (_as_numpy(v) for v in (x, y))
    if x.shape != y.shape:
        raise ValueError(f"spearman: x and y differ in length ({x.size} vs {y.size})")
    if x.size < 2:
        return float("nan")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    if denom == 0.0:
        return float("nan")
    return float((rx * ry).sum() / denom)


def per_class_means(values: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of `values` per class label, on their device; NaN for classes with no entries.

    index_add_ rather than weighted bincount: it has a deterministic CUDA implementation, which torch uses
    under `train.deterministic`; otherwise CUDA adds with atomics and the sums may differ in the last bits
    from call to call.
    """
    values = values.reshape(-1).float()
    labels = labels.reshape(-1).long()
    sums = torch.zeros(num_classes, device=values.device).index_add_(0, labels, values)
    counts = torch.zeros_like(sums).index_add_(0, labels, torch.ones_like(values))
    return sums / counts


def _log_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(model(x).float(), dim=-1)


def measure_invariance(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       transform: Callable[[torch.Tensor], torch.Tensor],
                       preprocess: Callable[[torch.Tensor], torch.Tensor], n_transforms: int,
                       num_classes: int, class_counts: Sequence[int], batch_size: int = 512,
                       prefix: str = "inv") -> dict[str, float]:
    """eKLD and consistency per class, per shot group, overall, and their rank correlation with class size.

    images: float [0, 1], N x C x H x W, on the model's device; labels: N. transform(x01) -> x01 draws a
    fresh nuisance for every row. Keys: {prefix}/ekld/cNNN, {prefix}/consistency/cNNN (classes with
    images), {prefix}/ekld_{many,medium,few}, {prefix}/consistency_{...} (groups with such classes),
    {prefix}/ekld_mean, {prefix}/consistency_mean (means over classes, so each class counts once), and
    {prefix}/ekld_size_spearman (class size vs eKLD; negative when invariance grows with class size).
    The model runs in eval mode under inference_mode; its train/eval mode is restored afterwards.
    """
    if n_transforms < 1:
        raise ValueError("measure_invariance: n_transforms must be >= 1")
    if images.shape[0] == 0:
        raise ValueError("measure_invariance: no images")
    if len(class_counts) != num_classes:
        raise ValueError("measure_invariance: len(class_counts) != num_classes")
    n = images.shape[0]
    labels = labels.reshape(-1).long().to(images.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            log_p = torch.cat([_log_probs(model, preprocess(images[i:i + batch_size]))
                               for i in range(0, n, batch_size)])
            pred = log_p.argmax(dim=-1)
            # Pair j is image j // n_transforms: each image repeated n_transforms times, cut into
            # forward passes of batch_size pairs; every x' is compared with its own x.
            n_pairs = n * n_transforms
            kl = torch.empty(n_pairs, device=images.device)
            agree = torch.empty(n_pairs, device=images.device)
            for start in range(0, n_pairs, batch_size):
                idx = torch.arange(start, min(start + batch_size, n_pairs), device=images.device) // n_transforms
                log_q = _log_probs(model, preprocess(transform(images[idx])))
                kl[start:start + idx.numel()] = kl_divergence(log_p[idx], log_q)
                agree[start:start + idx.numel()] = (log_q.argmax(dim=-1) == pred[idx]).float()
            ekld_img = kl.view(n, n_transforms).mean(dim=1)
            cons_img = agree.view(n, n_transforms).mean(dim=1)
            per_class = torch.stack([per_class_means(ekld_img, labels, num_classes),
                                     per_class_means(cons_img, labels, num_classes)])
    finally:
        model.train(was_training)

    ekld, cons = per_class.cpu().tolist()  # the one device->host transfer
    present = [c for c in range(num_classes) if not math.isnan(ekld[c])]
    out: dict[str, float] = {}
    for c in present:
        out[f"{prefix}/ekld/{class_key(c)}"] = ekld[c]
        out[f"{prefix}/consistency/{class_key(c)}"] = cons[c]
    for group, mean in group_means(ekld, class_counts).items():
        out[f"{prefix}/ekld_{group}"] = mean
    for group, mean in group_means(cons, class_counts).items():
        out[f"{prefix}/consistency_{group}"] = mean
    out[f"{prefix}/ekld_mean"] = sum(ekld[c] for c in present) / len(present)
    out[f"{prefix}/consistency_mean"] = sum(cons[c] for c in present) / len(present)
    out[f"{prefix}/ekld_size_spearman"] = spearman([float(class_counts[c]) for c in present],
                                                   [ekld[c] for c in present])
    return out
