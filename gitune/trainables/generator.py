"""Generator pretraining (MUNIT within one domain, docs/method.md, the generator) as a Ray Tune function trainable.

Class-agnostic: labels are used only to sample classes evenly (weight 1/n_c per image), never by the
networks. Every `report_every` iterations it reports mean losses with a checkpoint that holds both
networks, both optimizers and schedules and the RNG, so a restored trial continues where it stopped.
Its MLflow child run (tag stage=generator) gets sample grids as PNGs and, at the end, the generator
weights in the file format `generator.checkpoint` reads. Every report also carries the generator's
fidelity metrics (fid/*, gitune/metrics/generator_fidelity.py) on fixed held-out clean validation images,
because the losses cannot tell a generator that learned the nuisance from one that ignores its style.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from ray import tune

from gitune.config import as_dict, flatten, typed_generator_config
from gitune.data.augment import to_float
from gitune.data.dataset import build_dataset
from gitune.errors import UserError
from gitune.metrics.generator_fidelity import measure_fidelity, nuisance_synthesizer
from gitune.models import count_parameters
from gitune.generator_file import GENERATOR_FILE, export_generator
from gitune.models.munit import MUNIT_DEFAULTS, build_munit, munit_check
from gitune.tracking import TrackingContext, dataset_input, run_name
from gitune.trial_run import LOGGED_ALL, TrialRun
from gitune.trainables.checkpoint import newest_checkpoint, restore_state, save_state
from gitune.trainables.diverged import end_diverged
from gitune.trainables.reporting import report_step
from gitune.trainables.classifier import pick_device, stream_seed
from gitune.training.compute import Compute, cudnn_autotune, resolve_compute
from gitune.training.git import generate, to_generator_range
from gitune.training.munit import build_munit_optimizers, munit_step, sample_grid

LOSS_KEYS = ("loss/dis", "loss/gen_total", "loss/gen_adv", "loss/recon_x", "loss/recon_s", "loss/recon_c")
GRID_ROWS, GRID_STYLES = 8, 6
TRAIN_STREAM, FID_STREAM = 17, 29  # RNG streams: stream_seed(generator.seed, stream)


# The helpers below take a generator block as a mapping: the typed one of a trial (gitune.config.ConfigBlock
# reads like its dict) or a plain dict, as the sweep's preflight, the benchmarks and the tests pass.

def arch_of(gc: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture keys of a generator block, as the dict build_munit and the generator file take."""
    return {k: gc[k] for k in MUNIT_DEFAULTS}


def generator_lr(gc: Mapping[str, Any]) -> float:
    """The LR the stage trains with. generator.lr is the LR at batch 1, the reference's batch; a larger
    batch averages its gradient over more images, so the step may grow with it: × batch_size
    (`lr_scaling: linear`, the rule for SGD-like updates) or × √batch_size (`sqrt`, the usual rule for Adam,
    whose update size does not follow the gradient's scale), or not at all (`none`, the default)."""
    scale = {"none": 1.0, "linear": float(gc["batch_size"]), "sqrt": math.sqrt(gc["batch_size"])}
    return gc["lr"] * scale[gc.get("lr_scaling", "none")]


def generator_compute(gc: Mapping[str, Any], device: torch.device) -> Compute:
    """generator.precision / generator.channels_last, resolved as a classifier trial's train.* keys."""
    return resolve_compute({"precision": gc.get("precision", "auto"), "channels_last": gc.get("channels_last")},
                           device)


def grid_images(labels: torch.Tensor, counts: list[int], rows: int = GRID_ROWS) -> torch.Tensor:
    """Indices of one training image from each of `rows` classes spread from head to tail, so the grid
    shows whether the generated nuisances hold up on small classes too."""
    order = sorted(range(len(counts)), key=lambda c: -counts[c])
    picks = [order[round(i * (len(order) - 1) / max(1, rows - 1))] for i in range(min(rows, len(order)))]
    return torch.stack([torch.nonzero(labels == c).flatten()[0] for c in dict.fromkeys(picks)])


def _grid_png(gen, images: torch.Tensor, seed: int):
    """The sample grid as an H×W(×C) uint8 array; the same styles every time (fixed seed), so grids
    from successive iterations are comparable."""
    rng = torch.Generator(device=images.device).manual_seed(seed)
    grid = sample_grid(gen, images, GRID_STYLES, rng)
    arr = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def fidelity_indices(labels: torch.Tensor, num_classes: int, n: int) -> torch.Tensor:
    """The first n images in class round-robin order (image 0 of every class, then image 1, …): balanced
    over classes and the same set at every report, so values are comparable across iterations."""
    rank = torch.zeros_like(labels)
    for c in range(num_classes):
        where = torch.nonzero(labels == c).flatten()
        rank[where] = torch.arange(len(where))
    order = torch.argsort(rank * num_classes + labels, stable=True)
    return order[:n]


def measure_generator(gen, images01: torch.Tensor, truth, gc: Mapping[str, Any]) -> dict[str, float]:
    """Fidelity of the current generator in eval mode, with an RNG of its own, re-seeded every time: the
    training RNG is untouched (resume stays exact) and every report draws the same styles."""
    rng = torch.Generator(device=images01.device).manual_seed(stream_seed(gc["seed"], FID_STREAM))
    was_training = gen.training
    gen.eval()
    try:
        return measure_fidelity(lambda x01, r: generate(gen, x01, r), images01, rng, truth=truth,
                                draws=gc["fid_draws"])
    finally:
        gen.train(was_training)


def restore_stage(checkpoint, parts: dict[str, Any], rng: torch.Generator, seed: int) -> int:
    """Load a stage checkpoint into `parts` (networks, optimizers, schedules by state key) and `rng`; the
    iteration it was taken at. A checkpoint from another device type (a retried stage on a CPU node after a
    GPU one) reseeds the training stream for that iteration, as classifier trials do, with a warning."""
    return restore_state(checkpoint, parts, {"train": rng}, "iteration",
                         lambda start: {"train": stream_seed(seed, TRAIN_STREAM, start)})


def train_generator(config: dict[str, Any], tracking: TrackingContext | None = None,
                    metric: str | None = None) -> None:
    """Pretrain one MUNIT generator on config["data"] with config["generator"] (GENERATOR_DEFAULTS keys); the
    dict Tune sampled is typed once here. `metric`: the stage's (NaN in the last report of a diverged trial)."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = typed_generator_config(config)
    gc, data_cfg = cfg.generator, as_dict(cfg.data)
    if gc.threads:
        torch.set_num_threads(gc.threads)
    device = pick_device()
    data = build_dataset(data_cfg)
    channels, size = data.image_shape[0], data.image_shape[-1]
    error = munit_check(arch_of(gc), size)
    if error:
        raise UserError(error)
    torch.manual_seed(gc.seed)
    gen, dis = build_munit(arch_of(gc), channels, size)
    compute = generator_compute(gc, device)
    cudnn_autotune(False)  # one input shape for the whole stage: autotuned once
    gen, dis = compute.prepare(gen.to(device)), compute.prepare(dis.to(device))
    opt_g, opt_d, sched_g, sched_d = build_munit_optimizers(
        gen, dis, generator_lr(gc), (gc.beta1, gc.beta2), gc.weight_decay, gc.lr_step, gc.lr_gamma)
    weights = {"gan": gc.w_gan, "recon_x": gc.w_recon_x, "recon_s": gc.w_recon_s, "recon_c": gc.w_recon_c}
    rng = torch.Generator(device=device).manual_seed(stream_seed(gc.seed, TRAIN_STREAM))
    images = data.train.images.to(device)
    labels = data.train.labels.to(device)
    counts = torch.bincount(labels, minlength=data.num_classes).clamp_min(1)
    sample_weights = (1.0 / counts.double())[labels].float()  # class-balanced: every class equally often
    grid_set = to_generator_range(to_float(images[grid_images(data.train.labels, data.class_counts).to(device)]))
    held_out = data.clean_val
    fid_set = to_float(held_out.images[fidelity_indices(held_out.labels, data.num_classes, gc.fid_images)]
                       .to(device))
    truth = nuisance_synthesizer(data.nuisance) if data.nuisance else None

    parts = {"gen": gen, "dis": dis, "opt_g": opt_g, "opt_d": opt_d, "sched_g": sched_g, "sched_d": sched_d}
    start = 0
    checkpoint = newest_checkpoint(tune.get_checkpoint(), "iteration")
    if checkpoint is not None:
        start = restore_stage(checkpoint, parts, rng, gc.seed)

    run = None
    if tracking is not None:
        ctx = tune.get_context()
        params = {f"generator.{k}": v for k, v in as_dict(gc).items()}
        params.update({f"data.{k}": v for k, v in flatten(data_cfg).items()})
        params.update({"generator/parameters": count_parameters(gen), "discriminator/parameters": count_parameters(dis),
                       "data/train_images": len(labels), "data/num_classes": data.num_classes,
                       "generator/lr_used": generator_lr(gc), **compute.describe()})
        run = TrialRun.open(tracking, ctx.get_trial_id(), run_name(tracking, ctx.get_trial_id(), config, "generator"),
                            params, tags={"stage": "generator", LOGGED_ALL: "false"}, checkpoint=checkpoint)
        run.log_input(**dataset_input(data_cfg, data.class_counts, data.image_shape, data.class_names))
        if start > 0:
            run.log_metrics({"trial/resumed_at_iteration": start}, step=start)

    total, every = gc.iterations, gc.report_every
    sums = {k: torch.zeros((), device=device) for k in LOSS_KEYS}
    n_sum, t0 = 0, time.perf_counter()
    for it in range(start, total):
        idx = torch.multinomial(sample_weights, gc.batch_size, replacement=True, generator=rng)
        x = compute.input(to_generator_range(to_float(images[idx])))
        losses = munit_step(gen, dis, opt_g, opt_d, x, rng, weights, compute.autocast)
        sched_g.step()
        sched_d.step()
        for k in LOSS_KEYS:
            sums[k] += losses[k]
        n_sum += 1
        done = it + 1
        if done % every and done != total:
            continue
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - t0
        metrics: dict[str, Any] = {"iteration": done, "lr": opt_g.param_groups[0]["lr"],
                                   "perf/img_per_s": n_sum * gc.batch_size / max(elapsed, 1e-9)}
        metrics.update({k: float(v) / n_sum for k, v in sums.items()})
        bad = [k for k in LOSS_KEYS if not math.isfinite(metrics[k])]
        if bad:
            end_diverged(run, metric, f"{bad[0]} became {metrics[bad[0]]} at iteration {done}",
                         {"iteration": done})
            return
        metrics.update(measure_generator(gen, fid_set, truth, gc))
        if run is not None:  # queued: sent once Tune holds the checkpoint of this report (report_step)
            run.log_metrics(metrics, step=done)
            grid_every = gc.grid_every
            if done == total or (grid_every and done // grid_every > (done - n_sum) // grid_every):
                run.log_image(_grid_png(gen, grid_set, gc.seed), f"samples/iter_{done:07d}.png")

        def write(d: str, done: int = done) -> None:
            save_state(d, parts, {"train": rng}, iteration=done)
            if done == total:  # the finished generator, in the file format the sweep and users load
                export_generator(os.path.join(d, GENERATOR_FILE), gen.state_dict(), arch_of(gc), channels,
                                 size, {"iterations": done, "data": data_cfg})
                if run is not None:
                    run.log_artifact(os.path.join(d, GENERATOR_FILE), "generator")

        report_step(metrics, write, f"iteration {done}", run)
        sums = {k: torch.zeros((), device=device) for k in LOSS_KEYS}
        n_sum, t0 = 0, time.perf_counter()
    if run is not None:
        run.finish("FINISHED")
