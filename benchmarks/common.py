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


def add_trial_options(p: argparse.ArgumentParser, n_max: int | None = None) -> None:
    """Options of the scripts that time a classifier trial as the sweep runs it (see `trial_for`)."""
    p.add_argument("--n-max", type=int, default=n_max,
                   help="images of the largest class (default 5000: CIFAR-10-LT itself; smaller for a quick check)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a key of the recipe's trial config, as `gitune.sweep --set` (repeatable), "
                        "e.g. --set train.compile=true")


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
    return torch.device(args.device)


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


def result(what: str, measured: str, target: str = "—", met: bool | None = None) -> None:
    """The line gpu_check.sh collects: one figure beside its target."""
    verdict = "—" if met is None else ("met" if met else "MISSED")
    print(f"RESULT | {what} | {measured} | {target} | {verdict}", flush=True)


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


# ---- The classifier trial as a sweep runs it ------------------------------------------------------------
# Benchmarks time what trials run: the trial is built by gitune's own `build_trial` from the config of the
# paper's CE+DRS+GIT recipe (sweeps/cifar10_lt_ce_drs_git.yaml: ResNet-32, batch 128, DRS from epoch 160,
# GIT p 0.5 from epoch 160 with class threshold 500, invariance every 20 epochs), with its compute settings
# (precision, channels_last, compile as resolved for the device) and cuDNN autotuning as the trial sets it.
# Only the images differ: random pixels in CIFAR-10-LT's shape, written as an npz file (no download here).

RECIPE = ROOT / "sweeps" / "cifar10_lt_ce_drs_git.yaml"


def write_lt_npz(folder: str | Path, n_max: int = 5000, ratio: float = 100.0, val_per_class: int = 50,
                 test_per_class: int | None = None, seed: int = 0) -> str:
    """An npz file (gitune's custom-data format) with exactly the images a CIFAR-10-LT split takes:
    class c has class_counts(exp, 10, n_max, ratio)[c] training + `val_per_class` images, and a test set
    of `test_per_class` per class (default n_max / 5: CIFAR-10's 1,000 at n_max 5000)."""
    import numpy as np

    test_per_class = test_per_class or max(10, n_max // 5)
    counts = class_counts("exp", NUM_CLASSES, n_max, ratio)
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES), [n + val_per_class for n in counts])
    test_labels = np.repeat(np.arange(NUM_CLASSES), test_per_class)
    path = str(Path(folder) / f"cifar10_lt_shape_{n_max}.npz")
    h, w = IMAGE_SHAPE[1:]
    np.savez(path, images=rng.integers(0, 256, (len(labels), h, w, 3), dtype=np.uint8), labels=labels,
             test_images=rng.integers(0, 256, (len(test_labels), h, w, 3), dtype=np.uint8),
             test_labels=test_labels)
    return path


def recipe_spec(npz: str, overrides: Sequence[str] = ()):
    """The recipe's sweep spec with its data replaced by `npz` (same long-tail profile, ratio, validation
    split) and the grid's keys pinned: git.prob 0.5, train.seed 0; then `overrides` (KEY=VALUE)."""
    from gitune.spaces import load_spec

    n_max = int(Path(npz).stem.rsplit("_", 1)[-1])
    return load_spec(RECIPE, ["data.name=npz", f"data.path={npz}", f"data.n_max={n_max}", "git.prob=0.5",
                              "train.seed=0", *overrides])


def generator_payload(spec, seed: int = 0) -> dict:
    """A generator stage payload of the recipe's generator size (the reference MUNIT) with random weights:
    its cost does not depend on them."""
    from gitune.models.munit import MunitGenerator
    from gitune.generator_file import GENERATOR_ARCH_KEYS

    arch = {k: spec.generator["config"][k] for k in GENERATOR_ARCH_KEYS}
    torch.manual_seed(seed)
    return {"arch": arch, "in_channels": IMAGE_SHAPE[0], "image_size": IMAGE_SHAPE[1],
            "state_dict": MunitGenerator(IMAGE_SHAPE[0], **arch).state_dict(), "source": "random weights"}


def trial_for(npz: str, device: torch.device, threads: int | None, overrides: Sequence[str] = ()):
    """(trial, spec): the recipe's classifier trial on `device`, built by `build_trial` as a sweep builds it."""
    from gitune.trainables.classifier import build_trial

    extra = [f"train.threads={threads}"] if device.type == "cpu" and threads else []
    spec = recipe_spec(npz, [*extra, *overrides])
    return build_trial(spec.config, device, generator_payload(spec)), spec


def describe_trial(t) -> str:
    cfg, counts = t.cfg, t.data.class_counts
    c = t.compute
    return (f"trial: {RECIPE.relative_to(ROOT)} on random CIFAR-10-LT-shaped images ({sum(counts):,} train, "
            f"{counts[0]} → {counts[-1]} per class); {cfg['model']['arch']}, batch {cfg['train']['batch_size']}, "
            f"rule {cfg['train']['rule']}, loss {cfg['train']['loss']}, git.prob {cfg['git']['prob']} from epoch "
            f"{cfg['git']['start_epoch']} (threshold {cfg['git']['class_threshold']}); compute: "
            f"{'bf16' if c.bf16 else 'fp32'}, channels_last {c.channels_last}, compile {c.compile}, "
            f"cudnn.benchmark {torch.backends.cudnn.benchmark}")


def warm_generator_shapes(t) -> int:
    """Run the trial's GIT generator once on every batch size GIT can hand it (1 … the candidates per batch),
    so that cuDNN's autotuning of new shapes happens here, not inside timed steps; the sizes warmed."""
    from gitune.training.git import generate

    if t.gen_model is None or not t.mixers or t.device.type != "cuda":
        return 0  # on CPU there is nothing to autotune
    most = max(m.count(t.cfg["train"]["batch_size"]) for m in t.mixers)
    rng = torch.Generator(device=t.device).manual_seed(0)
    x = torch.rand(most, *t.data.image_shape, device=t.device)
    for n in range(1, most + 1):
        generate(t.gen_model, x[:n], rng)
    sync(t.device)
    return most


class Steps:
    """Time `n` training steps of a trial's epoch at a given epoch index (its sampler, weights, GIT)."""

    def __init__(self, t):
        self.t = t

    def run(self, epoch: int, n: int | None = None) -> dict:
        """train_one_epoch over the first `n` batches (all when None); its metrics plus `_seconds`."""
        from gitune.data.loader import FirstBatches
        from gitune.trainables.classifier import train_one_epoch

        t = self.t
        full = t.loader
        if n is not None:
            t.loader = FirstBatches(full, n)
        try:
            with Timer(t.device) as timer:
                out = train_one_epoch(t, epoch)
        finally:
            t.loader = full
        out["_seconds"] = timer.seconds
        return out
