"""(d) Ray Tune + MLflow overhead per reported epoch vs the bare training loop.

The same small trial (built-in glyph data, gitune's defaults for it: 10 classes, 28 px, 500 → 5 long tail;
`--arch` small_cnn by default; `--epochs` 5; `train.threads` = --threads) runs twice:

  bare   gitune's `train_one_epoch` + `evaluate_epoch` (val every epoch, test after the last), in this process,
         with the model, loss, optimizer, scheduler, loader and RNG streams built as a trial builds them;
  sweep  a real one-trial sweep, `gitune.sweep.main([...])` on a temporary space file (FIFO scheduler),
         `--tracking-uri sqlite:///<tmp>/mlflow.db`, `--storage <tmp>/rr`: the trial logs its metrics to
         MLflow and writes a checkpoint every epoch, as every gitune trial does.

Invariance measurement (every `eval.inv_interval` epochs in a real sweep) is switched off in both
(`eval.inv_interval: 0`), so the two do the same training and evaluation work and the difference is what
Tune and MLflow add. Ray is started by this script before the sweep (gitune then joins it), so its start-up
is timed on its own and kept out of the per-epoch numbers. The bare loop runs before and after the sweep
(mean of both), against load drift on a shared machine.

Per reported epoch, from the second epoch on (the first one also carries the trial's start-up):
  sweep cadence    differences of the MLflow metric timestamps of consecutive epochs (everything between
                   two reports: training, evaluation, MLflow logging, checkpoint, the wait for the driver)
  time_this_iter_s what Tune measured per iteration (result.json in the storage folder)
Overhead per epoch = sweep cadence − bare epoch, and the ratio of the two.

    python benchmarks/tune_overhead.py                        # 5 epochs, small_cnn
    python benchmarks/tune_overhead.py --arch resnet20 --epochs 10 --keep
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import shutil
import tempfile
import time

import torch

import common  # noqa: F401  (puts the repository root on sys.path)
from common import Timer, describe_machine, make_parser, mean, print_table, result, setup

NAME = "bench-tune-overhead"


def space_yaml(args, device: torch.device) -> str:
    gpu = 1 if device.type == "cuda" else 0
    return f"""name: {NAME}
description: gitune benchmarks/tune_overhead.py, one trial
trainable: classifier
metric: val/bal_acc
mode: max
num_samples: 1
scheduler: {{type: fifo}}
search: {{type: random, seed: 0}}
resources: {{cpu: 1, gpu: {gpu}}}
checkpoint: {{num_to_keep: 2}}
config:
  data: {{name: glyphs}}
  model: {{arch: {args.arch}}}
  optim: {{warmup_epochs: 1, milestones: []}}
  train: {{epochs: {args.epochs}, threads: {args.threads}, seed: {args.seed}}}
  eval: {{inv_interval: 0}}
"""


def bare_trial(cfg: dict, device: torch.device) -> tuple[float, list[float]]:
    """Setup seconds and per-epoch seconds (train_one_epoch + evaluate_epoch: val, test after the last): the
    trial's own pieces from gitune's build_trial, without Tune, MLflow or checkpoints."""
    from gitune.trainables.classifier import build_trial, evaluate_epoch, train_one_epoch

    with Timer(device) as t_setup:
        trial = build_trial(cfg, device)
    epoch_s = []
    for epoch in range(trial.cfg["train"]["epochs"]):
        with Timer(device) as t:
            train_one_epoch(trial, epoch)
            evaluate_epoch(trial, epoch + 1)
        epoch_s.append(t.seconds)
    return t_setup.seconds, epoch_s


def read_sweep(tmp: str, uri: str) -> dict:
    """Tune's result.json rows and the trial's MLflow run (times and per-epoch metric timestamps)."""
    from mlflow.tracking import MlflowClient

    files = glob.glob(os.path.join(tmp, "rr", "**", "result.json"), recursive=True)
    if len(files) != 1:
        raise SystemExit(f"tune_overhead: expected one result.json under {tmp}/rr, found {len(files)}")
    with open(files[0]) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(NAME)
    runs = client.search_runs([exp.experiment_id], "tags.`gitune.role` = 'trial'")
    if len(runs) != 1:
        raise SystemExit(f"tune_overhead: expected one trial run in MLflow, found {len(runs)}")
    run = runs[0]
    history = sorted(client.get_metric_history(run.info.run_id, "epoch"), key=lambda m: m.step)
    return {"rows": rows, "run_s": (run.info.end_time - run.info.start_time) / 1000.0,
            "log_ms": [m.timestamp for m in history]}


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--arch", default="small_cnn", help="model.arch (small_cnn, resnet20, ...)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (MLflow db, Tune storage, log)")
    args = p.parse_args(argv)
    device = setup(args)
    if args.epochs < 2:
        raise SystemExit("--epochs: need at least 2 (the first epoch carries the trial's start-up)")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

    print(f"(d) Ray Tune + MLflow overhead per reported epoch: glyphs, {args.arch}, {args.epochs} epochs, "
          f"eval.inv_interval 0 in both paths")
    print(describe_machine(device, args.threads))
    tmp = tempfile.mkdtemp(prefix="gitune-bench-")
    try:
        measure(args, device, tmp)
    finally:
        if args.keep:
            print(f"kept: {tmp} (space.yaml, mlflow.db, rr/ = Tune storage, sweep.log)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


def measure(args, device: torch.device, tmp: str) -> None:
    from gitune import sweep
    from gitune.spaces import load_spec

    space = os.path.join(tmp, "space.yaml")
    with open(space, "w") as f:
        f.write(space_yaml(args, device))
    cfg = load_spec(space).config  # exactly the config the sweep's trial gets

    bare1 = bare_trial(cfg, device)

    import ray

    t0 = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=True)
    ray_start = time.perf_counter() - t0
    uri = f"sqlite:///{tmp}/mlflow.db"
    log_path = os.path.join(tmp, "sweep.log")
    log = io.StringIO()
    try:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            rc = sweep.main(["--space", space, "--tracking-uri", uri, "--storage", os.path.join(tmp, "rr")])
        sweep_wall = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        ray_stop = time.perf_counter() - t0
        with open(log_path, "w") as f:
            f.write(log.getvalue())
    if rc != 0:
        print(log.getvalue()[-4000:])
        raise SystemExit(f"tune_overhead: the sweep exited with status {rc} (log: {log_path})")
    res = read_sweep(tmp, uri)

    bare2 = bare_trial(cfg, device)

    bare_epoch = mean(bare1[1][1:] + bare2[1][1:])
    bare_first = mean([bare1[1][0], bare2[1][0]])
    bare_setup = mean([bare1[0], bare2[0]])
    bare_total = bare_setup + bare_first + bare_epoch * (args.epochs - 1)
    log_ms = res["log_ms"]
    cadence = [(b - a) / 1000.0 for a, b in zip(log_ms, log_ms[1:])]
    iters = [r["time_this_iter_s"] for r in res["rows"]]
    perf = [r.get("perf/epoch_s", float("nan")) for r in res["rows"]]
    sweep_epoch = mean(cadence)
    over = sweep_epoch - bare_epoch

    bare_all = bare1[1][1:] + bare2[1][1:]
    print_table(["path", "mean s/epoch", "× bare", "min s/epoch", "max s/epoch"], [
        ["bare loop: train_one_epoch + evaluate_epoch", bare_epoch, 1.0, min(bare_all), max(bare_all)],
        ["sweep: MLflow log cadence (Δ timestamps)", sweep_epoch, sweep_epoch / bare_epoch, min(cadence),
         max(cadence)],
        ["sweep: Tune time_this_iter_s", mean(iters[1:]), mean(iters[1:]) / bare_epoch, min(iters[1:]),
         max(iters[1:])],
    ], title=f"Per reported epoch, epochs 2..N (bare: two runs, {len(bare_all)} epochs; sweep: "
             f"{len(cadence)} epochs)")
    print_table(["what", "seconds"], [
        ["Ray start-up (ray.init, excluded above)", ray_start],
        ["Ray shutdown", ray_stop],
        ["sweep wall: gitune.sweep.main, Ray already up", sweep_wall],
        ["trial's MLflow run, open → finish", res["run_s"]],
        ["trial's first iteration (time_this_iter_s, incl. trial start-up)", iters[0]],
        ["bare trial total: setup + all epochs", bare_total],
        ["bare setup (dataset, model, loader)", bare_setup],
        ["whole-sweep overhead per trial: sweep wall − bare total", sweep_wall - bare_total],
    ], title="Totals")
    if any(v == v and v > 2 * max(iters) for v in perf):
        print(f"\nwarning: the trial's own perf/epoch_s ({perf[-1]:.4g} s at the last epoch) is not an epoch "
              f"time (larger than Tune's whole iteration, {max(iters):.3g} s): a timing bug in train_epoch")
    def secs(xs):
        return "[" + ", ".join(f"{x:.2f}" for x in xs) + "]"

    print(f"\nepoch by epoch (s): bare before the sweep {secs(bare1[1])}, after {secs(bare2[1])}; sweep "
          f"time_this_iter_s {secs(iters)}")
    middle = bare1[1][1:-1] + bare2[1][1:-1] or bare_all  # the last epoch also evaluates test: longer
    spread = max(middle) - min(middle)
    if abs(over) < spread:
        print(f"\nnote: the per-epoch difference ({over:+.3f} s) is within the bare loop's own epoch-to-epoch "
              f"spread ({spread:.3f} s, epochs 2..N-1): the overhead per epoch is not resolved at this size on "
              f"this machine")
    print()
    result("Tune + MLflow overhead per reported epoch", f"{over:+.3f} s ({sweep_epoch / bare_epoch:.2f}× the bare "
           f"epoch of {bare_epoch:.3f} s)")
    result("fixed overhead per trial (Ray start-up once per sweep, not included)",
           f"{sweep_wall - bare_total:.1f} s (Ray start-up {ray_start:.1f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
