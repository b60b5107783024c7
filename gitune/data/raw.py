"""The in-memory form every raw source loads into (RawData), and the small helpers the sources share:
one-line error text, path resolution, integer checks, PIL decoding and the data.channels / data.image_size
conformance. The bottom of gitune.data's source layer: sources.py and torchvision_source.py import from here,
and this module imports neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gitune.errors import UserError


# Bounds on what a data source may make gitune allocate, checked from headers before anything is decoded
# (README, "Data"): a hostile or corrupt file is refused in one line instead of exhausting memory.
MAX_CLASSES = 100_000  # classes inferred from labels (max + 1): a larger label is refused before bincount
MAX_DATA_BYTES = 8 * 2**30  # decoded arrays of one source together (npz members, ImageFolder images)
MAX_ZIP_RATIO = 2000  # declared / compressed size of an npz member (deflate cannot pass ~1030)
MAX_IMAGE_PIXELS = 2**26  # width × height of one ImageFolder image (8192 × 8192)
MAX_FOLDER_IMAGES = 2_000_000  # image files in one ImageFolder


@dataclass
class RawData:
    """A source as loaded: uint8 N×C×H×W images in source order, before any long-tail subsampling."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor | None
    test_labels: Tensor | None
    num_classes: int
    class_names: list[str]
    natural: bool


def one_line(err: BaseException) -> str:
    """An exception as one line of text, prefixed with its type (for error messages that quote a cause)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def abspath(p) -> str:
    """A config path with ~ expanded, made absolute."""
    return os.path.abspath(os.path.expanduser(str(p)))


def is_int(v) -> bool:
    """True for Python / NumPy integers, not for bools."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_labels_within(low: int, high: int, num_classes: int | None, what: str, where: str) -> None:
    """Labels (their min and max) must be class indices 0..K-1, K known or at most MAX_CLASSES: checked before
    anything is allocated by the largest label (bincount, one-hot), which for 2**40 would be terabytes."""
    bound = MAX_CLASSES if num_classes is None else num_classes
    if low < 0:
        raise UserError(f"{where}: {what} has negative label {low} (expected class indices 0..K-1)")
    if high >= bound:
        expected = (f"0..{bound - 1} for the {bound} classes" if num_classes is not None
                    else f"0..K-1 with at most {MAX_CLASSES:,} classes")
        raise UserError(f"{where}: {what} has label {high} (expected class indices {expected})")


def pil_array(im, mode: str, size: int | None) -> np.ndarray:
    """One PIL image → uint8 H×W×C array in `mode` ("L" or "RGB"), resized to size×size when given."""
    from PIL import Image

    im = im.convert(mode)
    if size:
        im = im.resize((size, size), Image.BILINEAR)
    a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def conform(x: Tensor, cfg: dict) -> Tensor:
    """Apply data.channels (1 ↔ 3) and data.image_size (antialiased resize) to uint8 N×C×H×W images."""
    want_c = cfg.get("channels")
    if want_c == 1 and x.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = torch.cat([(x[i:i + 4096].float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
                       for i in range(0, len(x), 4096)])
    elif want_c == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1).contiguous()
    size = cfg.get("image_size")
    if size and tuple(x.shape[2:]) != (size, size):
        x = torch.cat([F.interpolate(x[i:i + 4096].float(), size=(size, size), mode="bilinear",
                                     align_corners=False, antialias=True).round_().clamp_(0, 255).to(torch.uint8)
                       for i in range(0, len(x), 4096)])
    return x
