"""(0) Time of a whole CIFAR-10-LT ResNet-32 trial with GIT, extrapolated from timed epochs of that trial.

The trial is the paper's CE+DRS+GIT recipe (sweeps/cifar10_lt_ce_drs_git.yaml) built by gitune's own
`build_trial` with the device's compute settings, on random images of CIFAR-10-LT's shape and a
reference-size MUNIT generator with random weights (common.trial_for). Its 200 epochs are of four kinds,
each timed here after every shape it uses has been warmed (one untimed epoch of each kind, and the
generator once on every batch size GIT can give it):

  plain epoch      epochs 1–160: uniform batches, no GIT (train_one_epoch)
  GIT epoch        epochs 161–200: DRS (class-balanced) batches, GIT p 0.5 on classes under 500 images
  evaluation       every epoch: validation accuracy (evaluate_epoch), in fp32
  + invariance     every 20 epochs: eKLD, consistency and eKLD under the generator on 40 images per class
                   × 100 transforms; the test set after the last epoch
  checkpoint       every epoch: the state the trainable saves (model, optimizer, schedule, RNG)

trial ≈ 160 × plain + 40 × GIT + 200 × evaluation + 10 × invariance extra + test + 200 × checkpoint.
Not included: Tune and MLflow per epoch (benchmarks/tune_overhead.py measures them) and start-up.

    python benchmarks/trial_time.py                       # CIFAR-10-LT size
    python benchmarks/trial_time.py --n-max 300 --epochs 1   # a quick check (a smaller long tail)
    python benchmarks/trial_time.py --profile             # + the top ops of one GIT epoch (torch.profiler)
"""

from __future__ import annotations

import os
import tempfile

import torch

import common  # noqa: F401  (puts the repository root on sys.path)
from common import (Steps, Timer, add_trial_options, describe_machine, describe_trial, make_parser, mean,
                    print_table, result, setup, trial_for, warm_generator_shapes, write_lt_npz)
from gitune.trainables.classifier import _state, evaluate_epoch

TARGET_MIN = 3.0  # issue 6: a 200-epoch CIFAR-10-LT ResNet-32 trial with GIT in ≤ 3 min on an H100


def time_eval(t, done: int, reps: int) -> float:
    out = []
    for _ in range(reps):
        with Timer(t.device) as timer:
            evaluate_epoch(t, done)
        out.append(timer.seconds)
    return mean(out)


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    add_trial_options(p, n_max=5000)
    p.add_argument("--epochs", type=int, default=None, help="timed epochs of each kind (default: 3 cuda, 1 cpu)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of one GIT epoch")
    args = p.parse_args(argv)
    device = setup(args)
    reps = args.epochs or (3 if device.type == "cuda" else 1)
    with tempfile.TemporaryDirectory() as tmp:
        t, spec = trial_for(write_lt_npz(tmp, args.n_max, seed=args.seed), device, args.threads, args.overrides)
        tr, gc, ev = t.cfg["train"], t.cfg["git"], t.cfg["eval"]
        epochs, git_from = tr["epochs"], gc["start_epoch"]
        print(f"(0) a {epochs}-epoch trial with GIT, extrapolated from timed epochs")
        print(describe_machine(device, args.threads))
        print(describe_trial(t))
        steps = Steps(t)
        with Timer(device) as warm:
            steps.run(0)
            steps.run(git_from)
            shapes = warm_generator_shapes(t)
            evaluate_epoch(t, ev["inv_interval"])
        print(f"warm-up: {warm.seconds:.1f} s (one plain and one GIT epoch, invariance, the generator on "
              f"{shapes} batch sizes)")
        plain = [steps.run(1 + i)["_seconds"] for i in range(reps)]
        git_runs = [steps.run(git_from + 1 + i) for i in range(reps)]
        git = [r["_seconds"] for r in git_runs]
        generated = mean([r.get("git/generated", 0) for r in git_runs])
        val = time_eval(t, 1, reps)
        inv = time_eval(t, ev["inv_interval"], 1)
        last = time_eval(t, epochs, 1)
        with Timer(device) as ck:
            for _ in range(reps):
                torch.save(_state(t.model, t.optimizer, t.scheduler, t.gens, 1), os.path.join(tmp, "state.pt"))
        ckpt = ck.seconds / reps
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with profile(activities=acts) as prof:
                steps.run(git_from + 1 + reps)
            key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
            print(prof.key_averages().table(sort_by=key, row_limit=20))

    n_inv = epochs // ev["inv_interval"] if ev["inv_interval"] else 0
    parts = [
        ("plain epochs", git_from, mean(plain)),
        ("GIT epochs", epochs - git_from, mean(git)),
        ("validation (every epoch)", epochs - 1, val),
        ("+ invariance (every inv_interval)", max(n_inv - 1, 0), max(inv - val, 0.0)),
        ("last epoch: val + invariance + test", 1, last),
        ("checkpoint state (every epoch)", epochs, ckpt),
    ]
    total = sum(n * s for _, n, s in parts)
    print_table(["part", "count", "s each", "s in the trial", "share"],
                [[name, float(n), s, n * s, n * s / total] for name, n, s in parts],
                title=f"{epochs}-epoch trial, from {reps} timed epoch(s) of each kind "
                      f"({generated:.0f} images generated per GIT epoch)")
    n_img = sum(t.data.class_counts)
    print(f"plain epoch: {n_img / mean(plain):,.0f} img/s; GIT epoch: {n_img / mean(git):,.0f} img/s "
          f"(× {mean(git) / mean(plain):.2f} the plain epoch)")
    scale = "" if args.n_max == 5000 else f" (n_max {args.n_max}: not CIFAR-10-LT's size)"
    result("200-epoch CIFAR-10-LT ResNet-32 trial with GIT (extrapolated)", f"{total / 60:.2f} min{scale}",
           f"≤ {TARGET_MIN:g} min on an H100", total / 60 <= TARGET_MIN if device.type == "cuda" else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
