"""Shared helpers for the benchmark scripts: arguments, synthetic CIFAR-10-LT data, timing, tables.

The scripts are run from the repository root (`python benchmarks/epoch_throughput.py ...`); this module
puts the repository root on sys.path so that `gitune` imports without an install.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from gitune.data.profiles import class_counts  # noqa: E402

# CIFAR-10-LT, ρ = 100, exponential profile: 5000 … 50 images per class, 12,406 in all.
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
COUNTS = class_counts("exp", NUM_CLASSES, 5000, 100.0)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
BATCH = 128


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


THREADS_HELP = ("torch intra-op threads, the same for every variant (default: 1 on cpu, where several OpenMP "
                "threads on a shared or small machine slow down by oversubscription; torch's own choice on cuda)")


def make_parser(description: str, threads_help: str = THREADS_HELP) -> argparse.ArgumentParser:
    """A parser with the options every script shares: --device, --threads, --seed."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default=default_device(),
                   help="where to run (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help=threads_help)
    p.add_argument("--seed", type=int, default=0)
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Check the device, apply --threads, seed torch; returns the torch.device."""
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available here")
    if args.threads is None and args.device == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


def describe_machine(device: torch.device, threads: int | None = None) -> str:
    what = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({os.cpu_count()} logical cores, {platform.processor() or platform.machine()})")
    load = ""
    if hasattr(os, "getloadavg"):
        load = f", load average {os.getloadavg()[0]:.1f}"
    return (f"device: {what}; torch {torch.__version__}; threads {threads or torch.get_num_threads()}"
            f"{load}; {time.strftime('%Y-%m-%d %H:%M')}")


def synthetic_cifar10_lt(seed: int = 0, images: int | None = None,
                         counts: Sequence[int] = COUNTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Random uint8 N×3×32×32 images with CIFAR-10-LT labels (speed does not depend on the pixels).

    `images` < the full size keeps a random subset (the long tail keeps roughly its shape); labels are in
    class-block order, as a long-tailed split is built, and the loaders shuffle them."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c, dtype=torch.int64) for c, n in enumerate(counts)])
    x = torch.randint(0, 256, (len(labels), *IMAGE_SHAPE), dtype=torch.uint8, generator=g)
    if images is not None and images < len(labels):
        keep = torch.randperm(len(labels), generator=g)[:images].sort().values
        x, labels = x[keep], labels[keep]
    return x, labels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall time of a block, with the device synchronised on entry and exit."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self) -> "Timer":
        sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.seconds = time.perf_counter() - self._t0


def time_steps(step: Callable[[], object], device: torch.device, steps: int, warmup: int) -> list[float]:
    """Run `step` `warmup` times untimed, then `steps` times; seconds per timed step (synchronised)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        with Timer(device) as t:
            step()
        times.append(t.seconds)
    return times


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return float("nan")
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def fmt(v: object) -> str:
    """Numbers with about three significant digits, thousands separated."""
    if isinstance(v, float):
        if v != v:  # nan
            return "-"
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.1f}"
        if a >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], title: str | None = None) -> None:
    """A plain-text table, right-aligned numbers, also valid Markdown."""
    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) + " |")


def classifier(device: torch.device, arch: str = "resnet32", lr: float = 0.1):
    """ResNet-32 (by default) with gitune's optimizer and loss, as a CIFAR-10-LT trial builds them."""
    from gitune.models import create_model
    from gitune.training.losses import build_loss
    from gitune.training.schedule import build_optimizer

    model = create_model(arch, NUM_CLASSES, IMAGE_SHAPE[0]).to(device)
    optimizer = build_optimizer(model, lr, 0.9, 2e-4)
    loss_fn = build_loss("ce", COUNTS).to(device)
    return model, optimizer, loss_fn


def preprocess_fn(device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """gitune's normalisation with CIFAR statistics, tensors made once on the device."""
    from gitune.data.augment import normalize

    m = torch.tensor(CIFAR_MEAN, device=device)
    s = torch.tensor(CIFAR_STD, device=device)
    return lambda x01: normalize(x01, m, s)
