"""Further invariance metrics (docs/method.md, measuring invariance): softmax and latent G-EED, and the representational ratio.

For every image x, K nuisances g_1..g_K are drawn from T (`transform` draws a fresh one per row):

- Softmax G-EED (Kvinge et al.): mean_k KL(p_k || p_bar), p_k = softmax(model(g_k x)), p_bar = mean_k p_k.
  0 when the prediction does not move under T; for K = 2 it is the Jensen-Shannon divergence of p_1, p_2.
- Latent G-EED at a layer: mean_k (1 - cos(f_k, c)), f_k the flattened output of the layer for g_k x and
  c = mean_k f_k. Cosines with a zero vector are defined as: cos(0, 0) = 1 (identical vectors, so an
  exactly invariant layer whose output is all zeros scores 0) and cos(v, 0) = cos(0, v) = 0 for v != 0
  (e.g. outputs that cancel out, f_1 = -f_2, score 1). A vector counts as zero when its norm is <= eps.
- Representational invariance ratio (Speicher et al.), phi = model.features (the pooled penultimate layer):
  mean_x ||phi(t1 x) - phi(t2 x)|| / mean_i ||phi(x_i) - phi(x_pi(i))||, with t1, t2 two independent
  draws of the same image (the first two of the K draws above) and pi a random derangement (a permutation
  without fixed points: a fixed point would add a zero distance and bias the denominator down).
  Lower = more invariant; about 1 = the features carry no more about the image than about any other.
  Per class, the class's mean numerator is divided by the *global* denominator. The denominator is the
  scale of feature space (how far apart two random images are), not a property of the class: a
  per-class denominator (pairs within class c) would measure the class's own spread, which shrinks as
  a class is learned better, so the ratio would mix invariance with class compactness, and it is
  undefined or very noisy for few-shot classes with one or two evaluation images. With one shared
  denominator, per-class ratios rank exactly as their numerators and are comparable across classes.

`measure_extra_invariance` follows `measure_invariance`: images are float [0, 1] N x C x H x W on the
model's device, `preprocess` maps them to model input, the model runs in eval mode under inference_mode
with its mode restored, class values are means over their images, group and overall means are over
classes, and there is one device->host transfer at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gitune.metrics.accuracy import class_key, group_means
from gitune.metrics.invariance import kl_divergence, per_class_means, spearman

PENULTIMATE = "features"
"""Layer name meaning the output of `model.features` (N x D pooled penultimate features)."""

RATIO_REFERENCES = ("clean", "transformed")


# ---------------------------------------------------------------- pure functions


def softmax_geed_from_log_probs(log_probs: torch.Tensor) -> torch.Tensor:
    """Softmax G-EED per image from log-probabilities K x N x C; returns N (float32 or wider)."""
    if log_probs.dim() != 3:
        raise ValueError(f"softmax_geed: expected K x N x C, got shape {tuple(log_probs.shape)}")
    k = log_probs.shape[0]
    log_probs = log_probs.float() if log_probs.dtype in (torch.float16, torch.bfloat16) else log_probs
    log_mean = torch.logsumexp(log_probs, dim=0) - math.log(k)  # log p_bar, N x C
    return kl_divergence(log_probs, log_mean.expand_as(log_probs)).mean(dim=0)


def softmax_geed(probs: torch.Tensor) -> torch.Tensor:
    """Softmax G-EED per image: probs K x N x C (rows sum to 1) -> N; zero probabilities are allowed."""
    return softmax_geed_from_log_probs(probs.log())


def latent_geed(feats: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Latent G-EED per image: feats K x N x ... (flattened per row) -> N; mean_k (1 - cos(f_k, mean_k f_k)).

    Zero vectors (norm <= eps): cos(0, 0) = 1 and cos(v, 0) = 0, see the module docstring.
    """
    if feats.dim() < 3:
        raise ValueError(f"latent_geed: expected K x N x D (or K x N x ...), got shape {tuple(feats.shape)}")
    f = feats.flatten(2)
    f = f.float() if f.dtype in (torch.float16, torch.bfloat16) else f
    c = f.mean(dim=0, keepdim=True)
    f_norm, c_norm = f.norm(dim=-1), c.norm(dim=-1)
    # |f . c| <= |f||c|, so dividing by max(|f||c|, eps^2) keeps |cos| <= 1 up to rounding.
    cos = (f * c).sum(dim=-1) / (f_norm * c_norm).clamp_min(eps * eps)
    both_zero = (f_norm <= eps) & (c_norm <= eps)
    cos = torch.where(both_zero, torch.ones_like(cos), cos.clamp(-1.0, 1.0))
    return (1.0 - cos).mean(dim=0)


def pair_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between matching rows of a and b (N x ...), flattened per row -> N."""
    return (a.flatten(1).float() - b.flatten(1).float()).norm(dim=1)


def representation_ratio(f1: torch.Tensor, f2: torch.Tensor, f_ref: torch.Tensor,
                         f_perm: torch.Tensor) -> torch.Tensor:
    """mean ||f1 - f2|| / mean ||f_ref - f_perm|| (0-dim tensor).

    f1, f2: features of two nuisance draws of the same images (row i = image i); f_ref, f_perm: features of
    different images (f_perm = f_ref[pi] for a derangement pi). NaN when the denominator is 0.
    """
    return pair_distances(f1, f2).mean() / pair_distances(f_ref, f_perm).mean()


def derangement(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A uniformly random permutation of range(n) with no fixed points (CPU, int64), by rejection.

    Each try succeeds with probability about 1/e; reproducible for a seeded generator.
    """
    if n < 2:
        raise ValueError(f"derangement: needs n >= 2 (got {n})")
    device = generator.device if generator is not None else torch.device("cpu")
    ar = torch.arange(n, device=device)
    while True:
        perm = torch.randperm(n, generator=generator, device=device)
        if not bool((perm == ar).any()):
            return perm.cpu()


# ---------------------------------------------------------------- model plumbing


def _resolve_layer(model: nn.Module, layer: str) -> nn.Module | None:
    """None for the penultimate features, else the module named `layer`; unknown names are a ValueError."""
    if layer == PENULTIMATE:
        return None
    modules = dict(model.named_modules())
    if layer and layer in modules:
        return modules[layer]
    names = [PENULTIMATE] + [name for name in modules if name]
    shown = ", ".join(repr(name) for name in names[:10])
    more = f", ... ({len(names)} in all)" if len(names) > 10 else ""
    raise ValueError(f"measure_extra_invariance: unknown layer {layer!r}; valid names: {shown}{more}")


class _Capture:
    """Forward hook keeping the output of one module call."""

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.outputs: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, inputs, output) -> None:
        if not torch.is_tensor(output):
            raise TypeError(f"measure_extra_invariance: layer {self.layer!r} returns "
                            f"{type(output).__name__}, not a tensor")
        self.outputs.append(output)

    def take(self) -> torch.Tensor:
        if len(self.outputs) != 1:
            n, self.outputs = len(self.outputs), []
            raise RuntimeError(f"measure_extra_invariance: layer {self.layer!r} ran {n} times in one "
                               "forward pass (expected once)")
        return self.outputs.pop()


# ---------------------------------------------------------------- entry point


def measure_extra_invariance(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                             transform: Callable[[torch.Tensor], torch.Tensor],
                             preprocess: Callable[[torch.Tensor], torch.Tensor], n_transforms: int,
                             num_classes: int, class_counts: Sequence[int], batch_size: int = 512,
                             prefix: str = "inv", layer: str = PENULTIMATE,
                             generator: torch.Generator | None = None,
                             ratio_reference: str = "clean") -> dict[str, float]:
    """Softmax G-EED, latent G-EED at `layer` and the representational invariance ratio, as floats.

    model: exposes .features(x) (N x D) and .head, with forward(x) == head(features(x)).
    images: float [0, 1] N x C x H x W on the model's device (N >= 2); labels: N. transform(x01) -> x01
    draws a fresh nuisance per row; n_transforms = K >= 2 draws per image. Rows are image-major (the K
    draws of an image are consecutive) and each forward pass has at most batch_size rows.
    layer: "features" (PENULTIMATE) for model.features, or any name in model.named_modules().
    generator: draws the derangement pi of the ratio's denominator (None: the global RNG).
    ratio_reference: "clean" (docs/method.md, measuring invariance: ||phi(x_i) - phi(x_pi(i))|| on the untransformed images) or
    "transformed" (||phi(t1 x_i) - phi(t2 x_pi(i))||, i.e. the numerator's setting but different images, so
    the ratio is 1 exactly when the features keep no identity, even if T shifts the feature scale).

    Keys, for metric in geed, latent_geed, rep_ratio:
      {prefix}/{metric}/cNNN (classes with images), {prefix}/{metric}_{many,medium,few} (groups with such
      classes), {prefix}/{metric}_mean (mean over classes), {prefix}/{metric}_size_spearman (class size
      vs the metric; negative when larger classes are more invariant); and
      {prefix}/rep_ratio (all images pooled: the paper's ratio), {prefix}/rep_dist_same (its numerator),
      {prefix}/rep_dist_diff (its denominator, also the denominator of every per-class rep_ratio).
    """
    if n_transforms < 2:
        raise ValueError("measure_extra_invariance: n_transforms must be >= 2 (G-EED and the ratio need "
                         "two or more draws per image)")
    n = images.shape[0]
    if n < 2:
        raise ValueError("measure_extra_invariance: needs at least 2 images (the ratio compares images)")
    if len(class_counts) != num_classes:
        raise ValueError("measure_extra_invariance: len(class_counts) != num_classes")
    if batch_size < 1:
        raise ValueError("measure_extra_invariance: batch_size must be >= 1")
    if ratio_reference not in RATIO_REFERENCES:
        raise ValueError(f"measure_extra_invariance: ratio_reference must be one of {RATIO_REFERENCES}, "
                         f"got {ratio_reference!r}")
    for attr in ("features", "head"):
        if not hasattr(model, attr):
            raise TypeError(f"measure_extra_invariance: the model has no .{attr}")
    module = _resolve_layer(model, layer)
    device = images.device
    labels = labels.reshape(-1).long().to(device)
    perm = derangement(n, generator).to(device)
    k = n_transforms
    per_group = max(1, batch_size // k)  # images whose K draws share forward passes

    capture = _Capture(layer)
    handle = module.register_forward_hook(capture) if module is not None else None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            geed_img = torch.empty(n, device=device)
            latent_img = torch.empty(n, device=device)
            f1 = f2 = None
            for g0 in range(0, n, per_group):
                g1 = min(g0 + per_group, n)
                rows = torch.arange(g0, g1, device=device).repeat_interleave(k)
                log_p, pen, lat = [], [], []
                for r in range(0, rows.numel(), batch_size):
                    feats = model.features(preprocess(transform(images[rows[r:r + batch_size]])))
                    log_p.append(torch.log_softmax(model.head(feats).float(), dim=-1))
                    pen.append(feats.float())
                    if module is not None:
                        lat.append(capture.take().float())
                m = g1 - g0
                pen_t = torch.cat(pen).reshape(m, k, -1)
                log_p_t = torch.cat(log_p).reshape(m, k, -1)
                geed_img[g0:g1] = softmax_geed_from_log_probs(log_p_t.transpose(0, 1))
                lat_t = pen_t if module is None else torch.cat(lat).reshape(m, k, -1)
                latent_img[g0:g1] = latent_geed(lat_t.transpose(0, 1))
                if f1 is None:
                    f1 = torch.empty(n, pen_t.shape[-1], device=device)
                    f2 = torch.empty_like(f1)
                f1[g0:g1], f2[g0:g1] = pen_t[:, 0], pen_t[:, 1]
            if handle is not None:  # the clean pass below needs no layer outputs
                handle.remove()
                handle = None
            if ratio_reference == "clean":
                ref = torch.cat([model.features(preprocess(images[i:i + batch_size])).float()
                                 for i in range(0, n, batch_size)])
                ref_a, ref_b = ref, ref[perm]
            else:
                ref_a, ref_b = f1, f2[perm]
            same = pair_distances(f1, f2)
            dist_same, dist_diff = same.mean(), pair_distances(ref_a, ref_b).mean()
            values = torch.cat([per_class_means(geed_img, labels, num_classes),
                                per_class_means(latent_img, labels, num_classes),
                                per_class_means(same, labels, num_classes) / dist_diff,
                                torch.stack([dist_same / dist_diff, dist_same, dist_diff])])
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)

    values = values.cpu().tolist()  # the one device->host transfer
    per_class = {"geed": values[:num_classes], "latent_geed": values[num_classes:2 * num_classes],
                 "rep_ratio": values[2 * num_classes:3 * num_classes]}
    ratio, dist_same_v, dist_diff_v = values[3 * num_classes:]
    present = [c for c in range(num_classes) if not math.isnan(per_class["geed"][c])]
    sizes = [float(class_counts[c]) for c in present]
    out: dict[str, float] = {}
    for metric, vals in per_class.items():
        for c in present:
            out[f"{prefix}/{metric}/{class_key(c)}"] = vals[c]
        for group, mean in group_means(vals, class_counts).items():
            out[f"{prefix}/{metric}_{group}"] = mean
        out[f"{prefix}/{metric}_mean"] = sum(vals[c] for c in present) / len(present)
        out[f"{prefix}/{metric}_size_spearman"] = spearman(sizes, [vals[c] for c in present])
    out[f"{prefix}/rep_ratio"] = ratio
    out[f"{prefix}/rep_dist_same"] = dist_same_v
    out[f"{prefix}/rep_dist_diff"] = dist_diff_v
    return out
