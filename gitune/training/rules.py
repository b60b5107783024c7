"""Train rules (docs/method.md, classifier recipes): which sampler and which class weights to use at each epoch.

ERM, Resample (class-balanced sampler), Reweight (effective-number weights), and their deferred
versions DRW / DRS that switch on at `deferred_epoch` (the first LR drop in the reference, 160 of 200).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from gitune.errors import UserError
from gitune.registry import RULES  # the names config checks read (torch-free)



def effective_number_weights(class_counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Class-balanced weights of Cui et al. 2019: w_c ∝ (1-β)/(1-β^{n_c}), normalised to sum to C.

    Returns a float32 CPU tensor; `loss.set_weight` moves it to the device. A class with no
    training images is treated as having one.
    """
    if not 0.0 <= beta < 1.0:
        raise UserError(f"train.beta: must be in [0, 1), got {beta!r}")
    counts = torch.as_tensor(list(class_counts), dtype=torch.float64).clamp_min(1.0)
    # float64: β^n for β = 0.9999 and n in the thousands loses digits in float32.
    w = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    w = w * (counts.numel() / w.sum())
    return w.to(torch.float32)


def rule_at_epoch(rule: str, epoch: int, class_counts: Sequence[int], deferred_epoch: int,
                  beta: float = 0.9999) -> tuple[str, torch.Tensor | None]:
    """(sampler, class weights) for 0-based `epoch`; sampler is "uniform" or "balanced"."""
    if rule not in RULES:
        raise UserError(f"train.rule: unknown rule {rule!r} (expected one of: {', '.join(RULES)})")
    deferred = epoch >= deferred_epoch
    if rule == "erm":
        return "uniform", None
    if rule == "resample":
        return "balanced", None
    if rule == "reweight" or (rule == "drw" and deferred):
        return "uniform", effective_number_weights(class_counts, beta)
    if rule == "drs" and deferred:
        return "balanced", None
    return "uniform", None
