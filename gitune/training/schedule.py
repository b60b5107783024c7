"""SGD and the reference LR schedule (docs/method.md, classifier recipes): linear warm-up, then step decay at milestones.

The scheduler is stepped once per epoch; epochs are 0-based.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def lr_factor(epoch: int, warmup_epochs: int, milestones: Sequence[int], gamma: float) -> float:
    """Multiplier of the base LR at `epoch`.

    Warm-up (epoch < warmup_epochs): (epoch+1)/warmup_epochs. Afterwards gamma ** #(milestones m with
    epoch >= m). Reference: warm-up 5, milestones [160, 180], gamma 0.01 → lr 0.1, 1e-3, 1e-5.
    """
    if epoch < warmup_epochs:
        return (epoch + 1) / warmup_epochs
    return float(gamma ** sum(1 for m in milestones if epoch >= m))


def build_optimizer(model: nn.Module, lr: float, momentum: float, weight_decay: float,
                    nesterov: bool = False) -> torch.optim.SGD:
    """SGD over all trainable parameters with plain weight decay on all of them (as the reference)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_epochs: int, milestones: Sequence[int],
                    gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR applying `lr_factor`; call `.step()` once at the end of every epoch.

    Construction already sets the optimizer's LR to base * lr_factor(0).
    """
    milestones = tuple(milestones)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda epoch: lr_factor(epoch, warmup_epochs, milestones, gamma))
