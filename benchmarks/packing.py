"""(c) Trials per hour with K trials packed on one device (K = 1, 2, 4, 8 on cuda).

Each trial is its own process (multiprocessing, spawn), as Ray Tune runs packed trials with fractional
GPUs: it builds the CIFAR-10-LT recipe trial (sweeps/cifar10_lt_ce_drs_git.yaml) with gitune's
`build_trial` and the device's compute settings on random CIFAR-10-LT-shaped images (its own seed), warms
up with one whole epoch, waits at a barrier with the others, then trains `--epochs` epochs of its plain
phase with `train_one_epoch`. Timed: from the barrier until the last trial
ends, so process start, CUDA context and warm-up are excluded (they are printed separately, per K).
trials/hour = K / wall × 3600; the ratio is against K = 1. On cuda each trial also reports its peak
GPU memory (torch.cuda.max_memory_reserved: what the process holds).

The issue asks for this on cuda only. On cpu it runs too, with K = 1, 2 by default and one thread per
trial: there packing is bounded by the cores (K trials on K cores at best reach K×, and a loaded or
smaller machine gets less), so the CPU ratio says nothing about the GPU target.

    python benchmarks/packing.py                               # cuda: K = 1,2,4,8; cpu: K = 1,2
    python benchmarks/packing.py --counts 1,2,4,8,16 --epochs 3
"""

from __future__ import annotations

import multiprocessing as mp
import os
import tempfile
import time

import common  # noqa: F401  (puts the repository root on sys.path)
from common import add_trial_options, describe_machine, make_parser, print_table, result, write_lt_npz

TARGET_K, TARGET_RATIO = 8, 6.0  # issue 6: ≥ 8 trials on one GPU with ≥ 6× the trial throughput of one


def trial(rank: int, device_name: str, epochs: int, npz: str, threads: int, overrides: list[str],
          barrier, results) -> None:
    """One packed trial (runs in its own process): the recipe trial, built by build_trial."""
    t_start = time.perf_counter()
    import torch

    from common import Steps, sync, trial_for

    torch.set_num_threads(threads)
    device = torch.device(device_name)
    t, _ = trial_for(npz, device, threads, [f"train.seed={rank}", *overrides])
    steps = Steps(t)
    steps.run(0)  # warm-up: one whole epoch (every shape)
    sync(device)
    setup_s = time.perf_counter() - t_start
    results.put("ready")
    barrier.wait()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        steps.run(1 + epoch)
    sync(device)
    train_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else 0
    results.put({"rank": rank, "setup_s": setup_s, "train_s": train_s,
                 "images": sum(t.data.class_counts) * epochs, "peak_bytes": peak})


def _get(results, procs, deadline: float | None = None):
    """The next message from the trials; exits if one of them died or the deadline passed."""
    import queue

    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or (deadline is not None and time.perf_counter() > deadline):
                for p in procs:
                    if p.is_alive():
                        p.terminate()
                why = f"a trial process exited with status {dead[0]}" if dead else "the trials did not start in time"
                raise SystemExit(f"packing: {why}")


def run_packed(k: int, args, ctx) -> dict:
    barrier = ctx.Barrier(k + 1)
    results = ctx.Queue()
    t_launch = time.perf_counter()
    procs = [ctx.Process(target=trial, args=(r, args.device, args.epochs, args.npz, args.threads, args.overrides,
                                            barrier, results)) for r in range(k)]
    for proc in procs:
        proc.start()
    for _ in range(k):
        _get(results, procs, t_launch + args.setup_timeout)
    barrier.wait()
    t0 = time.perf_counter()
    out = [_get(results, procs) for _ in range(k)]
    wall = time.perf_counter() - t0
    for proc in procs:
        proc.join()
    return {"k": k, "wall": wall, "setup": t0 - t_launch, "trials": out}


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0], threads_help="torch threads per trial (default: 1 on cpu, 2 on cuda)")
    add_trial_options(p)
    p.add_argument("--counts", default=None, help="comma-separated K values (default: 1,2,4,8 on cuda, 1,2 on cpu)")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per trial")
    p.add_argument("--setup-timeout", type=float, default=600.0, help="seconds to wait for the trials to start")
    args = p.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available here")
    counts = [int(c) for c in (args.counts or ("1,2,4,8" if args.device == "cuda" else "1,2")).split(",")]
    if args.n_max is None:
        args.n_max = 5000 if args.device == "cuda" else 1000
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else 2
    import torch

    device = torch.device(args.device)
    print(f"(c) packed trials: K concurrent recipe trials (sweeps/cifar10_lt_ce_drs_git.yaml, ResNet-32, plain "
          f"phase, built by build_trial) on one {args.device} device, {args.epochs} epochs each, "
          f"{args.threads} thread(s) per trial, n_max {args.n_max}")
    print(describe_machine(device, args.threads))
    if args.device == "cpu":
        print(f"note: on cpu, packing is bounded by the cores ({os.cpu_count()} here, shared with whatever else "
              f"runs): K trials can at best reach min(K, cores)× — the GPU target is not measurable here")
    elif os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or os.path.exists("/tmp/nvidia-mps"):
        print("note: a CUDA MPS pipe directory exists; trials may share the GPU through MPS")

    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        args.npz = write_lt_npz(tmp, args.n_max, seed=args.seed)
        runs = [run_packed(k, args, ctx) for k in counts]
    base = runs[0]["k"] / runs[0]["wall"]
    rows = []
    for r in runs:
        tph = r["k"] / r["wall"] * 3600
        per_trial = [t["train_s"] for t in r["trials"]]
        peak = max(t["peak_bytes"] for t in r["trials"]) / 2**20
        imgs = sum(t["images"] for t in r["trials"]) / r["wall"]
        rows.append([r["k"], r["wall"], max(per_trial), imgs, tph, r["k"] / r["wall"] / base,
                     peak if args.device == "cuda" else float("nan"), r["setup"]])
    print_table(["K", "wall s", "slowest trial s", "img/s (all)", "trials/hour", "× K=1",
                 "peak reserved MiB/trial", "start+warm-up s"], rows,
                title="Packed trials (wall = barrier → last trial done; start-up excluded, shown last)")
    last = runs[-1]
    ratio = last["k"] / last["wall"] / base
    on_gpu = args.device == "cuda"
    result(f"trials/hour with {last['k']} trials packed on one device / one trial", f"{ratio:.2f}×",
           f"≥ {TARGET_K} trials with ≥ {TARGET_RATIO:.0f}× on an H100",
           (last["k"] >= TARGET_K and ratio >= TARGET_RATIO) if on_gpu else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
