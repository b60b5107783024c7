"""Fractional-GPU packing: `resources.gpu < 1` runs several trials on one GPU. Before the trials start the
sweep says how many trials really share a GPU (the GPU share and the node's CPUs both bound it) and
measures one trial's GPU memory, since trials that run out of memory only fail minutes later, one by one.

The measurement runs as a Ray task with the trial's own resources, on a node where trials run, through
the trial's own building code: one real training step (GIT included) and one evaluation and invariance
measurement, read as the allocator's reserved peak. The driver never touches CUDA, so it holds no CUDA
context on GPU 0 for the whole sweep.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

HEADROOM = 0.9  # share of the GPU's memory the packed trials may plan to use (allocator slack, CUDA context)
CONTEXT_BYTES = 500 * 2**20  # CUDA context + cuDNN workspace per process, not seen by the allocator


def trials_per_gpu(gpu_fraction: float, cpu: float | None = None, node_cpus: float | None = None,
                   node_gpus: int = 1) -> int:
    """How many trials Ray places on one GPU for a per-trial request of `gpu_fraction` (0 < f ≤ 1) and,
    when the node is known, `cpu` CPUs on a node of `node_cpus` CPUs and `node_gpus` GPUs: the smaller of
    1/gpu and the node's CPUs / cpu shared over its GPUs (0 when a trial does not fit on the node at all)."""
    by_gpu = max(1, math.floor(1.0 / gpu_fraction + 1e-9))
    if not cpu or node_cpus is None:
        return by_gpu
    by_cpu = math.floor(node_cpus / cpu + 1e-9) // max(1, int(node_gpus))
    return min(by_gpu, by_cpu)


def packing_line(gpu_fraction: float, cpu: float, nodes: list[tuple[float, int]]) -> tuple[int, str]:
    """Trials per GPU on the smallest GPU node of `nodes` ((CPUs, GPUs) each), with a line that says what
    bounds it, and a WARNING when the CPUs do (the GPU share alone would promise more)."""
    by_gpu = trials_per_gpu(gpu_fraction)
    if not nodes:
        return by_gpu, (f"packing {by_gpu} trials per GPU by the GPU share (resources.gpu={gpu_fraction:g}); "
                        f"no GPU node in the Ray cluster yet to check its CPUs against resources.cpu={cpu:g}")
    k, (node_cpus, node_gpus) = min((trials_per_gpu(gpu_fraction, cpu, c, g), (c, g)) for c, g in nodes)
    line = (f"packing {k} trials per GPU: min(1/gpu = {by_gpu}, node CPUs / cpu = {node_cpus:g} / {cpu:g}"
            f"{f' over {node_gpus} GPUs' if node_gpus > 1 else ''})")
    if k < by_gpu:
        fit = node_cpus / (by_gpu * max(1, node_gpus))
        line = (f"WARNING: {line}: the CPUs, not the GPU share, bound the packing; use resources.cpu ≤ "
                f"{math.floor(fit * 100) / 100:g} for {by_gpu} per GPU")
    return k, line


def packing_report(per_trial_bytes: int, gpu_fraction: float, total_bytes: int,
                   per_gpu: int | None = None) -> tuple[str, bool]:
    """One line for the user and whether `per_gpu` trials (default: 1/gpu) of this size fit in HEADROOM
    of the GPU."""
    k = per_gpu if per_gpu is not None else trials_per_gpu(gpu_fraction)
    need = k * (per_trial_bytes + CONTEXT_BYTES)
    fits = need <= HEADROOM * total_bytes
    gib = 2**30
    line = (f"GPU memory per trial ≈ {per_trial_bytes / gib:.2f} GiB (reserved peak of one training step and one "
            f"measurement) + {CONTEXT_BYTES / gib:.1f} GiB CUDA context; {k} trials per GPU at "
            f"resources.gpu={gpu_fraction:g} → {need / gib:.1f} GiB of {total_bytes / gib:.1f} GiB")
    if not fits:
        most = max(1, int(HEADROOM * total_bytes // (per_trial_bytes + CONTEXT_BYTES)))
        line += (f": does NOT fit; use resources.gpu ≥ {1.0 / most:.3g} ({most} per GPU) or a smaller "
                 f"train.batch_size")
    return line, fits


def probe_config(config: dict[str, Any]) -> dict[str, Any]:
    """The trial config with GIT (and the oracle) on from the first epoch and every candidate generated:
    the most memory a step of this trial can take."""
    cfg = copy.deepcopy(config)
    cfg["git"]["start_epoch"] = 0
    cfg["git"]["class_threshold"] = None
    return cfg


def measure_trial_memory(config: dict[str, Any], generator: dict[str, Any] | None = None,
                         device: torch.device | None = None) -> dict[str, Any]:
    """Peak reserved bytes of one trial on `device` (default: the trial's device), built by the trial's own
    `build_trial`, then one training step and one measurement (validation, invariance incl. the
    generator pass at eval.batch_size, test): {"peak_bytes", "total_bytes" (the GPU's), "trained" (images
    in the step), "generated" (GIT images in it), "pid"}. The bytes are 0 on a CPU, where the same path runs."""
    import os

    from gitune.data.loader import FirstBatches
    from gitune.trainables.classifier import build_trial, evaluate_epoch, pick_device, train_epoch

    device = device or pick_device()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_reserved(device)
    t = build_trial(probe_config(config), device, generator)
    for mixer in t.mixers:
        mixer.begin_epoch(0, "uniform")
    one = FirstBatches(t.loader, 1)
    train_epoch(t.net, one, "uniform", t.loss_fn, t.optimizer, t.preprocess, t.crop_pad,
                t.flip, t.gens["augment"], t.mixers, t.compute)
    evaluate_epoch(t, t.cfg.train.epochs)  # the last epoch's measurement: val, invariance, test
    out = {"peak_bytes": 0, "total_bytes": 0, "pid": os.getpid(),
           "trained": one.seen,
           "generated": sum(m.generated for m in t.mixers)}
    if cuda:
        torch.cuda.synchronize(device)
        out["total_bytes"] = int(torch.cuda.get_device_properties(device).total_memory)
        out["peak_bytes"] = int(torch.cuda.max_memory_reserved(device) - base)
    return out


def probe_in_ray(config: dict[str, Any], generator: dict[str, Any] | None, resources: dict[str, Any]):
    """measure_trial_memory as a Ray task with the trial's resources: on a node (and GPU) where trials
    run, in a worker process, so the driver never creates a CUDA context."""
    import ray

    task = ray.remote(num_cpus=resources["cpu"], num_gpus=resources["gpu"], max_retries=0)(measure_trial_memory)
    return ray.get(task.remote(config, generator))


def gpu_nodes() -> list[tuple[float, int]]:
    """(CPUs, GPUs) of each live Ray node that has a GPU."""
    import ray

    out = []
    for node in ray.nodes():
        res = node.get("Resources", {})
        if node.get("Alive") and res.get("GPU", 0) > 0:
            out.append((float(res.get("CPU", 0)), int(res["GPU"])))
    return out


def worst_case_config(spec) -> dict[str, Any]:
    """The spec's config with the largest tuned batch sizes and git.prob (the most memory a trial takes)."""
    from gitune.config import set_dotted
    from gitune.spaces import _values_or_bounds

    config = copy.deepcopy(spec.config)
    for key in ("train.batch_size", "git.prob", "aug.oracle_prob", "eval.batch_size"):
        if key in spec.space:
            set_dotted(config, key, max(_values_or_bounds(spec.space[key])))
    return config


def check_packing(spec, generator: dict[str, Any] | None = None) -> str | None:
    """For a fractional `resources.gpu` (inside the sweep's Ray session): print how many trials share a GPU
    and, measured on a GPU node, whether they fit in its memory; returns the last line printed."""
    from gitune.config import set_dotted

    gpu = float(spec.resources.get("gpu") or 0)
    if not 0 < gpu < 1:
        return None
    nodes = gpu_nodes()
    k, line = packing_line(gpu, float(spec.resources["cpu"]), nodes)
    print(f"gitune: {line}")
    if not nodes:
        return f"gitune: {line}"
    config = worst_case_config(spec)
    if "git.prob" in spec.space and generator is None:
        set_dotted(config, "git.prob", 0.0)
    probe = probe_in_ray(config, generator, spec.resources)
    line, fits = packing_report(probe["peak_bytes"], gpu, probe["total_bytes"], k)
    line = f"gitune: {line}" if fits else f"gitune: WARNING: {line}"
    print(line)
    return line
