"""Every CUDA path once: the checks of issue 12 that only a GPU can settle, also runnable on the CPU.

    python benchmarks/cuda_paths.py                 # cuda when available, else cpu
    python benchmarks/cuda_paths.py --device cpu    # the same checks with CPU expectations (make test)
    python benchmarks/cuda_paths.py --time-limit 140   # under a caller's hard limit: RESULT is still printed

Each check prints one line, `PASS <name>: <measured detail> (<seconds> s)` or `FAIL <name>: <why> (...)`,
then `RESULT cuda paths: N/N passed on <device name>`; the exit status is 1 when any check failed.

  1 device-in-ray      a Ray task with num_gpus=0 gets the CPU from pick_device(); on cuda one with
                       num_gpus=0.25 gets cuda:0 (and allocates there)
  8 memory-probe       packing's probe_in_ray with the trial's resources (gpu 0.25 on cuda, 0 on cpu): runs in
                       another process; on cuda it measures a peak > 0 and the driver never initialised CUDA
  9 packed-sweep       a real `gitune.sweep` (generator stage, then 4 GIT classifier trials at gpu 0.25 on cuda,
                       gpu 0 on cpu) into a temporary MLflow sqlite store; every trial finished with val metrics
                       and GIT images; on cuda they ran on cuda, all 4 at once, and the sweep printed its packing
  5 deterministic      train.deterministic: two 1-epoch runs (GIT, oracle, crop/flip) give bitwise-equal weights
  2 git-trial-bf16     a 2-epoch GIT trial with the device's default compute (cpu: bf16 + channels_last forced):
                       finite loss, GIT images, and evaluation identical inside and outside the trial's autocast
  3 compiled-trial     the same with train.compile: true (and LDAM's cosine head): no recompilation in epoch 2
  4 ldam-head-fp32     the LDAM cosine head returns fp32 logits under bf16 autocast, equal to its fp32 output
  6 rng-restore        RNG streams saved on the other device type are reseeded, same type continue exactly
  7 generator-steps    MUNIT steps in fp32 and bf16 autocast: finite losses

Order: the Ray checks (1, 8, 9) run first, while the driver has not touched CUDA (check 8 and the sweep's
packing probe need that), then Ray is shut down and the in-process checks run, deterministic mode first
(it must be set before the process's first CUDA work, as a trial sets it).
"""

from __future__ import annotations

import contextlib
import copy
import glob
import io
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import time
import traceback

# Before Ray or MLflow are imported: quiet, local, no telemetry; Ray's processes inherit these.
for _k, _v in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0", "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
               "RAY_DEDUP_LOGS": "0", "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "DO_NOT_TRACK": "true", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}.items():
    os.environ.setdefault(_k, _v)

import torch  # noqa: E402

import common  # noqa: E402,F401  (puts the repository root on sys.path)
from common import make_parser, setup  # noqa: E402

# A tiny classifier trial (as tests/test_compute_correctness.py): 4 glyph classes, 16 px, ~90 train images.
TINY = {"data": {"name": "glyphs", "num_classes": 4, "image_size": 16, "profile": "exp", "n_max": 40, "ratio": 4,
                 "val_per_class": 8, "test_per_class": 8, "nuisance": {"rotation": 180}},
        "model": {"arch": "small_cnn"},
        "optim": {"lr": 0.05, "warmup_epochs": 0, "milestones": [1], "gamma": 0.1},
        "train": {"epochs": 2, "batch_size": 16, "seed": 3},
        "eval": {"inv_interval": 1, "inv_images_per_class": 4, "inv_transforms": 3, "batch_size": 256},
        "git": {"prob": 0.5}}
GEN_ARCH = {"dim": 4, "style_dim": 2, "n_downsample": 1, "n_res": 1, "mlp_dim": 4, "mlp_layers": 2}
MUNIT_ARCH = {"dim": 4, "style_dim": 4, "mlp_dim": 8, "n_res": 1, "disc_dim": 4, "disc_layers": 2}
SWEEP_NAME = "cuda-paths-packed"


class CheckTimeout(BaseException):
    """Raised by SIGALRM in a check that ran past --check-timeout (a BaseException: no `except Exception`
    inside gitune or Tune swallows it)."""


class CheckFailed(Exception):
    pass


def need(cond: bool, why: str) -> None:
    if not cond:
        raise CheckFailed(why)


# ---- Shared pieces --------------------------------------------------------------------------------------

def trial_config(device: torch.device, threads: int | None, **groups) -> dict:
    """TINY with some groups' keys overridden, as a full trial config. On cpu the GPU compute path is forced
    (bf16 autocast, channels_last); on cuda the device's defaults (precision auto, channels_last null) stay."""
    from gitune.config import merge_config

    cfg = copy.deepcopy(TINY)
    if device.type == "cpu":
        cfg["train"].update({"precision": "bf16", "channels_last": True})
    if threads:
        cfg["train"]["threads"] = threads
    for group, values in groups.items():
        cfg.setdefault(group, {}).update(values)
    return merge_config(cfg, "cuda_paths")


def generator_payload() -> dict:
    """A tiny MUNIT generator with random weights, as the generator stage hands it to classifier trials."""
    from gitune.models.munit import MunitGenerator

    torch.manual_seed(11)
    return {"arch": dict(GEN_ARCH), "in_channels": 1, "image_size": 16, "source": "random weights",
            "state_dict": MunitGenerator(1, **GEN_ARCH).state_dict()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def expect_compute(t, device: torch.device) -> str:
    c = t.compute
    need(c.bf16 and c.channels_last, f"compute resolved to bf16={c.bf16}, channels_last={c.channels_last} on "
         f"{device.type}; expected bf16 autocast + channels_last (the CUDA default)")
    return f"bf16 autocast + channels_last{' (defaults)' if device.type == 'cuda' else ' (forced)'}"


def streams(t) -> dict:
    return {k: g.get_state() for k, g in t.gens.items()}


def set_streams(t, saved: dict) -> None:
    for k, g in t.gens.items():
        g.set_state(saved[k])


def same(a: float, b: float) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def rel(a: float, b: float) -> float:
    if same(a, b):
        return 0.0
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


@contextlib.contextmanager
def determinism_restored():
    """train.deterministic sets process-wide torch flags and an environment variable: put them back."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[4]


# ---- Ray ------------------------------------------------------------------------------------------------

def start_ray(device: torch.device, tmp: str) -> str:
    """A private local Ray on 127.0.0.1 with its own temp dir and at least 4 CPUs (the packed sweep runs 4 trials
    of cpu 1 at once); on cuda one GPU (Ray reads it from the system, not through torch: no CUDA context)."""
    import ray

    kwargs = {}
    if device.type == "cuda":
        cpus = max(4, os.cpu_count() or 1)
        kwargs["num_gpus"] = 1
    else:
        cpus = 4  # logical: lets the 4 trials of the packed sweep start together on a 2-core machine too
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1",
             _temp_dir=tmp, configure_logging=False, **kwargs)
    res = ray.cluster_resources()
    return (f"Ray up in {time.perf_counter() - t0:.1f} s: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")


def _device_in_task(touch: bool):
    """Runs in a Ray worker: what pick_device() gives there, and (cuda) that the device really takes work."""
    import os as _os

    import torch as _torch

    from gitune.trainables.classifier import pick_device

    d = pick_device()
    out = {"device": str(d), "pid": _os.getpid(), "visible": _os.environ.get("CUDA_VISIBLE_DEVICES")}
    if touch and d.type == "cuda":
        x = _torch.ones(1024, device=d)
        out["sum"] = float(x.sum())
        out["name"] = _torch.cuda.get_device_name(d)
    return out


def check_device_in_ray(device: torch.device) -> str:
    import ray

    # max_calls=1 on cuda: the worker exits afterwards. Its CUDA runtime saw CUDA_VISIBLE_DEVICES="" (torch caches
    # the device count), so a later GPU task or trial actor reusing that process would find no GPU.
    once = {"max_calls": 1} if device.type == "cuda" else {}
    cpu = ray.get(ray.remote(num_cpus=1, num_gpus=0, max_retries=0, **once)(_device_in_task).remote(False))
    need(cpu["device"] == "cpu", f"num_gpus=0 task got {cpu['device']} (CUDA_VISIBLE_DEVICES={cpu['visible']!r})")
    detail = f"num_gpus=0 → {cpu['device']} (CUDA_VISIBLE_DEVICES={cpu['visible']!r})"
    if device.type == "cuda":
        gpu = ray.get(ray.remote(num_cpus=1, num_gpus=0.25, max_retries=0)(_device_in_task).remote(True))
        need(gpu["device"] == "cuda:0", f"num_gpus=0.25 task got {gpu['device']} "
             f"(CUDA_VISIBLE_DEVICES={gpu['visible']!r}); expected cuda:0")
        need(gpu.get("sum") == 1024.0, f"a tensor on {gpu['device']} summed to {gpu.get('sum')}")
        detail += (f"; num_gpus=0.25 → {gpu['device']} (CUDA_VISIBLE_DEVICES={gpu['visible']!r}, "
                   f"{gpu.get('name')})")
    return detail


def check_memory_probe(device: torch.device, threads: int | None) -> str:
    from gitune.packing import probe_in_ray

    cuda = device.type == "cuda"
    need(not torch.cuda.is_initialized(), "the driver initialised CUDA before the probe (an earlier step did)")
    resources = {"cpu": 1, "gpu": 0.25 if cuda else 0}
    probe = probe_in_ray(trial_config(device, threads), generator_payload(), resources)
    need(probe["pid"] != os.getpid(), f"the probe ran in the driver's process (pid {probe['pid']})")
    need(probe["trained"] > 0 and probe["generated"] > 0,
         f"the probe's step trained {probe['trained']} images, {probe['generated']} generated by GIT")
    detail = (f"resources {resources}: ran in pid {probe['pid']} (driver {os.getpid()}), step of "
              f"{probe['trained']} images ({probe['generated']} from GIT)")
    if cuda:
        need(probe["peak_bytes"] > 0, f"peak_bytes {probe['peak_bytes']} on cuda")
        need(probe["total_bytes"] > 0, f"total_bytes {probe['total_bytes']} on cuda")
        detail += (f", peak {probe['peak_bytes'] / 2**20:.1f} MiB of {probe['total_bytes'] / 2**30:.1f} GiB")
    else:
        detail += f", peak_bytes {probe['peak_bytes']} (0 on cpu)"
    need(not torch.cuda.is_initialized(), "the driver initialised CUDA during the probe")
    return detail + "; driver CUDA initialised: False"


def sweep_space(device: torch.device, tmp: str) -> str:
    gpu = 0.25 if device.type == "cuda" else 0
    # On cuda the trials are longer (smaller batches, 3 epochs, invariance every epoch: still seconds) so that
    # "all 4 at once" is read from run intervals well above the trials' start-up jitter. On cpu no invariance
    # measurement in the sweep (check 2 covers it): trials there skip the plots, to keep `make test` short.
    batch, epochs, inv = (8, 3, 1) if device.type == "cuda" else (24, 2, 0)
    text = f"""\
        name: {SWEEP_NAME}
        description: benchmarks/cuda_paths.py, 4 packed GIT trials
        trainable: classifier
        metric: val/bal_acc
        mode: max
        num_samples: 1
        scheduler: {{type: fifo}}
        search: {{type: grid}}
        resources: {{cpu: 1, gpu: {gpu}}}
        checkpoint: {{num_to_keep: 1}}
        generator:
          config: {{dim: 4, style_dim: 4, mlp_dim: 8, n_res: 1, disc_dim: 4, disc_layers: 2, iterations: 20,
                   batch_size: 4, report_every: 20, grid_every: 20, fid_images: 16, fid_draws: 2, threads: 1}}
        config:
          data: {{name: glyphs, num_classes: 4, image_size: 16, profile: exp, n_max: 60, ratio: 6,
                 val_per_class: 8, test_per_class: 8, nuisance: {{rotation: 180}}}}
          model: {{arch: small_cnn}}
          optim: {{lr: 0.05, warmup_epochs: 0, milestones: [2], gamma: 0.1}}
          train: {{epochs: {epochs}, batch_size: {batch}, threads: 1, seed: 3}}
          eval: {{inv_interval: {inv}, inv_images_per_class: 4, inv_transforms: 2, batch_size: 64}}
          git: {{prob: 0.5}}
        space:
          train.seed: {{grid: [1, 2, 3, 4]}}
        """
    path = os.path.join(tmp, "space.yaml")
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = cur = 0
    for _, step in events:
        cur += step
        most = max(most, cur)
    return most


def tune_intervals(storage: str) -> list[tuple[float, float]]:
    """(start, end) in seconds of each classifier trial from Tune's result.json: end = the last result's
    timestamp, start = end − its time_total_s (Tune's clock from the trial's first iteration)."""
    import json

    out = []
    for path in glob.glob(os.path.join(storage, SWEEP_NAME, "*", "train_classifier_*", "result.json")):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if rows:
            end = float(rows[-1]["timestamp"])
            out.append((end - float(rows[-1]["time_total_s"]), end))
    return out


def error_files(root: str) -> str:
    out = []
    for path in sorted(glob.glob(os.path.join(root, "**", "error.txt"), recursive=True))[:2]:
        with open(path) as f:
            lines = f.read().strip().splitlines()
        out.append(f"{path}: {' | '.join(lines[-3:])}")
    return "; ".join(out)


def check_packed_sweep(device: torch.device, tmp: str) -> str:
    from mlflow.tracking import MlflowClient

    from gitune import sweep

    cuda = device.type == "cuda"
    space = sweep_space(device, tmp)
    uri = f"sqlite:///{tmp}/mlflow.db"
    storage = os.path.join(tmp, "rr")
    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        rc = sweep.main(["--space", space, "--tracking-uri", uri, "--storage", storage])
    wall = time.perf_counter() - t0
    out = log.getvalue()
    with open(os.path.join(tmp, "sweep.log"), "w") as f:
        f.write(out)
    tail = " | ".join(out.strip().splitlines()[-4:])
    need(rc == 0, f"the sweep exited with status {rc}; {error_files(storage) or tail}")

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(SWEEP_NAME)
    need(exp is not None, f"no MLflow experiment {SWEEP_NAME!r}")
    gens = client.search_runs([exp.experiment_id], "tags.stage = 'generator'")
    need(len(gens) == 1 and gens[0].info.status == "FINISHED",
         f"generator stage: {[(r.info.status) for r in gens]} (expected one FINISHED run)")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'classifier'", max_results=100)
    need(len(runs) == 4, f"{len(runs)} classifier runs in MLflow, expected 4")
    bad = [r.info.run_name for r in runs if r.info.status != "FINISHED"]
    need(not bad, f"trials not FINISHED: {bad}")
    for r in runs:
        m, p = r.data.metrics, r.data.params
        need("val/bal_acc" in m and "val/loss" in m, f"{r.info.run_name}: no val metrics in MLflow")
        need(m.get("git/generated", 0) > 0, f"{r.info.run_name}: git/generated = {m.get('git/generated')}")
        want = "cuda" if cuda else "cpu"
        need(p.get("compute/device") == want, f"{r.info.run_name}: compute/device = {p.get('compute/device')}, "
             f"expected {want}")
    g_device = gens[0].data.params.get("compute/device")
    need(g_device == device.type, f"generator stage ran on {g_device}, expected {device.type}")
    # Two views of "at once": the MLflow runs (opened after build_trial, closed after the last epoch: the
    # training itself) and Tune's trial intervals (first iteration's start, i.e. last result time minus the
    # trials' whole time_total_s, to the last result: trial set-up included).
    intervals = [(r.info.start_time / 1000, r.info.end_time / 1000) for r in runs]
    together = max_overlap(intervals)
    tune_iv = tune_intervals(storage)
    need(len(tune_iv) == 4, f"{len(tune_iv)} classifier trials in Tune's storage, expected 4")
    tune_together = max_overlap(tune_iv)
    pids = {r.data.tags.get("gitune.pid") for r in runs}
    span = max(e for _, e in intervals) - min(s for s, _ in intervals)
    each = sorted(e - s for s, e in intervals)
    detail = (f"rc 0 in {wall:.1f} s; generator stage on {g_device}; 4/4 trials FINISHED on {device.type} with "
              f"val metrics, git/generated {sorted(int(r.data.metrics['git/generated']) for r in runs)}; at once: "
              f"{tune_together} of 4 Tune trials, {together} of 4 MLflow runs ({len(pids)} worker processes; runs "
              f"{each[0]:.1f}-{each[-1]:.1f} s within {span:.1f} s)")
    packing = [line.strip() for line in out.splitlines() if "trials per GPU" in line]
    if cuda:
        need(tune_together == 4, f"only {tune_together} of the 4 trials ran at once at resources.gpu 0.25 ({detail})")
        need(any("packing 4 trials per GPU" in line for line in packing),
             f"no 'packing 4 trials per GPU' line in the sweep's output (got {packing or 'none'})")
        mem = [line for line in packing if "GPU memory per trial" in line]
        need(mem and "does NOT fit" not in mem[0], f"memory line: {mem or 'none'}")
        need(not torch.cuda.is_initialized(), "the sweep's driver initialised CUDA")
        detail += "; " + " / ".join(line.removeprefix("gitune: ") for line in packing)
        detail += "; driver CUDA initialised: False"
    else:
        detail += f"; packing line: {'none (gpu 0: none expected)' if not packing else packing}"
    return detail


# ---- In-process checks ----------------------------------------------------------------------------------

def check_deterministic(device: torch.device, threads: int | None) -> str:
    from gitune.trainables.classifier import build_trial, train_one_epoch

    cfg = trial_config(device, threads, train={"epochs": 1, "deterministic": True, "crop_pad": 2, "flip": True},
                       aug={"oracle_prob": 0.25})
    payload = generator_payload()
    results = []
    with determinism_restored():
        for _ in range(2):
            t = build_trial(cfg, device, payload)
            need(torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
                 and not torch.backends.cudnn.benchmark,
                 "train.deterministic did not switch on deterministic algorithms / cuDNN")
            m = train_one_epoch(t, 0)
            sync(device)
            results.append(({k: v.detach().cpu().clone() for k, v in t.model.state_dict().items()}, m))
        cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    (w1, m1), (w2, m2) = results
    differ = [k for k in w1 if not torch.equal(w1[k], w2[k])]
    if differ:
        worst = max(float((w1[k].float() - w2[k].float()).abs().max()) for k in differ)
        raise CheckFailed(f"weights differ after two deterministic runs: {differ[:4]} (max |Δ| {worst:.3g})")
    need(m1["train/loss"] == m2["train/loss"] and math.isfinite(m1["train/loss"]),
         f"train/loss {m1['train/loss']!r} vs {m2['train/loss']!r}")
    need(m1.get("git/generated", 0) > 0, f"git/generated {m1.get('git/generated')}")
    return (f"2 × 1 epoch (GIT + oracle + crop/flip, {expect_compute(t, device)}): {len(w1)} weight tensors "
            f"bitwise equal, train/loss {m1['train/loss']:.6f} both; CUBLAS_WORKSPACE_CONFIG was {cublas}; flags "
            f"restored (deterministic algorithms now {torch.are_deterministic_algorithms_enabled()})")


def _eval_compare(t, device: torch.device, done: int) -> tuple[str, int]:
    """evaluate_epoch outside and inside the trial's autocast, from the same RNG streams: (detail, keys)."""
    from gitune.data.augment import to_float
    from gitune.trainables.classifier import evaluate_epoch

    saved = streams(t)
    set_streams(t, saved)
    plain, inv = evaluate_epoch(t, done)
    set_streams(t, saved)
    with t.compute.autocast():
        inside, inv_in = evaluate_epoch(t, done)
    set_streams(t, saved)
    need(inv and "inv/ekld_mean" in inv and "inv/ekld_gen_mean" in inv, f"no invariance measured: {sorted(inv)[:5]}")
    need(any(k.startswith("test/") for k in plain), "no test metrics at the last epoch")
    need(set(plain) == set(inside), f"different metric keys: {sorted(set(plain) ^ set(inside))[:5]}")
    differ = {k: rel(plain[k], inside[k]) for k in plain if not same(plain[k], inside[k])}
    note = ""
    if differ and device.type == "cuda":
        # invariance's per-class sums are index_add_ (atomics on CUDA when deterministic mode is off): their
        # float order can change from call to call. Tell that noise (≤ 1e-5 relative) from bf16 (≳ 1e-3).
        worst = max(differ.values())
        big = {k: v for k, v in differ.items() if v > 1e-5 or not k.startswith("inv/")}
        need(not big, "evaluation inside autocast differs: " + ", ".join(
            f"{k} {plain[k]!r} vs {inside[k]!r}" for k in list(big)[:4]))
        note = f" ({len(differ)} inv/* keys differ by ≤ {worst:.1e} relative: CUDA atomics' summation order)"
    else:
        need(not differ, "evaluation inside autocast differs: " + ", ".join(
            f"{k} {plain[k]!r} vs {inside[k]!r}" for k in list(differ)[:4]))
    # Teeth: the same validation forward pass under the autocast really gives other logits.
    t.model.eval()
    with torch.no_grad():
        x = t.preprocess(to_float(t.val.images))
        fp32 = t.model(x)
        with t.compute.autocast():
            low = t.model(x)
    t.model.train()
    gap = float((fp32.float() - low.float()).abs().max())
    return (f"val/test/inv metrics ({len(plain)} keys, inv/ekld_mean {plain['inv/ekld_mean']:.5g}) identical "
            f"inside and outside autocast{note}; a bf16 forward would move logits by up to {gap:.2g}"), len(plain)


def check_git_trial(device: torch.device, threads: int | None) -> str:
    from gitune.trainables.classifier import build_trial, train_one_epoch

    t = build_trial(trial_config(device, threads), device, generator_payload())
    compute = expect_compute(t, device)
    need(t.device == device and next(t.model.parameters()).device.type == device.type,
         f"model on {next(t.model.parameters()).device}")
    losses, generated = [], []
    for epoch in range(2):
        m = train_one_epoch(t, epoch)
        losses.append(m["train/loss"])
        generated.append(m.get("git/generated", 0))
    need(all(math.isfinite(v) for v in losses), f"train/loss {losses}")
    need(all(g > 0 for g in generated), f"git/generated per epoch {generated}")
    detail, _ = _eval_compare(t, device, done=2)
    return f"{compute}; 2 epochs, train/loss {losses[0]:.4f} → {losses[1]:.4f}, git/generated {generated}; {detail}"


def check_compiled_trial(device: torch.device, threads: int | None) -> str:
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    from gitune.trainables.classifier import build_trial, train_one_epoch

    dynamo.reset()
    counters.clear()
    # LDAM: the compiled graph holds the cosine head's autocast-off region. Batch 18 divides the 90 training
    # images, and model, batch and compute are those of tests/test_compute_correctness.py's compiled trial,
    # so on cpu Inductor's on-disk cache usually has this graph already (a cold compile: ~25-30 s here).
    cfg = trial_config(device, threads, train={"compile": True, "loss": "ldam", "batch_size": 18, "crop_pad": 2,
                                               "flip": True})
    t = build_trial(cfg, device, generator_payload())
    compute = expect_compute(t, device)
    need(t.compute.compile and getattr(t.net, "_orig_mod", None) is t.model,
         f"train.compile did not give a compiled module (net is {type(t.net).__name__})")
    need(t.loader.drop_last, "a compiled trial's loader does not drop the last partial batch")
    t0 = time.perf_counter()
    m1 = train_one_epoch(t, 0)
    sync(device)
    first = time.perf_counter() - t0
    graphs1 = counters["stats"]["unique_graphs"]
    frames1 = counters["stats"]["calls_captured"]
    need(graphs1 >= 1, f"epoch 1 compiled no graph (dynamo counters {dict(counters['stats'])})")
    old = dynamo.config.error_on_recompile
    dynamo.config.error_on_recompile = True  # a recompilation in epoch 2 raises RecompileError
    try:
        t0 = time.perf_counter()
        m2 = train_one_epoch(t, 1)
        sync(device)
        second = time.perf_counter() - t0
    finally:
        dynamo.config.error_on_recompile = old
    graphs2 = counters["stats"]["unique_graphs"]
    need(graphs2 == graphs1, f"epoch 2 compiled {graphs2 - graphs1} more graph(s)")
    need(counters["stats"]["calls_captured"] == frames1, "dynamo traced again in epoch 2")
    losses = [m1["train/loss"], m2["train/loss"]]
    need(all(math.isfinite(v) for v in losses), f"train/loss {losses}")
    need(m1.get("git/generated", 0) > 0 and m2.get("git/generated", 0) > 0,
         f"git/generated {m1.get('git/generated')}, {m2.get('git/generated')}")
    breaks = sum(counters["graph_break"].values())
    return (f"{compute}, LDAM cosine head, torch.compile(dynamic=False), drop_last: epoch 1 {first:.1f} s "
            f"(compiles {graphs1} graph(s), {breaks} graph break(s)), epoch 2 {second:.2f} s with no recompilation "
            f"(error_on_recompile on, unique_graphs {graphs1} → {graphs2}); train/loss {losses[0]:.4f} → "
            f"{losses[1]:.4f}")


def check_ldam_head(device: torch.device) -> str:
    from gitune.models import create_model
    from gitune.models.heads import CosineLinear
    from gitune.training.compute import Compute

    torch.manual_seed(0)
    compute = Compute(device, bf16=True, channels_last=True)
    head = CosineLinear(24, 5, scale=30.0).to(device)
    features = torch.randn(16, 24, device=device)
    for x in (features, features.bfloat16()):
        with torch.no_grad():
            want = head(x.float())
            with compute.autocast():
                got = head(x)
        need(got.dtype == torch.float32 and got.device.type == device.type,
             f"head({x.dtype}) under autocast gave {got.dtype} on {got.device}")
        need(torch.equal(got, want), f"head({x.dtype}) under autocast differs from fp32 by "
             f"{float((got - want).abs().max()):.3g}")
    model = compute.prepare(create_model("small_cnn", 4, 1, cosine_head=True, cosine_scale=30.0).to(device))
    with torch.no_grad(), compute.autocast():
        logits = model(compute.input(torch.rand(8, 1, 16, 16, device=device)))
        plain = torch.nn.Linear(24, 5).to(device)(features)  # what autocast does to an ordinary layer
    need(logits.dtype == torch.float32, f"small_cnn with the cosine head gave {logits.dtype} logits under autocast")
    need(plain.dtype == torch.bfloat16, f"autocast is not active: nn.Linear gave {plain.dtype}")
    return (f"CosineLinear(s=30) under bf16 autocast: fp32 logits on {got.device}, equal to its fp32 output for fp32 "
            f"and bf16 features; small_cnn+cosine head logits {logits.dtype} (a plain Linear gives {plain.dtype})")


class _Checkpoint:
    def __init__(self, path):
        self.path = path

    @contextlib.contextmanager
    def as_directory(self):
        yield str(self.path)


class _Caught(logging.Handler):
    """Keeps the messages of a logger instead of printing them."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def caught_warnings(name: str):
    logger = logging.getLogger(name)
    handler, propagate = _Caught(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def check_rng_restore(device: torch.device, tmp: str) -> str:
    from gitune.trainables import checkpoint

    with caught_warnings(checkpoint.__name__) as caught:
        return _rng_restore(device, tmp, caught)


def _rng_restore(device: torch.device, tmp: str, caught) -> str:
    from gitune.models import create_model
    from gitune.trainables import checkpoint, classifier
    from gitune.trainables.classifier import RNG_STREAMS, stream_seed
    from gitune.training.schedule import build_optimizer, build_scheduler

    other = "cpu" if device.type == "cuda" else "cuda"
    seed, epoch = 3, 4

    def gens_on(dev):
        return {n: torch.Generator(device=dev).manual_seed(stream_seed(seed, i)) for i, n in enumerate(RNG_STREAMS)}

    torch.manual_seed(0)
    model = create_model("small_cnn", 3, 1).to(device)
    optimizer = build_optimizer(model, 0.1, 0.9, 0.0)
    scheduler = build_scheduler(optimizer, 0, [5], 0.1)
    folder = os.path.join(tmp, "rng")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, checkpoint.STATE_FILE)
    # Saved on the other device type: on cuda real CPU generators' states; on cpu a CUDA generator's (Philox
    # seed + offset: 16 bytes), which a CPU generator cannot take.
    if other == "cpu":
        saved_gens = gens_on(torch.device("cpu"))
        for g in saved_gens.values():
            torch.rand(7, generator=g)
        state = classifier._state(model, optimizer, scheduler, saved_gens, epoch)
    else:
        state = classifier._state(model, optimizer, scheduler, gens_on(device), epoch)
        state["rng"] = {k: torch.zeros(16, dtype=torch.uint8) for k in RNG_STREAMS}
        state["rng_device"] = "cuda"
    need(state["rng_device"] == other, f"_state stored rng_device {state['rng_device']!r}")
    torch.save(state, path)
    gens = gens_on(device)
    warnings = caught.messages
    got = classifier._restore(_Checkpoint(folder), model, optimizer, scheduler, gens, seed=seed)
    need(got == epoch, f"_restore returned epoch {got}")
    need(any("reseeding them for epoch 4" in w for w in warnings), f"no reseeding warning (got {warnings})")
    for i, name in enumerate(RNG_STREAMS):
        want = torch.Generator(device=device).manual_seed(stream_seed(seed, i, epoch))
        need(torch.equal(torch.rand(5, generator=gens[name], device=device),
                         torch.rand(5, generator=want, device=device)),
             f"stream {name} not reseeded from (seed, stream, epoch)")
    # The same through restore_streams directly, with a checkpoint that does not say its device (older runs).
    reseeds = {n: stream_seed(seed, i, epoch) for i, n in enumerate(RNG_STREAMS)}
    g2 = gens_on(device)
    need(checkpoint.restore_streams(g2, state["rng"], None, reseeds, "epoch 4") is False,
         "an unlabelled foreign state was loaded instead of reseeded")
    # Same device type: the streams go on exactly where they were.
    mid = gens_on(device)
    for g in mid.values():
        torch.rand(7, generator=g, device=device)
    torch.save(classifier._state(model, optimizer, scheduler, mid, 2), path)
    after = {k: torch.rand(5, generator=g, device=device) for k, g in mid.items()}
    fresh = gens_on(device)
    caught.messages.clear()
    need(classifier._restore(_Checkpoint(folder), model, optimizer, scheduler, fresh, seed=seed) == 2,
         "same-type restore: wrong epoch")
    need(not caught.messages, f"same-type restore warned: {caught.messages}")
    for k, g in fresh.items():
        need(torch.equal(torch.rand(5, generator=g, device=device), after[k]), f"stream {k} did not continue exactly")
    # The generator stage's checkpoint, from the other device type.
    from gitune.trainables import generator as stage

    net = torch.nn.Linear(3, 2).to(device)
    rng = torch.Generator(device=device).manual_seed(stream_seed(5, stage.TRAIN_STREAM))
    foreign = state["rng"]["sample"]
    torch.save({"net": net.state_dict(), "iteration": 40, "rng": foreign, "rng_device": other,
                "torch_rng": torch.get_rng_state()}, os.path.join(folder, checkpoint.STATE_FILE))
    need(stage.restore_stage(_Checkpoint(folder), {"net": net}, rng, seed=5) == 40, "restore_stage: iteration")
    need(any("reseeding them for iteration 40" in w for w in warnings), "generator stage: no reseeding warning")
    want = torch.Generator(device=device).manual_seed(stream_seed(5, stage.TRAIN_STREAM, 40))
    need(torch.equal(torch.rand(4, generator=rng, device=device), torch.rand(4, generator=want, device=device)),
         "generator stage stream not reseeded")
    return (f"{device.type} generators: {len(RNG_STREAMS)} classifier streams saved on {other} "
            f"({state['rng']['sample'].numel()}-byte states) reseeded per (seed, stream, epoch 4), also unlabelled; "
            f"generator stage's stream reseeded for iteration 40; {device.type}-saved streams continue exactly")


def check_generator_steps(device: torch.device) -> str:
    from gitune.models.munit import build_munit
    from gitune.trainables.generator import generator_compute
    from gitune.training.munit import build_munit_optimizers, munit_step

    parts = []
    for precision in ("fp32", "bf16"):
        compute = generator_compute({"precision": precision}, device)
        need(compute.bf16 == (precision == "bf16"), f"generator.precision {precision} resolved to bf16={compute.bf16}")
        torch.manual_seed(0)
        gen, dis = build_munit(MUNIT_ARCH, 1, 16)
        gen, dis = compute.prepare(gen.to(device)), compute.prepare(dis.to(device))
        opt_g, opt_d, _, _ = build_munit_optimizers(gen, dis, 1e-3)
        rng = torch.Generator(device=device).manual_seed(0)
        first = last = None
        for _ in range(4):
            x = compute.input(torch.rand(8, 1, 16, 16, device=device) * 2 - 1)
            losses = munit_step(gen, dis, opt_g, opt_d, x, rng, None, compute.autocast)
            values = {k: float(v) for k, v in losses.items()}
            need(all(math.isfinite(v) for v in values.values()), f"{precision}: non-finite losses {values}")
            need(all(v.dtype == torch.float32 for v in losses.values()),
                 f"{precision}: loss dtypes {sorted({str(v.dtype) for v in losses.values()})}")
            first = first or values
            last = values
        need(all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in gen.parameters()),
             f"{precision}: generator weights not finite fp32")
        parts.append(f"{precision}{' + channels_last' if compute.channels_last else ''}: recon_x "
                     f"{first['loss/recon_x']:.3f} → {last['loss/recon_x']:.3f}, dis {last['loss/dis']:.3f}")
    default = generator_compute({}, device)
    return (f"4 munit_steps each, finite fp32 losses: {'; '.join(parts)}; generator.precision auto resolves to "
            f"{'bf16' if default.bf16 else 'fp32'}, channels_last {default.channels_last}")


# ---- Running ----------------------------------------------------------------------------------------------

class Runner:
    """Runs the checks, each under SIGALRM: at most --check-timeout seconds, and none past --time-limit (so
    that a caller's hard limit, e.g. gpu_check.sh's `timeout`, which also kills Ray, never cuts the RESULT)."""

    def __init__(self, timeout: int, time_limit: float | None):
        self.check_timeout = timeout
        self.deadline = time.monotonic() + time_limit if time_limit else None
        self.results: list[tuple[str, bool]] = []

    def run(self, name: str, fn, *args) -> bool:
        self.timeout = self.check_timeout
        if self.deadline is not None:
            left = int(self.deadline - time.monotonic())
            if left < 1:
                self.skip(name, "not run: --time-limit reached")
                return False
            self.timeout = min(self.timeout, left)
        fired = []

        def alarm(signum, frame):
            fired.append(True)
            raise CheckTimeout()

        old = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(self.timeout)
        t0 = time.perf_counter()
        try:
            detail, ok = fn(*args), True
        except CheckFailed as e:
            detail, ok = str(e), False
        except CheckTimeout:
            detail, ok = f"timed out after {self.timeout} s (--check-timeout / --time-limit)", False
        except Exception as e:  # noqa: BLE001 - a check's crash is its failure, the others still run
            tb = traceback.extract_tb(e.__traceback__)
            where = f" at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
            first = (str(e).strip().splitlines() or [""])[0][:300]
            detail, ok = f"{type(e).__name__}: {first}{where}", False
            if fired:  # the alarm's exception came back wrapped (e.g. SystemError out of Ray's Cython code)
                detail = f"timed out after {self.timeout} s (--check-timeout / --time-limit)"
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        seconds = time.perf_counter() - t0
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail} ({seconds:.1f} s)", flush=True)
        self.results.append((name, ok))
        return ok

    def skip(self, name: str, why: str) -> None:
        print(f"FAIL {name}: {why} (0.0 s)", flush=True)
        self.results.append((name, False))


def main(argv=None) -> int:
    p = make_parser(__doc__.splitlines()[0])
    p.add_argument("--check-timeout", type=int, default=300, help="seconds one check may take before it fails")
    p.add_argument("--time-limit", type=float, default=None,
                   help="seconds for the whole script: a check still running then fails, later ones are not run, "
                        "and the RESULT line is printed (set it below any hard limit the caller imposes)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (sweep log, MLflow db, Ray logs)")
    args = p.parse_args(argv)
    device = setup(args)  # no CUDA call but is_available(): checks 8 and 9 need a driver without a CUDA context
    threads = args.threads if device.type == "cpu" else None  # on cuda trials keep torch's own choice
    if device.type == "cuda":
        device = torch.device("cuda", 0)
    start = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="gcp-", dir="/tmp")  # short: Ray's socket paths live under it
    runner = Runner(args.check_timeout, args.time_limit)
    print(f"cuda paths: --device {device.type}, torch {torch.__version__}, {os.cpu_count()} CPUs, driver threads "
          f"{torch.get_num_threads()}, temp {tmp}", flush=True)
    ray_checks = [("1 device-in-ray", check_device_in_ray, device),
                  ("8 memory-probe", check_memory_probe, device, threads),
                  ("9 packed-sweep", check_packed_sweep, device, tmp)]
    local_checks = [("5 deterministic", check_deterministic, device, threads),
                    ("2 git-trial-bf16", check_git_trial, device, threads),
                    ("3 compiled-trial", check_compiled_trial, device, threads),
                    ("4 ldam-head-fp32", check_ldam_head, device),
                    ("6 rng-restore", check_rng_restore, device, tmp),
                    ("7 generator-steps", check_generator_steps, device)]
    import ray

    try:
        try:
            print(f"cuda paths: {start_ray(device, tmp)}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"cuda paths: Ray did not start: {type(e).__name__}: {str(e).strip()[:300]}", flush=True)
            for name, *_ in ray_checks:
                runner.skip(name, "Ray did not start")
            ray_checks = []
        for name, fn, *fargs in ray_checks:
            runner.run(name, fn, *fargs)
        with contextlib.suppress(Exception):
            ray.shutdown()
        for name, fn, *fargs in local_checks:
            runner.run(name, fn, *fargs)
    finally:
        with contextlib.suppress(BaseException):
            ray.shutdown()
        if args.keep:
            print(f"kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    done = {name for name, _ in runner.results}
    for name, *_ in ray_checks + local_checks:
        if name not in done:
            runner.skip(name, "not run")
    passed = sum(ok for _, ok in runner.results)
    total = len(runner.results)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    print(f"RESULT cuda paths: {passed}/{total} passed on {name} in {time.perf_counter() - start:.1f} s", flush=True)
    return 0 if passed == total else 1


if __name__ == "__main__":
    sys.exit(main())
