"""Class-agnostic nuisance transformations (docs/method.md, long-tailed data), batched in torch on the images' device.

They build the transformed long-tailed datasets and serve as the true nuisance distribution T for the
invariance metrics and the oracle variant of GIT. Each image gets its own independent draw.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from gitune.config import KEY_BY_NAME
from gitune.data.augment import shift
from gitune.errors import UserError

# The nuisances and their bounds are the data.nuisance.* Key declarations of gitune.config (one source of truth
# for the spec checks and for the data layer).
_PREFIX = "data.nuisance."
NUISANCES = tuple(name[len(_PREFIX):] for name in KEY_BY_NAME if name.startswith(_PREFIX))

# Stroke nuisance (K49-LT): dilate with p=0.6 (square side U{2,3,4}), else erode (side U{1,2}).
_DILATE_P = 0.6
_DILATE_SIDES = (2, 3, 4)
_ERODE_SIDES = (1, 2)


def validate_nuisance(spec, key_prefix: str = "data.nuisance") -> dict:
    """Check a nuisance spec against the data.nuisance.* Keys; return only its enabled entries (empty dict =
    no nuisance), typed as declared (rotation float, background / translate int, stroke True)."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise UserError(f"{key_prefix}: expected a mapping with keys among {', '.join(NUISANCES)}, got {spec!r}")
    out: dict = {}
    for key, value in spec.items():
        name = f"{key_prefix}.{key}"
        if key not in NUISANCES:
            raise UserError(f"{name}: unknown nuisance (expected keys among {', '.join(NUISANCES)})")
        check = KEY_BY_NAME[_PREFIX + key].check
        if not check.test(value):
            raise UserError(f"{name}: expected {check.expected}, got {value!r}")
        if value:  # 0 and false: this nuisance is off
            out[key] = {"float": float, "int": int}.get(check.numeric, bool)(value)
    return out


def rotate(x: Tensor, angles_deg: Tensor) -> Tensor:
    """Rotate each image about its centre by angles_deg[n] (counter-clockwise on screen), bicubic, zero fill.

    Clamped to [0, 1] because bicubic interpolation overshoots.
    """
    n, _, h, w = x.shape
    a = angles_deg.to(device=x.device, dtype=x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(a), torch.sin(a)
    # Output pixel p samples input R(-a)·p; the H/W factors keep the rotation rigid on non-square images.
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (h / w)
    theta[:, 1, 0] = sin * (w / h)
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bicubic", padding_mode="zeros", align_corners=False).clamp_(0.0, 1.0)


def _morph(x: Tensor, side: int, dilate: bool) -> Tensor:
    """Grey-level dilation (max) or erosion (min) with a side×side square; output stays H×W.

    Even sides pad one pixel more on the bottom/right; padding is neutral (−inf for the max).
    """
    if side <= 1:
        return x
    lo, hi = (side - 1) // 2, side // 2
    src = x if dilate else -x
    out = F.max_pool2d(F.pad(src, (lo, hi, lo, hi), value=float("-inf")), kernel_size=side, stride=1)
    return out if dilate else -out


def random_stroke(x: Tensor, generator: torch.Generator) -> Tensor:
    """Per image: dilate (p=0.6, side U{2,3,4}) or erode (side U{1,2}).

    Every kernel runs on the whole batch and each image takes its own result: max-pooling is exact, so
    this equals transforming images one by one, and unlike gathering each kernel's images it never waits
    on the device (no data-dependent shapes), which matters when the oracle runs it every step."""
    n = x.shape[0]
    dev = x.device
    dilate = torch.rand(n, generator=generator, device=dev) < _DILATE_P
    d_side = torch.randint(_DILATE_SIDES[0], _DILATE_SIDES[-1] + 1, (n,), generator=generator, device=dev)
    e_side = torch.randint(_ERODE_SIDES[0], _ERODE_SIDES[-1] + 1, (n,), generator=generator, device=dev)
    side = torch.where(dilate, d_side, e_side)
    out = x
    for is_dilate, sides in ((True, _DILATE_SIDES), (False, _ERODE_SIDES)):
        for k in sides:
            if k <= 1:
                continue
            pick = ((dilate == is_dilate) & (side == k)).view(n, 1, 1, 1)
            out = torch.where(pick, _morph(x, k, is_dilate), out)
    return out if out is not x else x.clone()


def random_background(x: Tensor, max_value: int, generator: torch.Generator) -> Tensor:
    """Set pixels that are exactly 0 in every channel to v/255, v ~ U{0..max_value}, one v per image."""
    n = x.shape[0]
    v = torch.randint(0, int(max_value) + 1, (n,), generator=generator, device=x.device).to(x.dtype) / 255.0
    zero = (x == 0).all(dim=1, keepdim=True)
    return torch.where(zero, v[:, None, None, None], x)


def random_translate(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Integer shift ~ U{−t..t} in x and y per image, zero fill."""
    t = int(max_shift)
    d = torch.randint(-t, t + 1, (2, x.shape[0]), generator=generator, device=x.device)
    return shift(x, d[0], d[1])


def apply_nuisance(x: Tensor, spec: dict, generator: torch.Generator) -> Tensor:
    """Apply every enabled nuisance of `spec` to float N×C×H×W images in [0, 1]; returns a new tensor.

    Order: stroke, rotation, translate, background, so that the zero fill left by the geometric
    nuisances also receives the background. All randomness comes from `generator` (on x's device).
    """
    spec = validate_nuisance(spec)
    out = x.clone()
    if x.shape[0] == 0 or not spec:
        return out
    if spec.get("stroke"):
        out = random_stroke(out, generator)
    if spec.get("rotation"):
        r = float(spec["rotation"])
        angles = (torch.rand(x.shape[0], generator=generator, device=x.device) * 2.0 - 1.0) * r
        out = rotate(out, angles)
    if spec.get("translate"):
        out = random_translate(out, spec["translate"], generator)
    if spec.get("background"):
        out = random_background(out, spec["background"], generator)
    return out
