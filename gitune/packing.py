"""Fractional-GPU packing: `resources.gpu < 1` runs several trials on one GPU. Before the trials start the
sweep measures one trial's GPU memory on a first training step and says whether the packing fits, since
trials that run out of memory only fail minutes later, one by one.
"""

from __future__ import annotations

import math
from typing import Any

import torch

HEADROOM = 0.9  # share of the GPU's memory the packed trials may plan to use (allocator slack, CUDA context)
CONTEXT_BYTES = 500 * 2**20  # CUDA context + cuDNN workspace per process, not seen by the allocator


def trials_per_gpu(gpu_fraction: float) -> int:
    """How many trials Ray places on one GPU for a per-trial request of `gpu_fraction` (0 < f ≤ 1)."""
    return max(1, math.floor(1.0 / gpu_fraction + 1e-9))


def packing_report(per_trial_bytes: int, gpu_fraction: float, total_bytes: int) -> tuple[str, bool]:
    """One line for the user and whether `trials_per_gpu` trials of this size fit in HEADROOM of the GPU."""
    k = trials_per_gpu(gpu_fraction)
    need = k * (per_trial_bytes + CONTEXT_BYTES)
    fits = need <= HEADROOM * total_bytes
    gib = 2**30
    line = (f"GPU memory per trial ≈ {per_trial_bytes / gib:.2f} GiB (measured on one training step) + "
            f"{CONTEXT_BYTES / gib:.1f} GiB CUDA context; {k} trials per GPU at resources.gpu={gpu_fraction:g} "
            f"→ {need / gib:.1f} GiB of {total_bytes / gib:.1f} GiB")
    if not fits:
        most = max(1, int(HEADROOM * total_bytes // (per_trial_bytes + CONTEXT_BYTES)))
        line += (f": does NOT fit; use resources.gpu ≥ {1.0 / most:.3g} ({most} per GPU) or a smaller "
                 f"train.batch_size")
    return line, fits


def measure_trial_memory(config: dict[str, Any], generator: dict[str, Any] | None = None,
                         device: torch.device | None = None) -> int:
    """Peak GPU bytes of one trial: its resident data, model, optimizer state, one training step (GIT
    included) and one evaluation batch, measured on `device` (default: the current CUDA device)."""
    from gitune.config import resolve_trial_config
    from gitune.data.augment import to_float
    from gitune.data.dataset import build_dataset
    from gitune.models import create_model
    from gitune.training.compute import resolve_compute
    from gitune.training.git import generate, load_generator
    from gitune.training.losses import build_loss, needs_cosine_head
    from gitune.training.schedule import build_optimizer

    device = device or torch.device("cuda", torch.cuda.current_device())
    cfg = resolve_trial_config(config)
    tr, ev = cfg["train"], cfg["eval"]
    data = build_dataset(cfg["data"])
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    compute = resolve_compute(tr, device)
    images = data.train.images.to(device)
    labels = data.train.labels.to(device)
    val = data.val.images.to(device)
    model = compute.prepare(create_model(cfg["model"]["arch"], data.num_classes, data.image_shape[0],
                                         cosine_head=needs_cosine_head(tr["loss"]),
                                         cosine_scale=tr["ldam_s"]).to(device))
    opt = build_optimizer(model, cfg["optim"]["lr"], cfg["optim"]["momentum"], cfg["optim"]["weight_decay"],
                          cfg["optim"]["nesterov"])
    loss_fn = build_loss(tr["loss"], data.class_counts).to(device)
    gen = load_generator(generator, device, data.image_shape) if generator is not None else None
    b = min(tr["batch_size"], len(labels))
    x = to_float(images[:b])
    with compute.autocast():
        if gen is not None and cfg["git"]["prob"] > 0:
            k = max(1, int(cfg["git"]["prob"] * b + 0.5))
            x[:k] = generate(gen, x[:k], torch.Generator(device=device).manual_seed(0)).to(x.dtype)
        loss = loss_fn(model(compute.input(x)).float(), labels[:b])
    loss.backward()
    opt.step()
    with torch.no_grad(), compute.autocast():
        model.eval()
        model(compute.input(to_float(val[:ev["batch_size"]])))
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device) - base)


def check_packing(spec, generator: dict[str, Any] | None = None) -> str | None:
    """For a fractional `resources.gpu`, measure one trial (the largest tuned batch size, the most generated
    images) on this machine's GPU and print whether the packing fits; returns the line printed."""
    import copy

    from gitune.config import set_dotted
    from gitune.spaces import _values_or_bounds

    gpu = float(spec.resources.get("gpu") or 0)
    if not 0 < gpu < 1:
        return None
    k = trials_per_gpu(gpu)
    if not torch.cuda.is_available():
        line = (f"gitune: packing {k} trials per GPU (resources.gpu={gpu:g}); no GPU on the driver to measure a "
                f"trial's memory first: watch perf/gpu_mem_peak_gb in the trials")
        print(line)
        return line
    config = copy.deepcopy(spec.config)
    for key in ("train.batch_size", "git.prob", "eval.batch_size"):
        if key in spec.space:
            set_dotted(config, key, max(_values_or_bounds(spec.space[key])))
    if "git.prob" in spec.space and generator is None:
        set_dotted(config, "git.prob", 0.0)
    per_trial = measure_trial_memory(config, generator)
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    line, fits = packing_report(per_trial, gpu, total)
    line = f"gitune: {line}" if fits else f"gitune: WARNING: {line}"
    print(line)
    return line
