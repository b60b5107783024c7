"""Built-in "glyphs" dataset: seeded stroke patterns, one per class, rendered in torch (no download).

It stands in for the transformed long-tailed datasets (K49-LT) so that demos and tests run offline: each
class is a fixed skeleton of line segments on a coarse lattice; images of a class differ by small jitter
of the skeleton, and the class-agnostic nuisances are applied exactly (rotation and translation move the
control points before rendering, stroke changes the rendered width, background fills the empty pixels).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from gitune.config import check_value
from gitune.data.nuisances import validate_nuisance

# Skeleton lattice (normalised coordinates, [-1, 1] spans the image) and difficulty knobs, calibrated so
# that a small CNN trained with ERM on a rotated exp long tail is good on head classes and clearly worse
# on tail classes. Measured (rotation 180, exp n_max 500 ratio 50, 10 classes, 28×28; 3-conv CNN, SGD
# lr 0.05, 20 epochs, seeds 0/1/2): many-shot 95/99/100 %, medium 65/75/58 %, few-shot 1/10/0 %.
_LATTICE = np.linspace(-0.6, 0.6, 4)
_MIN_SEGMENTS, _MAX_SEGMENTS = 3, 5
_JITTER = 0.05            # std of per-image control-point jitter (normalised units)
_SCALE = (0.90, 1.10)     # per-image isotropic scale of the skeleton
_SHEAR = 0.08             # per-image max shear
_HALF_WIDTH = 1.1         # stroke half-width in pixels at 28×28 (scaled with image size)
_MAX_SIMILARITY = 0.80    # skeletons whose rotated renders are more similar than this are rejected
_CHUNK_ELEMS = 1 << 18    # pixel×segment distances per render chunk: small enough to stay in cache
_FAR = 1.0e4              # endpoint of padding segments, far outside every image
_DRAWS = 29               # uniforms per image: 4×5 jitter, scale, shear, angle, 2 shifts, 3 stroke, bg


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in key]))


def _random_skeleton(rng: np.random.Generator) -> np.ndarray:
    """3–5 distinct segments between lattice points, drawn as 1–2 pen strokes (K×2×2 array)."""
    pts = np.array([(x, y) for y in _LATTICE for x in _LATTICE])
    k = int(rng.integers(_MIN_SEGMENTS, _MAX_SEGMENTS + 1))
    segs: list[tuple[int, int]] = []
    cur = int(rng.integers(len(pts)))
    while len(segs) < k:
        if segs and rng.random() < 0.25:  # pen up: start a new stroke
            cur = int(rng.integers(len(pts)))
        d = np.linalg.norm(pts - pts[cur], axis=1)
        ok = np.nonzero((d > 1e-6) & (d < 0.9))[0]  # up to two lattice steps (incl. diagonals)
        nxt = int(rng.choice(ok))
        key = (min(cur, nxt), max(cur, nxt))
        if key not in segs:
            segs.append(key)
        cur = nxt
    return np.stack([np.stack([pts[a], pts[b]]) for a, b in segs]).astype(np.float32)


def _render(segs: Tensor, half_width: Tensor, size: int) -> Tensor:
    """Anti-aliased strokes: intensity = clamp(half_width − distance + 0.5, 0, 1) to the nearest segment.

    segs: N×K×2×2 endpoints in normalised coordinates; half_width: N (pixels). Returns float N×H×W.
    """
    n = segs.shape[0]
    out = torch.empty(n, size * size)
    centre = (torch.arange(size, dtype=torch.float32) + 0.5)
    py, px = torch.meshgrid(centre, centre, indexing="ij")
    px, py = px.reshape(1, 1, -1), py.reshape(1, 1, -1)
    pix = (segs + 1.0) * (size / 2.0)  # normalised → pixel coordinates (pixel centres at j + 0.5)
    chunk = max(8, _CHUNK_ELEMS // (segs.shape[1] * size * size))
    for s in range(0, n, chunk):
        p = pix[s:s + chunk]
        ax, ay = p[:, :, 0, 0:1], p[:, :, 0, 1:2]
        abx, aby = p[:, :, 1, 0:1] - ax, p[:, :, 1, 1:2] - ay
        len2 = (abx * abx + aby * aby).clamp_min(1e-8)
        rx, ry = px - ax, py - ay
        t = ((rx * abx + ry * aby) / len2).clamp_(0.0, 1.0)
        dx = rx.sub_(t * abx)
        dy = ry.sub_(t * aby)
        d2 = (dx.mul_(dx)).add_(dy.mul_(dy)).amin(dim=1)
        hw = half_width[s:s + chunk, None]
        out[s:s + chunk] = (hw + 0.5 - d2.sqrt_()).clamp_(0.0, 1.0)
    return out.view(n, size, size)


def _rotations(segs: Tensor, angles_rad: Tensor) -> Tensor:
    """Rotate N×K×2×2 normalised endpoints about the image centre by angles_rad[n]."""
    c, s = torch.cos(angles_rad)[:, None, None], torch.sin(angles_rad)[:, None, None]
    x, y = segs[..., 0], segs[..., 1]
    return torch.stack([c * x - s * y, s * x + c * y], dim=-1)


def _pad(skel: np.ndarray, k: int) -> np.ndarray:
    out = np.full((k, 2, 2), _FAR, dtype=np.float32)
    out[: len(skel)] = skel
    return out


def class_skeletons(num_classes: int, seed: int) -> list[np.ndarray]:
    """The skeleton (K×2×2 segment endpoints) of every class; drawn in class order from `seed`, so class c's
    skeleton does not depend on num_classes.

    A candidate is rejected when its render under any rotation is too similar to an accepted class, because
    rotation is a nuisance here and classes must stay distinguishable under it.
    """
    return [s.copy() for s in _skeletons(int(num_classes), int(seed))]


@functools.lru_cache(maxsize=8)
def _skeletons(num_classes: int, seed: int) -> tuple[np.ndarray, ...]:
    size, n_rot = 20, 36
    angles = torch.arange(n_rot, dtype=torch.float32) * (2 * math.pi / n_rot)
    accepted: list[np.ndarray] = []
    canon = torch.empty(0, size * size)
    rng = _rng(seed, 0x5EED)
    threshold = _MAX_SIMILARITY
    tries = 0
    while len(accepted) < num_classes:
        cand = _random_skeleton(rng)
        tries += 1
        if tries % 200 == 0:  # many classes: relax slowly rather than loop forever
            threshold = min(threshold + 0.02, 0.99)
        segs = torch.from_numpy(_pad(cand, _MAX_SEGMENTS))[None].expand(n_rot, -1, -1, -1)
        imgs = _render(_rotations(segs, angles), torch.full((n_rot,), 1.5), size).reshape(n_rot, -1)
        imgs = imgs / imgs.norm(dim=1, keepdim=True).clamp_min(1e-8)
        if len(accepted) and float((imgs @ canon.T).max()) > threshold:
            continue
        accepted.append(cand)
        canon = torch.cat([canon, imgs[:1]])
    return tuple(accepted)


def make_glyphs(
    num_classes: int,
    counts_per_class: list[int],
    image_size: int,
    nuisance: dict,
    seed: int,
    channels: int = 1,
    stream: int = 0,
) -> tuple[Tensor, Tensor]:
    """Render counts_per_class[c] images of every class c: (uint8 N×C×H×W, int64 N), grouped by class.

    Skeletons come from `seed`; per-image draws come from (seed, stream, class), so the first k images of
    a class are the same whatever the other counts, and another `stream` gives fresh images of the same
    classes (validation / test sets). Deterministic: same arguments → identical tensors.
    """
    for key, value in (("num_classes", num_classes), ("image_size", image_size), ("channels", channels)):
        check_value(f"data.{key}", value, f"data.{key}", groups=("data",))  # the bounds of gitune.config.KEYS
    if len(counts_per_class) != num_classes:
        raise ValueError(f"counts_per_class has {len(counts_per_class)} entries for {num_classes} classes")
    spec = validate_nuisance(nuisance)
    size = int(image_size)
    skels = class_skeletons(num_classes, seed)
    rot = math.radians(float(spec.get("rotation", 0.0)))
    trans = int(spec.get("translate", 0))
    bg = int(spec.get("background", 0))
    base_hw = _HALF_WIDTH * size / 28.0

    all_segs, all_hw, all_bg, all_labels = [], [], [], []
    for c, n in enumerate(counts_per_class):
        n = int(n)
        if n <= 0:
            continue
        # One row of uniforms per image, drawn sequentially: image i's draws do not depend on n, so the
        # first k images of a class are the same whatever the count (and whatever the nuisance spec).
        u = torch.from_numpy(_rng(seed, stream, c, 0xC1A55).random((n, _DRAWS))).float()
        u = u.clamp(1e-7, 1 - 1e-7)
        skel = torch.from_numpy(skels[c])  # K×2×2
        k = skel.shape[0]
        jitter = torch.special.ndtri(u[:, : 4 * k]).reshape(n, k, 2, 2) * _JITTER
        scale = _SCALE[0] + (_SCALE[1] - _SCALE[0]) * u[:, 20]
        shear = (2.0 * u[:, 21] - 1.0) * _SHEAR
        angle = (2.0 * u[:, 22] - 1.0) * rot
        shifts = (u[:, 23:25] * (2 * trans + 1)).floor() - trans
        dilate = u[:, 25] < 0.6
        d_side = 2 + (u[:, 26] * 3).floor()
        e_side = 1 + (u[:, 27] * 2).floor()
        bgv = (u[:, 28] * (bg + 1)).floor()

        # Shared endpoints get the same jitter so connected strokes stay connected.
        flat = skel.reshape(-1, 2)
        _, inv = torch.unique(flat, dim=0, return_inverse=True)
        jit = jitter.reshape(n, -1, 2)[:, inv.new_tensor(_first_index(inv))[inv]]
        pts = flat[None] * scale[:, None, None] + jit
        pts = torch.stack([pts[..., 0] + shear[:, None] * pts[..., 1], pts[..., 1]], dim=-1)
        segs = _rotations(pts.reshape(n, k, 2, 2), angle)
        segs = segs + (shifts * (2.0 / size))[:, None, None, :]
        padded = torch.full((n, _MAX_SEGMENTS, 2, 2), _FAR)
        padded[:, :k] = segs
        all_segs.append(padded)

        hw = torch.full((n,), base_hw)
        if spec.get("stroke"):
            # Mirrors the morphological nuisance: a side-s square grows (or shrinks) a stroke by (s−1)/2.
            delta = torch.where(dilate, (d_side - 1) / 2.0, -(e_side - 1) / 2.0) * (size / 28.0)
            hw = (hw + delta).clamp_min(0.5)
        all_hw.append(hw)
        all_bg.append(bgv)
        all_labels.append(torch.full((n,), c, dtype=torch.int64))

    if not all_labels:
        return torch.zeros(0, channels, size, size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    img = _render(torch.cat(all_segs), torch.cat(all_hw), size)
    img = img.mul_(255.0).round_().to(torch.uint8)
    if bg:
        v = torch.cat(all_bg).to(torch.uint8)[:, None, None]
        img = torch.where(img == 0, v, img)
    img = img.unsqueeze(1)
    if channels == 3:
        img = img.expand(-1, 3, -1, -1).contiguous()
    return img, torch.cat(all_labels)


def _first_index(inv: Tensor) -> list[int]:
    """For each unique endpoint id, the position of its first occurrence in the flattened skeleton."""
    first: dict[int, int] = {}
    for pos, u in enumerate(inv.tolist()):
        first.setdefault(u, pos)
    return [first[u] for u in range(len(first))]
