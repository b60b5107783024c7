"""CIFAR-style ResNets (He et al. 2016, §4.2), the reference classifiers of docs/method.md, classifier recipes.

A 3x3 stem with 16 channels, three stages of n basic blocks (16/32/64 channels, strides 1/2/2), option-A
shortcuts (identity, subsampled and zero-padded in channels, so shortcuts add no parameters), global
average pooling and a head. Depth 6n+2: resnet20 (n=3), resnet32 (n=5), resnet44 (n=7), resnet56 (n=9).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gitune.models.heads import make_head

DEPTH_TO_BLOCKS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every `stride`-th pixel and zero-pad the channels up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_front = extra // 2
        self.pad_back = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad's last pairs are (W), (H), (C): pad only the channel dimension.
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = PadShortcut(in_channels, out_channels, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; `features` is the pooled 64-d penultimate layer."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int = 3,
                 cosine_head: bool = False, cosine_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        channels = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(BasicBlock(channels, width, stride if i == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.feature_dim = channels
        self.head = make_head(channels, num_classes, cosine_head, cosine_scale)
        _kaiming_init(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        # mean over H, W rather than AdaptiveAvgPool2d: same value, and its CUDA backward is deterministic.
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _kaiming_init(model: nn.Module) -> None:
    """Kaiming-normal weights for convs and linear layers (as the reference), zero biases."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def resnet(arch: str, num_classes: int, in_channels: int = 3, cosine_head: bool = False,
           cosine_scale: float = 1.0) -> CifarResNet:
    """Build one of `DEPTH_TO_BLOCKS` (the caller has already checked the name)."""
    return CifarResNet(DEPTH_TO_BLOCKS[arch], num_classes, in_channels, cosine_head, cosine_scale)
