"""Classification losses for long-tailed training (docs/method.md, classifier recipes): CE, LDAM, focal, logit-adjusted CE.

Every loss takes (logits, target) and returns the mean loss, weighted the way
F.cross_entropy(weight=w) is: sum_i w_{y_i} * l_i / sum_i w_{y_i}. Per-class weights can be swapped
between epochs with `set_weight` (the DRW rule turns them on after the first LR drop) without rebuilding
the loss. Class-dependent tensors are buffers, so `loss.to(device)` moves them with the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gitune.errors import UserError
from gitune.registry import LOSSES, resolve  # the names config checks read (torch-free)


def needs_cosine_head(loss: str) -> bool:
    """LDAM's margins are defined on cosine logits, so it needs the CosineLinear head."""
    return loss == "ldam"


class ClassLoss(nn.Module):
    """Base: holds the class counts (as a device anchor) and the optional per-class weight buffer."""

    def __init__(self, class_counts: Sequence[int], weight: torch.Tensor | None = None) -> None:
        super().__init__()
        counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
        if counts.ndim != 1 or counts.numel() == 0:
            raise ValueError("class_counts must be a non-empty 1-d sequence")
        self.num_classes = counts.numel()
        self.register_buffer("class_counts", counts)
        self.register_buffer("weight", None)
        self.set_weight(weight)

    def set_weight(self, weight: torch.Tensor | None) -> None:
        """Replace the per-class weights (None = unweighted); moved to this loss's device."""
        if weight is not None:
            weight = torch.as_tensor(weight).detach().to(self.class_counts.device, torch.float32)
            if weight.shape != (self.num_classes,):
                raise ValueError(f"weight must have shape ({self.num_classes},), got {tuple(weight.shape)}")
        self.weight = weight

    def _weighted_mean(self, per_sample: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            return per_sample.mean()
        w = self.weight[target]
        return (w * per_sample).sum() / w.sum()


class CrossEntropy(ClassLoss):
    """Plain (optionally class-weighted) cross-entropy."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, weight=self.weight)


class LDAMLoss(ClassLoss):
    """LDAM (Cao et al. 2019): CE on s · (cos − m_y at the target).

    m_c = 1 / n_c^(1/4), rescaled so that the largest margin (smallest class) equals `max_m`.
    Expects logits s · cos from the cosine head built with scale s (see `needs_cosine_head`), so it
    subtracts s · m_y: the same loss as the reference, while the model's own softmax is the trained one.
    """

    def __init__(self, class_counts: Sequence[int], weight: torch.Tensor | None = None,
                 max_m: float = 0.5, s: float = 30.0) -> None:
        super().__init__(class_counts, weight)
        # A class without training images is treated as having one (the largest margin), not infinity.
        m = self.class_counts.clamp_min(1.0).pow(-0.25)
        self.register_buffer("margins", m * (max_m / m.max()))
        self.s = s

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        margin = self.s * self.margins.to(logits.dtype)[target]
        # scatter rather than F.one_hot: no range check, so no host-device sync on CUDA.
        adjusted = logits - torch.zeros_like(logits).scatter_(1, target[:, None], margin[:, None])
        return F.cross_entropy(adjusted, target, weight=self.weight)


class FocalLoss(ClassLoss):
    """Focal loss (Lin et al. 2017): (1 - p_y)^gamma * CE_y per sample; gamma = 0 is plain CE."""

    def __init__(self, class_counts: Sequence[int], weight: torch.Tensor | None = None,
                 gamma: float = 1.0) -> None:
        super().__init__(class_counts, weight)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, reduction="none")
        one_minus_p = -torch.expm1(-ce)  # 1 - p_y, accurate when p_y is close to 1
        return self._weighted_mean(one_minus_p.pow(self.gamma) * ce, target)


class LogitAdjustedLoss(ClassLoss):
    """Logit-adjusted CE (Menon et al. 2021): CE on logits + tau * log(prior), prior_c = n_c / sum(n).

    tau = 1 is balanced softmax. Only the training loss is adjusted: predict with the raw logits
    (argmax of model(x)), which then estimate the class-balanced posterior.
    """

    def __init__(self, class_counts: Sequence[int], weight: torch.Tensor | None = None,
                 tau: float = 1.0) -> None:
        super().__init__(class_counts, weight)
        counts = self.class_counts.clamp_min(1.0)  # an empty class gets prior 1/sum, not log(0)
        self.register_buffer("log_prior", torch.log(counts / counts.sum()))
        self.tau = tau

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        adjusted = logits + self.tau * self.log_prior.to(logits.dtype)
        return F.cross_entropy(adjusted, target, weight=self.weight)


def cross_entropy(class_counts: Sequence[int], weight: torch.Tensor | None, **_: float) -> ClassLoss:
    """`ce` for the registry (gitune.registry.LOSS_FUNCTIONS): takes none of the loss hyperparameters."""
    return CrossEntropy(class_counts, weight)


def ldam(class_counts: Sequence[int], weight: torch.Tensor | None, *, ldam_max_m: float, ldam_s: float,
         **_: float) -> ClassLoss:
    """`ldam` for the registry: train.ldam_max_m and train.ldam_s."""
    return LDAMLoss(class_counts, weight, max_m=ldam_max_m, s=ldam_s)


def focal(class_counts: Sequence[int], weight: torch.Tensor | None, *, focal_gamma: float,
          **_: float) -> ClassLoss:
    """`focal` for the registry: train.focal_gamma."""
    return FocalLoss(class_counts, weight, gamma=focal_gamma)


def logit_adjusted(class_counts: Sequence[int], weight: torch.Tensor | None, *, la_tau: float,
                   **_: float) -> ClassLoss:
    """`logit_adjusted` for the registry: train.la_tau."""
    return LogitAdjustedLoss(class_counts, weight, tau=la_tau)


def build_loss(name: str, class_counts: Sequence[int], weight: torch.Tensor | None = None, *,
               focal_gamma: float = 1.0, ldam_max_m: float = 0.5, ldam_s: float = 30.0,
               la_tau: float = 1.0) -> ClassLoss:
    """The loss named by config key `train.loss` (gitune.registry.LOSS_FUNCTIONS); unknown names are a UserError."""
    if name not in LOSSES:
        raise UserError(f"train.loss: unknown loss {name!r} (expected one of: {', '.join(LOSSES)})")
    return resolve("loss", name)(class_counts, weight, focal_gamma=focal_gamma, ldam_max_m=ldam_max_m,
                                 ldam_s=ldam_s, la_tau=la_tau)
