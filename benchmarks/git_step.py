"""(b) GIT step time / plain step time: ResNet-32, batch 128, 3×32×32, git.prob 0.5.

Both go through gitune's own `train_epoch` over a loader of exactly `--steps` batches (so the timed step
is the trial's step: gather, GIT mixing, crop/flip, forward, backward, SGD), with a `GitAugmenter` built as
a trial builds it, around a MUNIT generator of the reference size (gitune.config.GENERATOR_DEFAULTS:
dim 64, style_dim 8, n_downsample 2, n_res 4, mlp_dim 256, mlp_layers 3; random weights: the cost does not
depend on them). Source images come from the whole synthetic CIFAR-10-LT (12,406 images).

Variants (GIT generates only the kept candidates, so its cost follows the number generated):
  git p=0.5                      every candidate kept: 64 generated images per batch of 128
  git p=0.5 thr=T, ERM batches   git.class_threshold T (default 500, CIFAR-10's): only tail classes,
                                 batches drawn uniformly (few tail images: few generated)
  git p=0.5 thr=T, DRS batches   the same, class-balanced batches: the reference recipe's GIT phase
                                 (CE + DRS + GIT, GIT after the first LR drop, when DRS resamples)
The plain step is timed before and after the GIT variants, and their mean is the baseline.

    python benchmarks/git_step.py                 # 50 steps per variant on cuda, 10 on cpu
    python benchmarks/git_step.py --steps 3       # quick check
"""

from __future__ import annotations

import torch

import common  # noqa: F401  (puts the repository root on sys.path)
from common import (BATCH, COUNTS, Timer, classifier, describe_machine, make_parser, preprocess_fn, print_table,
                    setup, synthetic_cifar10_lt)
from gitune.config import GENERATOR_DEFAULTS
from gitune.data.dataset import Split
from gitune.data.loader import DeviceLoader
from gitune.models.munit import MunitGenerator
from gitune.trainables.classifier import train_epoch
from gitune.training.git import GENERATOR_ARCH_KEYS, GitAugmenter, generate

TARGET = 1.3  # issue 6: a GIT step ≤ 1.3× a plain step (H100)


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 50 cuda, 10 cpu)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--prob", type=float, default=0.5, help="git.prob")
    p.add_argument("--threshold", type=int, default=500, help="git.class_threshold of the threshold variants")
    p.add_argument("--arch", default="resnet32")
    args = p.parse_args(argv)
    device = setup(args)
    steps = args.steps or (50 if device.type == "cuda" else 10)
    most = sum(COUNTS) // BATCH  # one epoch's worth: the timed batches are distinct images, and GIT's
    if not 1 <= steps <= most or args.warmup > most:  # source order (one epoch long) does not run out
        raise SystemExit(f"--steps and --warmup: at most {most} (one epoch of CIFAR-10-LT), --steps at least 1")
    arch = {k: GENERATOR_DEFAULTS[k] for k in GENERATOR_ARCH_KEYS}

    images, labels = synthetic_cifar10_lt(args.seed)
    print(f"(b) GIT step vs plain step: {args.arch}, batch {BATCH}, 3×32×32, git.prob {args.prob}")
    print(describe_machine(device, args.threads))
    print(f"generator: MunitGenerator(3, {', '.join(f'{k}={v}' for k, v in arch.items())}), random weights; "
          f"{steps} timed steps per variant after {args.warmup} warm-up")

    sample_gen = torch.Generator(device=device).manual_seed(args.seed)
    aug_gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    git_gen = torch.Generator(device=device).manual_seed(args.seed + 2)
    full = DeviceLoader(Split(images, labels), BATCH, device, sample_gen)  # GIT's source images

    def batches(n_steps: int) -> DeviceLoader:
        """A loader of exactly n_steps full batches, drawn from the whole set."""
        idx = torch.randperm(len(labels), generator=torch.Generator().manual_seed(n_steps))[:n_steps * BATCH]
        return DeviceLoader(Split(images[idx], labels[idx]), BATCH, device, sample_gen)

    timed, warm = batches(steps), batches(args.warmup)
    preprocess = preprocess_fn(device)
    torch.manual_seed(args.seed)
    model, optimizer, loss_fn = classifier(device, args.arch)
    torch.manual_seed(args.seed)
    gen_model = MunitGenerator(3, **arch).to(device)

    def augmenter(threshold):
        return GitAugmenter(gen_model, args.prob, 0, COUNTS, threshold, "same", full.images, full.labels,
                            full.epoch_indices, git_gen)

    def run(loader: DeviceLoader, sampler: str, git: GitAugmenter | None) -> tuple[float, int]:
        """Seconds for one pass of `loader` through train_epoch, and the images GIT generated."""
        mixers = []
        if git is not None:
            git.begin_epoch(0, sampler)
            mixers = [git]
        with Timer(device) as t:
            train_epoch(model, loader, sampler, loss_fn, optimizer, preprocess, 4, True, aug_gen, mixers)
        return t.seconds, (git.generated if git is not None else 0)

    variants = [
        ("plain", "uniform", None),
        (f"git p={args.prob}", "uniform", augmenter(None)),
        (f"git p={args.prob} thr={args.threshold}, ERM batches", "uniform", augmenter(args.threshold)),
        (f"git p={args.prob} thr={args.threshold}, DRS batches", "balanced", augmenter(args.threshold)),
        ("plain (again)", "uniform", None),
    ]
    results = []
    for name, sampler, git in variants:
        run(warm, sampler, git)
        seconds, generated = run(timed, sampler, git)
        results.append((name, seconds / steps, generated / steps))
    plain = 0.5 * (results[0][1] + results[-1][1])

    # Where a GIT step's extra time goes: the generator's forward pass on the images it generates.
    x01 = torch.rand(int(args.prob * BATCH + 0.5), 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    rng = torch.Generator(device=device).manual_seed(0)
    generate(gen_model, x01, rng)
    n_rep = max(2, steps // 5)
    with Timer(device) as t:
        for _ in range(n_rep):
            generate(gen_model, x01, rng)
    gen_s = t.seconds / n_rep

    rows = [[name, 1000 * s, g, s / plain] for name, s, g in results]
    rows.append([f"generator forward alone, {len(x01)} images", 1000 * gen_s, float(len(x01)), gen_s / plain])
    print_table(["variant", "ms/step", "generated/step", "× plain"], rows,
                title=f"Step time (plain baseline = mean of the two plain runs, {1000 * plain:.1f} ms)")
    print(f"\ngenerator cost per generated image: {1000 * gen_s / len(x01):.2f} ms; a classifier training "
          f"step per real image: {1000 * plain / BATCH:.2f} ms (ratio {gen_s / len(x01) / (plain / BATCH):.1f}×)")
    ratios = "; ".join(f"{name}: {s / plain:.2f}×" for name, s, _ in results[1:-1])
    print(f"RESULT GIT step / plain step at git.prob {args.prob}: {ratios} (target ≤ {TARGET}× on an H100)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
