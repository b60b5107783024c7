"""Batched training augmentation on the batch's device (no per-sample Python, no PIL).

Every random draw comes from the caller's generator, which must live on the batch's device, so the same
generator state gives the same batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def to_float(x_uint8: Tensor) -> Tensor:
    """uint8 images → float32 in [0, 1] (the storage format is uint8 to keep datasets small on device)."""
    return x_uint8.float().div_(255.0)


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def shift(x: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Shift image n by (dy[n], dx[n]) whole pixels (down, right), zero fill; one gather per axis.

    out[n, :, i, j] = x[n, :, i − dy[n], j − dx[n]] when inside the image, else 0. Works for any dtype.
    """
    n, c, h, w = x.shape
    rows = torch.arange(h, device=x.device).unsqueeze(0) - dy.to(x.device).long().unsqueeze(1)  # N×H
    cols = torch.arange(w, device=x.device).unsqueeze(0) - dx.to(x.device).long().unsqueeze(1)  # N×W
    ok_r = (rows >= 0) & (rows < h)
    ok_c = (cols >= 0) & (cols < w)
    out = x.gather(2, rows.clamp(0, h - 1)[:, None, :, None].expand(n, c, h, w))
    out = out.gather(3, cols.clamp(0, w - 1)[:, None, None, :].expand(n, c, h, w))
    keep = ok_r[:, None, :, None] & ok_c[:, None, None, :]
    return torch.where(keep, out, torch.zeros((), dtype=x.dtype, device=x.device))


def random_crop(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by `pad` and crop back to H×W at an independent random offset per image.

    Equivalent to a random shift in {−pad..pad}² with zero fill, which is how it is computed.
    """
    if pad <= 0:
        return x
    n = x.shape[0]
    offs = torch.randint(0, 2 * pad + 1, (2, n), generator=generator, device=x.device)
    return shift(x, pad - offs[0], pad - offs[1])


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Horizontal flip of each image with probability 0.5."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def color_jitter(x: Tensor, generator: torch.Generator, brightness: float = 0.4, contrast: float = 0.4) -> Tensor:
    """Per-image brightness (multiply) then contrast (scale around the image mean), factors ~ U[1−b, 1+b].

    x is float in [0, 1]; the result is clamped to [0, 1].
    """
    n = x.shape[0]
    out = x
    if brightness > 0:
        b = _uniform(n, 1.0 - brightness, 1.0 + brightness, generator, x.device)
        out = out * b[:, None, None, None]
    if contrast > 0:
        c = _uniform(n, 1.0 - contrast, 1.0 + contrast, generator, x.device)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * c[:, None, None, None] + mean
    return out.clamp(0.0, 1.0)


def standard_augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Crop (pad 4) + flip + colour jitter: the invariance T used for natural images (docs/method.md, measuring invariance)."""
    return color_jitter(random_flip(random_crop(x, 4, generator), generator), generator)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel (x − mean) / std for float N×C×H×W images."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
