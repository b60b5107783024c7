"""Device-resident batching: the datasets are small, so they live on the device as uint8 and batches are
index gathers there (no DataLoader workers, no host-to-device copy per step)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from gitune.data.dataset import Split

SAMPLERS = ("uniform", "balanced")


class DeviceLoader:
    """Holds a split as uint8 on `device` and yields index-sampled batches; no DataLoader workers."""

    def __init__(self, split: Split, batch_size: int, device, generator: torch.Generator,
                 drop_last: bool = False):
        """`drop_last`: leave out each epoch's last partial batch, so every batch has the same shape (a
        compiled model then compiles once, for that shape)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = int(batch_size)
        self.generator = generator
        self.drop_last = bool(drop_last) and len(self.labels) >= self.batch_size
        counts = torch.bincount(self.labels)
        # Class-balanced sampling weight 1/n_c per image: every class is drawn equally often.
        self._weights = (1.0 / counts.clamp_min(1).double())[self.labels].float()

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.labels) // self.batch_size
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def epoch_indices(self, sampler: str, generator: torch.Generator | None = None) -> Tensor:
        """One epoch of indices: "uniform" is a permutation; "balanced" is N draws with p ∝ 1/n_class.

        `generator` overrides the loader's RNG (GIT draws its source images from its own stream, so
        the batches themselves do not change when GIT is switched on)."""
        n = len(self.labels)
        generator = generator or self.generator
        if sampler == "uniform":
            return torch.randperm(n, generator=generator, device=self.device)
        if sampler == "balanced":
            if n == 0:
                return torch.zeros(0, dtype=torch.int64, device=self.device)
            return torch.multinomial(self._weights, n, replacement=True, generator=generator)
        raise ValueError(f"sampler {sampler!r}: expected one of {', '.join(SAMPLERS)}")

    def batches(self, sampler: str = "uniform") -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (uint8 images, int64 labels) on the device; the last partial batch is kept unless
        `drop_last`."""
        idx = self.epoch_indices(sampler)
        for i in range(0, len(self) * self.batch_size, self.batch_size):
            b = idx[i:i + self.batch_size]
            yield self.images[b], self.labels[b]


class FirstBatches:
    """The first `n` batches of each epoch of `loader`: one real training step (the memory probe) or a
    few timed ones (benchmarks) through the trial's own `train_epoch`."""

    def __init__(self, loader: DeviceLoader, n: int):
        self.loader, self.n, self.device = loader, int(n), loader.device
        self.seen = 0  # images yielded so far

    def batches(self, sampler: str = "uniform") -> Iterator[tuple[Tensor, Tensor]]:
        for i, batch in enumerate(self.loader.batches(sampler)):
            if i >= self.n:
                return
            self.seen += len(batch[1])
            yield batch


def iterate_in_order(split_images: Tensor, split_labels: Tensor, batch_size: int,
                     device=None) -> Iterator[tuple[Tensor, Tensor]]:
    """Sequential batches for evaluation (optionally moved to `device`)."""
    for i in range(0, len(split_labels), batch_size):
        x, y = split_images[i:i + batch_size], split_labels[i:i + batch_size]
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield x, y
