"""Generative Invariance Transfer (docs/method.md, GIT in classifier training): replace part of each batch with generator outputs.

The same machinery runs the oracle (`aug.oracle_prob`): the dataset's true nuisance applied to clean
training images takes the generator's place, with the same candidate count, sources and keep rule.

For a batch of B real images, k = round(git.prob · B) positions are candidates. Each candidate takes a
source image drawn by a second pass of the epoch's sampler ("same") or class-balanced ("balanced"),
is kept with its class's probability p_c when `git.class_threshold` is set (drawn once per epoch, so no
step waits on the device), and only the kept ones are encoded and decoded with a fresh style s ~ N(0, I). The generator is frozen, in eval mode, under
no_grad, and all its randomness comes from its own RNG stream, so `git.prob = 0` (or an epoch before
`git.start_epoch`) draws nothing and reproduces the baseline bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from gitune.data.augment import to_float
from gitune.errors import UserError
from gitune.generator_file import build_generator, check_payload  # check_payload: sweep.py imports it from here
from gitune.registry import GIT_SAMPLERS  # the names config checks read (torch-free)



def keep_probabilities(class_counts: Sequence[int], threshold: int | None) -> Tensor | None:
    """p_c = max((thr − n_c) / (thr − n_min), 0): the smallest class always gets generated images,
    classes at or above the threshold none. None when no threshold is set (every class kept)."""
    if threshold is None:
        return None
    counts = torch.as_tensor(list(class_counts), dtype=torch.float32)
    n_min = float(counts.min())
    if threshold <= n_min:
        raise UserError(f"git.class_threshold: {threshold} is not above the smallest class size ({int(n_min)}), "
                        f"so no class would get generated images; use a larger value or null")
    return ((threshold - counts) / (threshold - n_min)).clamp_min(0.0)


def to_generator_range(x01: Tensor) -> Tensor:
    return x01 * 2.0 - 1.0


def from_generator_range(x: Tensor) -> Tensor:
    return ((x + 1.0) * 0.5).clamp_(0.0, 1.0)


def freeze(generator: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: the generator is a fixed augmentation, never trained by the classifier."""
    generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    return generator


@torch.inference_mode()
def generate(generator, images01: Tensor, rng: torch.Generator) -> Tensor:
    """x' = G(x, s), s ~ N(0, I) per image, in [0, 1] pixel space (inference mode: no autograd records)."""
    style = generator.random_style(images01.shape[0], images01.device, generator=rng)
    return from_generator_range(generator(to_generator_range(images01), style))


def generator_transform(generator, rng: torch.Generator) -> Callable[[Tensor], Tensor]:
    """T for eKLD under the generator: a fresh style for every row (docs/method.md, measuring invariance)."""
    return lambda x01: generate(generator, x01, rng)


Synthesize = Callable[[Tensor, torch.Generator], Tensor]  # (source images in [0, 1], rng) -> new images


def generator_synthesizer(generator) -> Synthesize:
    """GIT's source of new images: G(x, s) with the generator frozen."""
    generator = freeze(generator)
    return lambda x01, rng: generate(generator, x01, rng)


class GitAugmenter:
    """Per-epoch GIT: `begin_epoch` draws the source order, `apply` mixes generated images into a batch.

    `synthesize` makes the new images from source images: the generator (GIT, or a module, which is
    wrapped by `generator_synthesizer`) or the true nuisance (the oracle). `images`/`labels` are the
    source images on the device (uint8 / int64; for the oracle the untransformed originals);
    `draw_indices(sampler, rng)` returns one epoch of source indices for a sampler ("uniform" or
    "balanced"). Metrics are logged as `{prefix}/generated` and `{prefix}/candidates`.
    """

    def __init__(self, synthesize, prob: float, start_epoch: int, class_counts: Sequence[int],
                 class_threshold: int | None, sampler: str, images: Tensor, labels: Tensor,
                 draw_indices: Callable[[str, torch.Generator], Tensor], rng: torch.Generator,
                 prefix: str = "git"):
        if sampler not in GIT_SAMPLERS:
            raise UserError(f"git.sampler: expected one of {', '.join(GIT_SAMPLERS)}, got {sampler!r}")
        if isinstance(synthesize, torch.nn.Module):
            synthesize = generator_synthesizer(synthesize)
        self.synthesize, self.prefix = synthesize, prefix
        self.prob, self.start_epoch, self.sampler = float(prob), int(start_epoch), sampler
        self.images, self.labels = images, labels
        keep = keep_probabilities(class_counts, class_threshold)
        self.keep = None if keep is None else keep.to(images.device)
        self.draw_indices, self.rng = draw_indices, rng
        self._source: Tensor | None = None
        self._kept: Tensor | None = None  # positions in the source order whose candidate is kept (device)
        self._kept_before: list[int] = []  # kept candidates before each source position (host)
        self._cursor = 0
        self.generated = 0  # images generated since the last `begin_epoch`
        self.candidates = 0

    def active(self, epoch: int) -> bool:
        return self.prob > 0.0 and epoch >= self.start_epoch

    def begin_epoch(self, epoch: int, batch_sampler: str) -> None:
        """Draw this epoch's source order with the batch's sampler ("same") or class-balanced, and, with a
        class threshold, whether each candidate is kept (p_c of its class). The keep draws are made here,
        for the whole epoch, with one device-to-host copy, so that `apply` never waits on the device."""
        self.generated = self.candidates = 0
        self._cursor = 0
        self._source = self._kept = None
        if self.active(epoch):
            sampler = batch_sampler if self.sampler == "same" else "balanced"
            self._source = self.draw_indices(sampler, self.rng)
            if self.keep is not None:
                n = self._source.numel()
                kept = torch.rand(n, generator=self.rng, device=self._source.device) < self.keep[
                    self.labels[self._source]]
                self._kept = torch.nonzero(kept).flatten()
                self._kept_before = [0] + kept.cumsum(0).cpu().tolist()

    def count(self, batch_size: int) -> int:
        """Candidate positions in a batch of this size: round(prob · B), half up."""
        return min(batch_size, int(self.prob * batch_size + 0.5))

    def apply(self, x01: Tensor, y: Tensor, start: int = 0) -> tuple[Tensor, Tensor]:
        """Replace the kept candidates among the k positions from `start` (the batch is already in random
        order; GIT and the oracle both on take consecutive ranges, so they never touch the same image)."""
        if self._source is None:
            return x01, y
        k = min(self.count(len(y)), max(len(y) - start, 0))
        if k == 0:
            return x01, y
        # One pass of the sampler has as many indices as the epoch has images, and k ≤ B per batch,
        # so the source order never runs out within an epoch.
        c = self._cursor
        self._cursor += k
        self.candidates += k
        if self._kept is None:
            src = self._source[c:c + k]
            positions = torch.arange(start, start + k, device=y.device)
            n = k
        else:  # the kept candidates of this window, found with host-side counts (no device sync)
            lo, hi = self._kept_before[c], self._kept_before[c + k]
            window = self._kept[lo:hi]
            src, positions, n = self._source[window], window - c + start, hi - lo
        if n == 0:
            return x01, y
        fake = self.synthesize(to_float(self.images[src]), self.rng)
        x01 = x01.clone()
        y = y.clone()
        x01[positions] = fake.to(x01.dtype)
        y[positions] = self.labels[src]
        self.generated += n
        return x01, y

    def metrics(self) -> dict[str, Any]:
        return {f"{self.prefix}/generated": self.generated, f"{self.prefix}/candidates": self.candidates}


def load_generator(payload: dict[str, Any], device: torch.device, image_shape: Sequence[int]):
    """The frozen generator from a stage payload (gitune/generator_file.py), checked against the classifier's
    data so a generator of other images fails with a clear message."""
    check_payload(payload, image_shape)
    return freeze(build_generator(payload).to(device))
