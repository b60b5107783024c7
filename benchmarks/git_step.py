"""(b) GIT step time / plain step time, in the CIFAR-10-LT trial as a sweep runs it.

The trial is the paper's CE+DRS+GIT recipe (sweeps/cifar10_lt_ce_drs_git.yaml: ResNet-32, batch 128, GIT
p 0.5 from epoch 160, class threshold 500, DRS from epoch 160) built by gitune's `build_trial` with the
device's compute settings, around a reference-size MUNIT generator (dim 64, style_dim 8, n_downsample 2,
n_res 4, mlp_dim 256, mlp_layers 3) with random weights, on random CIFAR-10-LT-shaped images (common.trial_for).
A step is the trial's own (`train_one_epoch` over the first `--steps` batches of an epoch: gather, GIT,
crop/flip, forward, backward, SGD), timed after warming every shape (a full untimed epoch, and the generator
on every batch size GIT can hand it).

Variants (GIT generates only the kept candidates, so its cost follows the number generated), all at epoch
161 (GIT on, the DRS phase):
  recipe: thr 500, DRS batches     the trial as configured (class-balanced batches: many tail sources)
  thr 500, ERM batches             train.rule erm: uniform batches, few tail images, few generated
  every candidate (no threshold)   git.class_threshold null: round(p · 128) = 64 generated per batch
Each against the same trial with git.prob 0 (the plain step, same sampler), timed before and after.

    python benchmarks/git_step.py                        # 50 steps per variant on cuda, 10 on cpu
    python benchmarks/git_step.py --steps 3 --n-max 300  # quick check
"""

from __future__ import annotations

import tempfile

import torch

import common  # noqa: F401  (puts the repository root on sys.path)
from common import (Steps, Timer, add_trial_options, describe_machine, describe_trial, make_parser, print_table,
                    result, setup, trial_for, warm_generator_shapes, write_lt_npz)
from gitune.training.git import generate

TARGET = 1.3  # issue 6: a GIT step ≤ 1.3× a plain step (H100)


def timed_steps(npz: str, device: torch.device, args, overrides: list[str]) -> tuple[float, float, object]:
    """(seconds per step, generated images per step, trial) for the recipe trial with `overrides`."""
    t, _ = trial_for(npz, device, args.threads, [*args.overrides, *overrides])
    epoch = t.cfg["git"]["start_epoch"]
    steps = Steps(t)
    steps.run(epoch)  # warm: every shape of the epoch, the partial last batch included
    warm_generator_shapes(t)
    steps.run(epoch + 1, args.warmup)
    out = steps.run(epoch + 2, args.steps)
    return out["_seconds"] / args.steps, out.get("git/generated", 0) / args.steps, t


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    add_trial_options(p, n_max=5000)
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 50 cuda, 10 cpu)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant after the warm-up epoch")
    args = p.parse_args(argv)
    device = setup(args)
    args.steps = args.steps or (50 if device.type == "cuda" else 10)
    with tempfile.TemporaryDirectory() as tmp:
        npz = write_lt_npz(tmp, args.n_max, seed=args.seed)
        plain_first, _, t = timed_steps(npz, device, args, ["git.prob=0"])
        most = len(t.loader) - args.warmup
        if not 1 <= args.steps <= most:
            raise SystemExit(f"--steps: between 1 and {most} (one epoch minus the warm-up steps)")
        print("(b) GIT step vs plain step, the recipe trial at its GIT phase (epoch 161)")
        print(describe_machine(device, args.threads))
        print(describe_trial(t))
        print(f"{args.steps} timed steps per variant after one warm-up epoch and {args.warmup} steps")
        variants = [("recipe: thr 500, DRS batches", []),
                    ("thr 500, ERM batches", ["train.rule=erm"]),
                    ("every candidate (no threshold)", ["git.class_threshold=null"])]
        rows = [(name, *timed_steps(npz, device, args, extra)[:2]) for name, extra in variants]
        plain_again, _, _ = timed_steps(npz, device, args, ["git.prob=0"])

        # Where a GIT step's extra time goes: the generator's forward pass on 64 images.
        gen_t, _ = trial_for(npz, device, args.threads, args.overrides)
        x01 = torch.rand(64, 3, 32, 32, device=device)
        rng = torch.Generator(device=device).manual_seed(0)
        generate(gen_t.gen_model, x01, rng)
        reps = max(2, args.steps // 5)
        with Timer(device) as timer:
            for _ in range(reps):
                generate(gen_t.gen_model, x01, rng)
        gen_s = timer.seconds / reps

    plain = 0.5 * (plain_first + plain_again)
    table = [["plain (git.prob 0), before", 1000 * plain_first, 0.0, plain_first / plain],
             *[[name, 1000 * s, g, s / plain] for name, s, g in rows],
             ["plain (git.prob 0), after", 1000 * plain_again, 0.0, plain_again / plain],
             ["generator forward alone, 64 images", 1000 * gen_s, 64.0, gen_s / plain]]
    print_table(["variant", "ms/step", "generated/step", "× plain"], table,
                title=f"Step time (plain = mean of the two plain runs, {1000 * plain:.1f} ms)")
    batch = t.cfg["train"]["batch_size"]
    print(f"\ngenerator cost per generated image: {1000 * gen_s / 64:.2f} ms; a classifier training step per "
          f"real image: {1000 * plain / batch:.2f} ms (ratio {gen_s / 64 / (plain / batch):.1f}×)")
    on_gpu = device.type == "cuda"
    for name, s, g in rows:
        result(f"GIT step / plain step, {name} ({g:.1f} generated/step)", f"{s / plain:.2f}×",
               f"≤ {TARGET}× on an H100", (s / plain <= TARGET) if on_gpu and name.startswith("recipe") else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
