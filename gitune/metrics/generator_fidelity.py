"""Generator fidelity: did the generator learn the nuisance, or something else (nothing, noise)?

The MUNIT losses do not say: `loss/recon_x` is minimised by an identity map that ignores its style code.
These metrics look at what the generator does to held-out CLEAN images x instead. A "synthesizer" is
any `fn(x01, rng) -> x01'` on N×C×H×W images in [0, 1] (the `Synthesize` of gitune/training/git.py): a
generator G(x, s) with a fresh style per row, the true nuisance T (`nuisance_synthesizer`), the
identity, noise. Every image gets k independent draws.

Keys (the MLflow names):

- `fid/style_effect`: mean over x of mean |G(x, s1) − G(x, s2)| in [0, 1] pixel units, averaged over the
  k(k−1)/2 pairs of independent draws. 0 for a generator that ignores its style code (identity collapse).
- `fid/content`: mean over x and draws of the Pearson correlation between x and G(x, s) over the pixel
  values of the image. Why this measure: the nuisances a MUNIT style can express (background, intensity,
  stroke width) are per-image intensity changes that leave the spatial structure in place, and Pearson
  correlation ignores per-image affine intensity changes, so a generator that only changes the nuisance
  stays near 1, one that moves, blurs or replaces strokes scores lower, noise scores ≈ 0. Real nuisances
  are only roughly affine (a bright background fill also lowers the contrast of anti-aliased stroke
  edges; rotation moves everything), which is why T's own value is reported beside it. (An image and its
  output both flat count 1, exactly one flat counts 0.)
- `fid/style_x_content` = style_effect × max(content, 0): one number for data without a known nuisance
  (natural images). A proxy, not a fidelity: it is 0 for both failure modes (identity: no style effect;
  noise: no content), but it also rewards any content-keeping change, whether or not it is the nuisance.
- With the true nuisance T: `fid/nuisance_ed`, the energy distance between the k draws of G(x, ·) and k
  draws of T(x), per image, averaged over x; Euclidean distance on pixels / sqrt(pixel values), so the
  value does not grow with image size. Unbiased (within-set terms over distinct pairs only): T against
  itself is 0 in expectation, so small negative values are noise. `fid/nuisance_ed_feat` is the same on
  the features of a fixed random conv net, so differences in structure count, not only pixel alignment.
  Energy distance subtracts each set's own spread, so a generator of pure noise (large spread, mid-grey
  on average) can score like a half-learned nuisance: read it together with `fid/content`.
  `fid/style_effect_true` and `fid/content_true` are T's own values of the first two: what a generator
  that learned the nuisance exactly would score.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gitune.data.nuisances import apply_nuisance

Synthesize = Callable[[Tensor, torch.Generator], Tensor]

STYLE_EFFECT, CONTENT, STYLE_X_CONTENT = "fid/style_effect", "fid/content", "fid/style_x_content"
NUISANCE_ED, NUISANCE_ED_FEAT = "fid/nuisance_ed", "fid/nuisance_ed_feat"
STYLE_EFFECT_TRUE, CONTENT_TRUE = "fid/style_effect_true", "fid/content_true"
KEYS = (STYLE_EFFECT, CONTENT, STYLE_X_CONTENT)
NUISANCE_KEYS = (NUISANCE_ED, NUISANCE_ED_FEAT, STYLE_EFFECT_TRUE, CONTENT_TRUE)

FEATURE_SEED = 20240917  # the random feature net is always this net, whatever torch's global RNG holds
FEATURE_WIDTHS = (16, 32, 64)


def nuisance_synthesizer(spec: dict) -> Synthesize:
    """T itself as a synthesizer: one independent nuisance draw per row."""
    return lambda x01, rng: apply_nuisance(x01, spec, rng)


def identity_synthesizer() -> Synthesize:
    """The collapsed generator: returns its input, whatever the style."""
    return lambda x01, rng: x01.clone()


@functools.lru_cache(maxsize=16)
def _feature_weights(channels: int) -> tuple[Tensor, ...]:
    """He-normal conv weights from a private seeded generator: the same net on every call, and building it
    leaves torch's global RNG (and so training) untouched."""
    g = torch.Generator().manual_seed(FEATURE_SEED + channels)
    weights, c_in = [], channels
    for c_out in FEATURE_WIDTHS:
        std = (2.0 / (c_in * 9)) ** 0.5
        weights.append(torch.randn(c_out, c_in, 3, 3, generator=g) * std)
        c_in = c_out
    return tuple(weights)


def random_features(x01: Tensor) -> Tensor:
    """N × 320 features of a fixed random net: 3 × (3×3 conv, stride 2, ReLU), widths 16/32/64, then the
    global average and a 2×2 average pool of the last layer (coarse layout)."""
    h = x01.float() * 2.0 - 1.0
    for w in _feature_weights(int(x01.shape[1])):
        h = F.relu(F.conv2d(h, w.to(h.device), stride=2, padding=1))
    return torch.cat([h.mean(dim=(2, 3)), F.adaptive_avg_pool2d(h, 2).flatten(1)], dim=1)


def energy_distance(a: Tensor, b: Tensor) -> Tensor:
    """Unbiased energy distance per row between sample sets a, b (B × k × D, k ≥ 2 each):
    2·E‖a−b‖ − E‖a−a'‖ − E‖b−b'‖, the within-set means over distinct pairs only (U-statistics), so equal
    distributions give 0 in expectation. Distances are divided by sqrt(D)."""
    k_a, k_b, d = a.shape[1], b.shape[1], a.shape[2]
    z = torch.cat([a, b], dim=1).double()
    dist = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist") / d ** 0.5
    cross = dist[:, :k_a, k_a:].mean(dim=(1, 2))
    within_a = dist[:, :k_a, :k_a].sum(dim=(1, 2)) / (k_a * (k_a - 1))  # the diagonal is 0
    within_b = dist[:, k_a:, k_a:].sum(dim=(1, 2)) / (k_b * (k_b - 1))
    return 2.0 * cross - within_a - within_b


def style_effect(draws: Tensor) -> Tensor:
    """Per row of B × k × D draws: mean |y_i − y_j| per pixel value over the pairs i < j."""
    k, d = draws.shape[1], draws.shape[2]
    dist = torch.cdist(draws.double(), draws.double(), p=1.0)
    return dist.sum(dim=(1, 2)) / (k * (k - 1)) / d


def content_correlation(x: Tensor, draws: Tensor) -> Tensor:
    """Per row: mean over the k draws of the Pearson correlation between x (B × D) and each draw (B × k × D)."""
    xc = x.double() - x.double().mean(dim=1, keepdim=True)
    yc = draws.double() - draws.double().mean(dim=2, keepdim=True)
    cov = (yc * xc[:, None]).sum(dim=2)
    vx, vy = (xc * xc).sum(dim=1)[:, None], (yc * yc).sum(dim=2)
    tiny = 1e-12
    flat_x, flat_y = vx <= tiny, vy <= tiny
    corr = cov / (vx * vy).clamp_min(tiny * tiny).sqrt()
    corr = torch.where(flat_x | flat_y, (flat_x & flat_y).double(), corr)
    return corr.mean(dim=1)


def _draw(synthesize: Synthesize, x: Tensor, k: int, rng: torch.Generator) -> Tensor:
    """k draws per image in one call: B × k × C × H × W."""
    b = x.shape[0]
    y = synthesize(x.repeat(k, 1, 1, 1), rng).float()
    return y.reshape(k, b, *x.shape[1:]).transpose(0, 1)


def measure_fidelity(synthesize: Synthesize, images01: Tensor, rng: torch.Generator,
                       truth: Synthesize | None = None, draws: int = 4, batch_size: int = 256) -> dict[str, float]:
    """The fidelity metrics (module docstring) of `synthesize` on clean images (N×C×H×W, [0, 1], N ≥ 1);
    the nuisance ones only when `truth` (T as a synthesizer) is given. `batch_size` bounds the rows of one
    synthesizer call (images × draws). All randomness comes from `rng`, so equal seeds give equal numbers."""
    if draws < 2:
        raise ValueError(f"measure_fidelity: draws must be ≥ 2 (pairs of draws), got {draws}")
    n = images01.shape[0]
    if n == 0:
        raise ValueError("measure_fidelity: no images")
    step = max(1, batch_size // draws)
    sums: dict[str, float] = {}

    def add(key: str, values: Tensor) -> None:
        sums[key] = sums.get(key, 0.0) + float(values.sum())

    for i in range(0, n, step):
        x = images01[i:i + step].float()
        flat_x = x.flatten(1)
        gen = _draw(synthesize, x, draws, rng)
        add(STYLE_EFFECT, style_effect(gen.flatten(2)))
        add(CONTENT, content_correlation(flat_x, gen.flatten(2)))
        if truth is None:
            continue
        true = _draw(truth, x, draws, rng)
        add(STYLE_EFFECT_TRUE, style_effect(true.flatten(2)))
        add(CONTENT_TRUE, content_correlation(flat_x, true.flatten(2)))
        add(NUISANCE_ED, energy_distance(gen.flatten(2), true.flatten(2)))
        b = x.shape[0]
        feats = random_features(torch.cat([gen.flatten(0, 1), true.flatten(0, 1)]))
        add(NUISANCE_ED_FEAT, energy_distance(feats[:b * draws].reshape(b, draws, -1),
                                              feats[b * draws:].reshape(b, draws, -1)))
    out = {k: v / n for k, v in sums.items()}
    out[STYLE_X_CONTENT] = out[STYLE_EFFECT] * max(out[CONTENT], 0.0)
    return out


def fidelity_summary(metrics: dict[str, float]) -> str:
    """One line: each fid/* value, with T's reference next to style effect and content when known."""
    def ref(key: str, true_key: str) -> str:
        extra = f" (T: {metrics[true_key]:.4g})" if true_key in metrics else ""
        return f"{key}={metrics[key]:.4g}{extra}"

    parts = [ref(STYLE_EFFECT, STYLE_EFFECT_TRUE), ref(CONTENT, CONTENT_TRUE)]
    parts += [f"{k}={metrics[k]:.4g}" for k in (STYLE_X_CONTENT, NUISANCE_ED, NUISANCE_ED_FEAT) if k in metrics]
    return ", ".join(parts)
