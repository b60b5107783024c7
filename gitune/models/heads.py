"""Classifier heads.

`CosineLinear` is the LDAM head: logits are cosines between the normalised feature and each normalised
class weight, so every logit lies in [-1, 1] and the LDAM loss rescales them by s.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineLinear(nn.Module):
    """Linear layer without bias whose output is cos(feature, weight_c) for every class c."""

    def __init__(self, in_features: int, num_classes: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = num_classes
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1, eps=self.eps)
        w = F.normalize(self.weight, dim=1, eps=self.eps)
        # Normalised vectors can give |cos| a hair above 1 through rounding; clamp so the contract holds.
        return F.linear(x, w).clamp(-1.0, 1.0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.out_features}"


def make_head(in_features: int, num_classes: int, cosine: bool) -> nn.Module:
    """The plain linear head, or the cosine head when the loss needs one (LDAM)."""
    if cosine:
        return CosineLinear(in_features, num_classes)
    return nn.Linear(in_features, num_classes)
