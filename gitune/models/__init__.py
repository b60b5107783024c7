"""Classifier networks: `create_model(arch, ...)` by name, through gitune.registry.MODELS.

Every model exposes `.features(x)` (N x D, the pooled penultimate layer, used by the invariance metrics)
and `.head` (nn.Linear, or CosineLinear for LDAM), with forward(x) == head(features(x)).
"""

from __future__ import annotations

from torch import nn

from gitune.errors import UserError
from gitune.models.heads import CosineLinear
from gitune.models.resnet import CifarResNet
from gitune.models.small_cnn import SmallCNN
from gitune.registry import MODEL_NAMES, resolve  # the names config checks read (torch-free)


__all__ = ["MODEL_NAMES", "CifarResNet", "CosineLinear", "SmallCNN", "count_parameters", "create_model"]


def create_model(arch: str, num_classes: int, in_channels: int, cosine_head: bool = False,
                 cosine_scale: float = 1.0) -> nn.Module:
    """Build the classifier named by config key `model.arch`; unknown names are a UserError.

    `cosine_head` gives logits cosine_scale · cos (LDAM's s), see `heads.CosineLinear`."""
    if arch not in MODEL_NAMES:
        raise UserError(f"model.arch: unknown architecture {arch!r} (expected one of: {', '.join(MODEL_NAMES)})")
    return resolve("model", arch)(arch, num_classes, in_channels, cosine_head, cosine_scale)


def build_small_cnn(arch: str, num_classes: int, in_channels: int, cosine_head: bool = False,
                    cosine_scale: float = 1.0) -> SmallCNN:
    """SmallCNN behind the registry's builder signature (one architecture, so `arch` is not needed)."""
    return SmallCNN(num_classes, in_channels, cosine_head, cosine_scale)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters, for logging model size."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
