"""A small CNN for CPU runs (demo sweeps, tests): fast enough to train a few epochs on 2 cores."""

from __future__ import annotations

import torch
from torch import nn

from gitune.models.heads import make_head
from gitune.models.resnet import _kaiming_init


def _block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Three conv3x3-BN-ReLU blocks (32/64/128), max-pool after the first two, global average pool, head."""

    def __init__(self, num_classes: int, in_channels: int = 3, cosine_head: bool = False,
                 cosine_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *_block(in_channels, 32), nn.MaxPool2d(2),
            *_block(32, 64), nn.MaxPool2d(2),
            *_block(64, 128),
        )
        self.feature_dim = 128
        self.head = make_head(128, num_classes, cosine_head, cosine_scale)
        _kaiming_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
