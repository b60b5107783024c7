"""(f) Generator stage at a larger batch: does MUNIT keep its fidelity, and which LR rule goes with it?

Trains the generator stage of gitune's offline GIT demo (search_spaces/git_demo.yaml: built-in glyphs,
background nuisance U{0..200}, 30 classes, Zipf 1000 → 5; the demo's generator size dim 16, style_dim 8,
mlp_dim 64, n_res 2, disc_dim 16, disc_layers 3) at an EQUAL number of training images (--images) in
several arms, all with the same generator.seed:

  reference   batch 1, lr --lr (1e-4, the reference setting)
  batch B     generator.batch_size B, generator.lr --lr read as the batch-1 LR and scaled by
              generator.lr_scaling none | sqrt | linear (gitune.trainables.generator.generator_lr)

iterations = images / batch. Each arm is a real sweep: `gitune.sweep.main` on a temporary space file with a
`generator:` block (FIFO; `--tracking-uri sqlite:///<tmp>/mlflow.db --storage <tmp>/rr`), so the stage runs
through gitune.pretrain and trainables.generator under Tune and logs to MLflow. gitune has no
`trainable: generator` space, so the sweep's classifier stage follows; it is cut to one epoch with
git.prob 0 and no invariance measurement (seconds), and is not in the per-arm times. The script reads the generator
trial's last Tune report (result.json): fid/nuisance_ed (energy distance between G(x, ·) and the true
nuisance T(x) on 128 held-out clean images × 4 styles; lower = better, T itself ≈ 0), fid/style_effect (and
T's own, fid/style_effect_true), fid/content; the ED at the previous report (a rough idea of how settled it
is); training img/s (the trial's perf/img_per_s windows: training steps only, no fidelity or checkpoints);
and the trial's wall time (Tune's time_total_s: data, networks, training, every report). Ray is started
once, with as many CPUs as --threads, so one trial runs at a time.

    python benchmarks/generator_batch.py                                   # default: 1 thread, ≈ 13 min on a 2-core CPU
    python benchmarks/generator_batch.py --images 256 --batches 8:sqrt     # smoke test (≈ 1 min)
    python benchmarks/generator_batch.py --batches 8,32:sqrt --seeds 2     # batch 8 (3 rules) + 32 sqrt, 2 seeds

--batches: comma list of B (all three rules) or B:rule. --images must divide by every batch.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import sys
import tempfile
import time

import common  # noqa: F401  (puts the repository root on sys.path)
from common import describe_machine, make_parser, mean, print_table, setup
from gitune.trainables.generator import generator_lr

RULES = ("none", "sqrt", "linear")
DEMO_SIZE = "dim: 16, style_dim: 8, mlp_dim: 64, n_res: 2, disc_dim: 16, disc_layers: 3"


def arms(spec: str) -> list[tuple[int, str]]:
    out = [(1, "none")]
    for part in spec.split(","):
        b, _, rule = part.strip().partition(":")
        out += [(int(b), r) for r in ([rule] if rule else RULES) if (int(b), r) not in out]
    return out


def space_yaml(name: str, batch: int, rule: str, iterations: int, args, gpu: int) -> str:
    every = max(1, iterations // args.reports)
    return f"""name: {name}
description: gitune benchmarks/generator_batch.py, one arm
trainable: classifier
metric: val/bal_acc
mode: max
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: grid}}
resources: {{cpu: 1, gpu: {gpu}}}
checkpoint: {{num_to_keep: 1}}
generator:
  resources: {{cpu: {args.threads}, gpu: {gpu}}}
  config: {{{DEMO_SIZE}, iterations: {iterations}, batch_size: {batch}, lr: {args.lr},
           lr_scaling: {rule}, report_every: {every}, grid_every: 0, seed: {args.seed_now}, threads: {args.threads}}}
config:
  data: {{name: glyphs, num_classes: 30, image_size: 28, profile: zipf, alpha: 2.0, n_max: 1000, n_min: 5,
          val_per_class: 50, test_per_class: 100, nuisance: {{background: 200}}}}
  model: {{arch: small_cnn}}
  optim: {{warmup_epochs: 0, milestones: []}}
  train: {{epochs: 1, batch_size: 128, threads: 1}}
  git: {{prob: 0.0}}
  eval: {{inv_interval: 0}}
"""


@contextlib.contextmanager
def to_file(path: str):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)


def run_arm(tmp: str, batch: int, rule: str, args, gpu: int) -> dict:
    from gitune import sweep

    name = f"bench-genbatch-b{batch}-{rule}-s{args.seed_now}"
    iterations = args.images // batch
    space = os.path.join(tmp, f"{name}.yaml")
    with open(space, "w") as f:
        f.write(space_yaml(name, batch, rule, iterations, args, gpu))
    log = os.path.join(tmp, f"{name}.log")
    with to_file(log):  # Tune's status tables and the trials' output go to the log, at the fd level
        rc = sweep.main(["--space", space, "--tracking-uri", f"sqlite:///{tmp}/mlflow.db",
                         "--storage", os.path.join(tmp, "rr")])
    files = glob.glob(os.path.join(tmp, "rr", name, "*", "generator", "*", "result.json"))
    if rc != 0 or len(files) != 1:
        with open(log) as f:
            print(f.read()[-4000:])
        raise SystemExit(f"generator_batch: sweep {name} exited with {rc}, {len(files)} generator result.json")
    with open(files[0]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    last = rows[-1]
    if last.get("iteration") != iterations:
        raise SystemExit(f"generator_batch: {name}: last report at iteration {last.get('iteration')}")
    steps = [r["iteration"] - (rows[i - 1]["iteration"] if i else 0) for i, r in enumerate(rows)]
    train_s = sum(n * batch / r["perf/img_per_s"] for n, r in zip(steps, rows))
    return {"batch": batch, "rule": rule, "seed": args.seed_now,
            "lr": generator_lr({"lr": args.lr, "batch_size": batch, "lr_scaling": rule}),
            "iterations": iterations, "images": iterations * batch,
            "ed": last["fid/nuisance_ed"], "ed_prev": rows[-2]["fid/nuisance_ed"] if len(rows) > 1 else math.nan,
            "style": last["fid/style_effect"], "style_true": last.get("fid/style_effect_true", math.nan),
            "content": last["fid/content"], "img_s": iterations * batch / train_s, "wall": last["time_total_s"]}


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=4800, help="training images per arm (iterations × batch)")
    p.add_argument("--batches", default="8", help="B (rules none,sqrt,linear) or B:rule, comma separated; "
                                                  "the batch-1 reference always runs")
    p.add_argument("--lr", type=float, default=1e-4, help="generator.lr, the batch-1 LR")
    p.add_argument("--seeds", type=int, default=1, help="generator.seed = --seed … --seed + seeds − 1, each arm")
    p.add_argument("--reports", type=int, default=4, help="Tune reports (fidelity measurements) per arm")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (spaces, logs, MLflow, Tune)")
    args = p.parse_args(argv)
    device = setup(args)
    todo = arms(args.batches)
    bad = [b for b, _ in todo if args.images % b]
    if bad:
        raise SystemExit(f"--images {args.images}: not a multiple of batch {bad[0]}")
    gpu = 1 if device.type == "cuda" else 0
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    print(f"(f) generator stage at equal images ({args.images:,} per arm), git_demo data and generator size, "
          f"batch-1 lr {args.lr:g}, {args.seeds} seed(s)")
    print(describe_machine(device, args.threads))

    import ray

    tmp = tempfile.mkdtemp(prefix="gitune-bench-")
    ray.init(num_cpus=args.threads, num_gpus=gpu, include_dashboard=False, log_to_driver=True)
    t_all = time.perf_counter()
    results = []
    try:
        for seed in range(args.seed, args.seed + args.seeds):
            args.seed_now = seed
            for batch, rule in todo:
                r = run_arm(tmp, batch, rule, args, gpu)
                results.append(r)
                print(f"  batch {batch:3d} {rule:6s} seed {seed}: fid/nuisance_ed {r['ed']:.4f}, style "
                      f"{r['style']:.4f}, {r['img_s']:.1f} img/s, {r['wall']:.0f} s", flush=True)
    finally:
        ray.shutdown()
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_all

    rows = [[r["batch"], r["rule"], r["seed"], r["lr"], r["iterations"], r["images"], r["ed"], r["ed_prev"],
             r["style"], r["style_true"], r["content"], r["img_s"], r["wall"]] for r in results]
    print_table(["batch", "lr_scaling", "seed", "lr used", "iterations", "images", "fid/nuisance_ed",
                 "ed prev report", "fid/style_effect", "style_effect T", "fid/content", "img/s", "wall s"],
                rows, title="Per arm (final report; ed prev report = the report before it)")
    by_arm = {}
    for r in results:
        by_arm.setdefault((r["batch"], r["rule"]), []).append(r)
    if args.seeds > 1:
        print_table(["batch", "lr_scaling", "seeds", "fid/nuisance_ed mean", "min", "max", "fid/style_effect mean"],
                    [[b, rule, len(v), mean([x["ed"] for x in v]), min(x["ed"] for x in v),
                      max(x["ed"] for x in v), mean([x["style"] for x in v])] for (b, rule), v in by_arm.items()],
                    title="Mean over seeds")
    ref = mean([x["ed"] for x in by_arm[(1, "none")]])
    ref_speed = mean([x["img_s"] for x in by_arm[(1, "none")]])
    others = sorted((mean([x["ed"] for x in v]), b, rule, mean([x["img_s"] for x in v]))
                    for (b, rule), v in by_arm.items() if b != 1)
    parts = [f"b{b} {rule} {ed:.4f} ({ed / ref:.2f}×, {speed / ref_speed:.1f}× img/s)" for ed, b, rule, speed in others]
    print(f"\nwall time, all arms: {total:.0f} s")
    print(f"RESULT fid/nuisance_ed at {args.images:,} images: batch 1 {ref:.4f}; " + "; ".join(parts)
          + f"; best larger-batch rule: b{others[0][1]} {others[0][2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
