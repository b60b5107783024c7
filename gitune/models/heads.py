"""Classifier heads.

`CosineLinear` is the LDAM head: logits are s · cos(feature, class weight). The scale lives in the head,
not only in the loss, so that the model's softmax is the distribution LDAM trained (eKLD, validation
loss and any later use of p(y|x) read the real probabilities, not a near-uniform softmax of cosines).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineLinear(nn.Module):
    """Linear layer without bias whose output is scale · cos(feature, weight_c) for every class c."""

    def __init__(self, in_features: int, num_classes: int, eps: float = 1e-8, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.in_features = in_features
        self.out_features = num_classes
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.kaiming_normal_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 even under bf16 autocast: bf16 cosines carry ~3 significant digits, and the scale (s = 30)
        # turns that into logit errors of up to ~0.1, in every logit the loss, eKLD and accuracy read.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.normalize(x.float(), dim=1, eps=self.eps)
            w = F.normalize(self.weight.float(), dim=1, eps=self.eps)
            # Normalised vectors can give |cos| a hair above 1 through rounding; clamp so the contract holds.
            return F.linear(x, w).clamp(-1.0, 1.0) * self.scale

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, num_classes={self.out_features}, scale={self.scale}"


def make_head(in_features: int, num_classes: int, cosine: bool, scale: float = 1.0) -> nn.Module:
    """The plain linear head, or the cosine head (logits scale · cos) when the loss needs one (LDAM)."""
    if cosine:
        return CosineLinear(in_features, num_classes, scale=scale)
    return nn.Linear(in_features, num_classes)
