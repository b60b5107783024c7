"""Classifier training as a Ray Tune function trainable.

One epoch = one `tune.report` (ASHA's time unit), with a checkpoint holding everything needed to go on
exactly where it stopped: model, optimizer, LR schedule and the RNG streams of sampling, augmentation
and invariance measurement. The MLflow child run is found again by trial id, so a restored trial
continues its own run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from ray import tune

from gitune.config import (TrialConfig, as_dict, check_augmentation_sources, flatten, has_nuisance,
                           resolve_trial_config, typed_config)
from gitune.errors import UserError
from gitune.data.augment import normalize, random_crop, random_flip, standard_augment, to_float
from gitune.data.dataset import LongTailData, build_dataset
from gitune.data.loader import DeviceLoader, iterate_in_order
from gitune.data.nuisances import apply_nuisance
from gitune.metrics.accuracy import classification_metrics, class_key
from gitune.metrics.geed import measure_extra_invariance
from gitune.metrics.invariance import measure_invariance
from gitune.models import count_parameters, create_model
from gitune.training.git import GitAugmenter, generator_transform, load_generator
from gitune.training.compute import (Compute, cudnn_autotune, full_precision, resolve_compute,
                                    set_deterministic)
from gitune.training.losses import build_loss, needs_cosine_head
from gitune.training.rules import rule_at_epoch
from gitune.training.schedule import build_optimizer, build_scheduler
from gitune.tracking import TrackingContext, dataset_input, run_name
from gitune.trial_run import LOGGED_ALL, TrialRun
from gitune.trainables.checkpoint import newest_checkpoint, restore_state, save_state, state_of
from gitune.trainables.diverged import end_diverged
from gitune.trainables.reporting import report_step


@dataclass
class Batches:
    """An evaluation split held on the trial's device (uint8 images, or floats for invariance)."""

    images: torch.Tensor
    labels: torch.Tensor


log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    """The GPU Ray granted this trial, else the CPU: a trial with resources.gpu 0 must not share a GPU
    that the scheduler gave to other trials, however visible it is."""
    import ray

    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []  # get_gpu_ids would start a Ray otherwise
    device = choose_device(gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"), torch.cuda.is_available())
    if gpu_ids and device.type == "cpu":
        log.warning("Ray assigned GPU(s) %s but torch sees no CUDA device: the trial runs on the CPU", gpu_ids)
    return device


def choose_device(gpu_ids, cuda_visible: str | None, cuda_available: bool) -> torch.device:
    """cuda:<local index> of the first GPU in `gpu_ids` (ray.get_gpu_ids()), or the CPU when none is assigned.
    Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPUs, so the local index is the id's position there
    (the id itself when the variable is unset), as in ray.train.torch.get_device."""
    if not gpu_ids or not cuda_available:
        return torch.device("cpu")
    gpu_id = str(gpu_ids[0])
    visible = [v.strip() for v in cuda_visible.split(",")] if cuda_visible not in (None, "", "NoDevFiles") else []
    if not visible:
        return torch.device("cuda", int(gpu_id))
    if gpu_id not in visible:
        raise RuntimeError(f"Ray assigned GPU {gpu_id}, which CUDA_VISIBLE_DEVICES={cuda_visible} does not list")
    return torch.device("cuda", visible.index(gpu_id))


def _preprocess(data: LongTailData, device: torch.device, compute: Compute | None = None):
    mean = torch.tensor(data.mean, device=device)
    std = torch.tensor(data.std, device=device)

    def preprocess(x01: torch.Tensor) -> torch.Tensor:
        x = normalize(x01, mean, std)
        return compute.input(x) if compute is not None else x

    return preprocess


def _invariance_transform(data: LongTailData, generator: torch.Generator):
    """T for eKLD: the dataset's own nuisance where it has one, else standard augmentation (docs/method.md, measuring invariance)."""
    if data.nuisance and any(data.nuisance.values()):
        return lambda x: apply_nuisance(x, data.nuisance, generator)
    return lambda x: standard_augment(x, generator)


@torch.no_grad()
def evaluate(model, split: Batches, preprocess, batch_size: int, counts: list[int],
             prefix: str) -> dict[str, float]:
    """Accuracy metrics and mean CE loss on a whole split, batched; one host sync at the end. In fp32 even
    inside an autocast region, so that the numbers do not depend on the training precision."""
    was_training = model.training
    model.eval()
    preds, loss_sum = [], torch.zeros((), device=split.labels.device)
    with full_precision(split.labels.device):
        for xb, y in iterate_in_order(split.images, split.labels, batch_size):
            logits = model(preprocess(to_float(xb)))
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            preds.append(logits.argmax(1))
    model.train(was_training)
    out = classification_metrics(torch.cat(preds).cpu(), split.labels.cpu(), counts, prefix)
    out[f"{prefix}/loss"] = float(loss_sum) / max(1, len(split.labels))
    return out


def train_epoch(model, loader: DeviceLoader, sampler: str, loss_fn, optimizer, preprocess,
                crop_pad: int, flip: bool, generator: torch.Generator,
                mixers: list[GitAugmenter] = (), compute: Compute | None = None) -> dict[str, float]:
    """One pass over the epoch's sampled indices; losses accumulate on the device (no per-step sync).

    Each mixer (GIT, the oracle) replaces its own range of batch positions before crop/flip. `compute`
    adds autocast around the forward pass and loss only (bf16 on CUDA by default), so the images the model
    sees (mixers, the generator, crop/flip) are those of an fp32 run; `model` may be compiled."""
    autocast = compute.autocast if compute is not None else contextlib.nullcontext
    model.train()
    loss_sum = torch.zeros((), device=loader.device)
    correct = torch.zeros((), device=loader.device, dtype=torch.long)
    seen = 0
    if loader.device.type == "cuda":  # the peak is per epoch: what this epoch needed, not the trial so far
        torch.cuda.reset_peak_memory_stats(loader.device)
    start = time.perf_counter()
    for xb, yb in loader.batches(sampler):
        x = to_float(xb)
        offset = 0  # each mixer takes the batch positions after the previous one's
        for mixer in mixers:
            x, yb = mixer.apply(x, yb, offset)
            offset += mixer.count(len(yb))
        if crop_pad:
            x = random_crop(x, crop_pad, generator)
        if flip:
            x = random_flip(x, generator)
        x = preprocess(x)
        with autocast():
            logits = model(x)
            loss = loss_fn(logits.float(), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += len(yb)
    if loader.device.type == "cuda":
        torch.cuda.synchronize(loader.device)
    elapsed = time.perf_counter() - start
    loss_value = float(loss_sum) / max(1, seen)
    out = {"train/loss": loss_value, "train/acc": float(correct) / max(1, seen),
           "perf/img_per_s": seen / max(elapsed, 1e-9), "perf/epoch_s": elapsed}
    if loader.device.type == "cuda":  # what packing trials on one GPU has to fit
        out["perf/gpu_mem_peak_gb"] = gpu_mem_peak_gb(loader.device)
    return out


def gpu_mem_peak_gb(device: torch.device) -> float:
    """Peak memory the caching allocator reserved on `device` since the last reset: what the process holds
    on the GPU (allocated memory misses the allocator's cached blocks and fragmentation)."""
    return torch.cuda.max_memory_reserved(device) / 2**30


def trial_cpus(train: Any) -> int | None:
    """CPUs this trial may use (`train`: the typed train block): train.threads, else the CPUs Ray assigned to
    it (None outside Ray)."""
    if train.threads:
        return int(train.threads)
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            return max(1, int(cpus)) if cpus else None
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return None
    return None


def _parts(model, optimizer, scheduler) -> dict[str, Any]:
    """What a classifier checkpoint holds besides its epoch and RNG streams (gitune/trainables/checkpoint.py)."""
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler}


def _state(model, optimizer, scheduler, gens: dict[str, torch.Generator], epoch: int) -> dict[str, Any]:
    return state_of(_parts(model, optimizer, scheduler), gens, epoch=epoch)


# Appended, never reordered: a stream's seed is its position, so old streams keep their numbers.
RNG_STREAMS = ("sample", "augment", "invariance", "git", "invariance_gen", "oracle", "invariance_extra")
EXTRA_METRICS = ("geed", "latent_geed", "rep_ratio")


def stream_seed(seed: int, index: int, epoch: int = 0) -> int:
    """Seed of RNG stream `index` (position in RNG_STREAMS) of a trial with train.seed `seed`; `epoch` > 0
    gives the fresh streams of a trial restored at that epoch on another device type (an odd 32-bit step
    per epoch: the CPU generator seeds its Mersenne Twister from the low 32 bits only)."""
    return seed * 1000 + index + (epoch * 0x9E3779B1) % 2**32


def _restore(checkpoint, model, optimizer, scheduler, gens: dict[str, torch.Generator], seed: int) -> int:
    return restore_state(checkpoint, _parts(model, optimizer, scheduler), gens, "epoch",
                         lambda epoch: {name: stream_seed(seed, i, epoch) for i, name in enumerate(RNG_STREAMS)
                                        if name in gens})


def _log_per_class(run: TrialRun, data: LongTailData, metrics: dict[str, float], inv: dict[str, float],
                   epoch: int) -> None:
    """Plots of accuracy and eKLD against class size and the per-class CSV, overwritten at each
    measurement so a trial stopped early by ASHA still carries the latest ones."""
    from gitune import plots

    counts, C = data.class_counts, data.num_classes
    acc = [metrics.get(f"val/class_acc/{class_key(c)}", float("nan")) for c in range(C)]
    ekld = [inv.get(f"inv/ekld/{class_key(c)}", float("nan")) for c in range(C)]
    cons = [inv.get(f"inv/consistency/{class_key(c)}", float("nan")) for c in range(C)]
    columns = {"val_acc": acc, "ekld": ekld, "consistency": cons}
    for name in EXTRA_METRICS:
        if f"inv/{name}_mean" in inv:
            columns[name] = [inv.get(f"inv/{name}/{class_key(c)}", float("nan")) for c in range(C)]
    figs = {
        "plots/ekld_vs_class_size.png": plots.per_class_vs_size(
            counts, ekld, "eKLD (nats, lower = more invariant)", f"Invariance vs class size, epoch {epoch}"),
        "plots/class_acc_vs_class_size.png": plots.per_class_vs_size(
            counts, acc, "validation accuracy", f"Per-class accuracy vs class size, epoch {epoch}"),
    }
    if "inv/ekld_gen_mean" in inv:
        columns["ekld_gen"] = [inv.get(f"inv/ekld_gen/{class_key(c)}", float("nan")) for c in range(C)]
        columns["consistency_gen"] = [inv.get(f"inv/consistency_gen/{class_key(c)}", float("nan"))
                                      for c in range(C)]
        figs["plots/ekld_gen_vs_class_size.png"] = plots.per_class_vs_size(
            counts, columns["ekld_gen"], "eKLD under the generator (nats)",
            f"Invariance to generated nuisances vs class size, epoch {epoch}")
    for path, fig in figs.items():
        run.log_figure(fig, path)
        plots.close(fig)
    table = plots.per_class_csv(counts, data.class_names, columns)
    run.log_text(table, "per_class.csv")


@dataclass
class Trial:
    """Everything one classifier trial trains with, built the same way for Tune trials and bare loops."""

    cfg: TrialConfig  # typed: cfg.train.epochs (gitune.config.typed_config)
    device: torch.device
    data: LongTailData
    compute: Compute
    model: torch.nn.Module  # the plain module: evaluation, metric hooks, checkpoints
    net: Any  # what trains: the model, or torch.compile(model)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: Any
    gens: dict[str, torch.Generator]
    loader: DeviceLoader
    val: Batches
    preprocess: Any
    crop_pad: int
    flip: bool
    mixers: list[GitAugmenter]
    inv_set: Batches
    inv_transform: Any
    extra_transform: Any  # None when the extra invariance metrics are off
    gen_model: Any


def build_trial(config: dict[str, Any], device: torch.device, generator: dict[str, Any] | None = None) -> Trial:
    """Data, model, optimizer, schedule, loss, RNG streams, loader and mixers of one trial, from its config
    (the dict Tune sampled): typed once here, after its derived defaults are filled in."""
    cfg = typed_config(resolve_trial_config(config))
    tr, ev, opt, gc, oracle_prob = cfg.train, cfg.eval, cfg.optim, cfg.git, cfg.aug.oracle_prob
    check_augmentation_sources([gc.prob], [oracle_prob], generator is not None, has_nuisance(as_dict(cfg)))
    if tr.threads:
        torch.set_num_threads(tr.threads)
    set_deterministic(bool(tr.deterministic))  # before any CUDA work
    data = build_dataset(as_dict(cfg.data))
    counts, C = data.class_counts, data.num_classes
    crop_pad = tr.crop_pad if tr.crop_pad is not None else (4 if data.natural else 0)
    flip = tr.flip if tr.flip is not None else data.natural

    torch.manual_seed(tr.seed)
    compute = resolve_compute(as_dict(tr), device)
    cudnn_autotune(bool(tr.deterministic))
    model = compute.prepare(create_model(cfg.model.arch, C, data.image_shape[0],
                                         cosine_head=needs_cosine_head(tr.loss), cosine_scale=tr.ldam_s).to(device))
    optimizer = build_optimizer(model, opt.lr, opt.momentum, opt.weight_decay, opt.nesterov)
    scheduler = build_scheduler(optimizer, opt.warmup_epochs, opt.milestones, opt.gamma)
    loss_fn = build_loss(tr.loss, counts, focal_gamma=tr.focal_gamma, ldam_max_m=tr.ldam_max_m,
                         ldam_s=tr.ldam_s, la_tau=tr.la_tau).to(device)
    gens = {name: torch.Generator(device=device).manual_seed(stream_seed(tr.seed, i))
            for i, name in enumerate(RNG_STREAMS)}
    loader = DeviceLoader(data.train, tr.batch_size, device, gens["sample"], drop_last=compute.compile)
    inv_set = _invariance_subset(data, ev.inv_images_per_class, device)
    extra = ev.extra_invariance and ev.inv_transforms >= 2 and len(inv_set.labels) >= 2
    if extra:
        check_layer(model, ev.latent_layer)
    gen_model = None
    mixers: list[GitAugmenter] = []
    if generator is not None:
        gen_model = compute.prepare(load_generator(generator, device, data.image_shape))
        if gc.prob > 0:
            mixers.append(GitAugmenter(gen_model, gc.prob, gc.start_epoch, counts, gc.class_threshold, gc.sampler,
                                       loader.images, loader.labels, loader.epoch_indices, gens["git"]))
    if oracle_prob > 0:
        # GIT with the true nuisance in the generator's place, on the untransformed training originals.
        clean = loader.images if data.clean_train is data.train else data.clean_train.images.to(device)
        mixers.append(GitAugmenter(lambda x01, rng: apply_nuisance(x01, data.nuisance, rng), oracle_prob,
                                   gc.start_epoch, counts, gc.class_threshold, gc.sampler, clean,
                                   loader.labels, loader.epoch_indices, gens["oracle"], prefix="oracle"))
    return Trial(cfg, device, data, compute, model, compute.compiled(model, trial_cpus(tr)), optimizer, scheduler, loss_fn, gens,
                 loader, Batches(data.val.images.to(device), data.val.labels.to(device)),
                 _preprocess(data, device, compute), crop_pad, flip, mixers, inv_set,
                 _invariance_transform(data, gens["invariance"]),
                 _invariance_transform(data, gens["invariance_extra"]) if extra else None, gen_model)


def train_one_epoch(t: Trial, epoch: int) -> dict[str, Any]:
    """One epoch (0-based) of training with the rule's sampler and weights, the mixers, and the LR step."""
    tr = t.cfg.train
    sampler, weights = rule_at_epoch(tr.rule, epoch, t.data.class_counts, tr.deferred_epoch, tr.beta)
    t.loss_fn.set_weight(None if weights is None else weights.to(t.device))
    metrics: dict[str, Any] = {"epoch": epoch + 1, "lr": t.optimizer.param_groups[0]["lr"]}
    for mixer in t.mixers:
        mixer.begin_epoch(epoch, sampler)
    metrics.update(train_epoch(t.net, t.loader, sampler, t.loss_fn, t.optimizer, t.preprocess, t.crop_pad, t.flip,
                               t.gens["augment"], t.mixers, t.compute))
    for mixer in t.mixers:
        metrics.update(mixer.metrics())
    t.scheduler.step()
    return metrics


def evaluate_epoch(t: Trial, done: int, rungs: set[int] = frozenset()) -> tuple[dict[str, Any], dict[str, float]]:
    """After `done` epochs: validation metrics, invariance when due (every eval.inv_interval epochs, at the
    last epoch and at the ASHA rungs) and the test metrics at the last epoch, all in fp32 whatever
    train.precision is. Returns (every metric, the invariance metrics alone)."""
    ev, counts, epochs = t.cfg.eval, t.data.class_counts, t.cfg.train.epochs
    metrics = evaluate(t.model, t.val, t.preprocess, ev.batch_size, counts, "val")
    inv: dict[str, float] = {}
    if ev.inv_interval and (done % ev.inv_interval == 0 or done == epochs or done in rungs):
        inv = _measure(t.model, t.inv_set, t.preprocess, t.data.num_classes, counts, ev, t.inv_transform,
                       t.extra_transform, t.gen_model, t.gens)
        metrics.update(inv)
    if done == epochs:
        test = Batches(t.data.test.images.to(t.device), t.data.test.labels.to(t.device))
        metrics.update(evaluate(t.model, test, t.preprocess, ev.batch_size, counts, "test"))
    return metrics, inv


def train_classifier(config: dict[str, Any], tracking: TrackingContext | None = None,
                     invariance_epochs: Iterable[int] = (), generator: dict[str, Any] | None = None,
                     metric: str | None = None) -> None:
    """Train one classifier trial; `invariance_epochs` adds measurement epochs (the ASHA rungs); `metric` is
    the sweep's (reported as NaN when the trial diverges, gitune.trainables.diverged).

    `generator` is the generator stage's payload (weights + architecture, sent once through the object
    store): it drives GIT when git.prob > 0 and the generator eKLD (inv/ekld_gen/*) in every trial."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    t = build_trial(config, pick_device(), generator)
    cfg, data, model, optimizer, scheduler, gens = t.cfg, t.data, t.model, t.optimizer, t.scheduler, t.gens
    tr, compute = cfg.train, t.compute
    counts, C, device = data.class_counts, data.num_classes, t.device

    start_epoch = 0
    checkpoint = newest_checkpoint(tune.get_checkpoint(), "epoch")
    if checkpoint is not None:
        start_epoch = _restore(checkpoint, model, optimizer, scheduler, gens, tr.seed)

    run = None
    ctx = tune.get_context()
    if tracking is not None:
        params = flatten(as_dict(cfg))  # the resolved config, as MLflow params
        params.update({"data/train_images": sum(counts), "data/num_classes": C,
                       "model/parameters": count_parameters(model), **compute.describe()})
        if generator is not None:
            params["generator/key"] = generator.get("key", "")
            params["generator/source"] = generator.get("source", "")
        # Where this attempt runs (node, worker process): updated when a restored trial reopens its run.
        where = {"gitune.node_id": _node_id(), "gitune.pid": str(os.getpid())}
        run = TrialRun.open(tracking, ctx.get_trial_id(), run_name(tracking, ctx.get_trial_id(), config), params,
                            tags={"stage": "classifier", **where, LOGGED_ALL: "false"}, checkpoint=checkpoint)
        run.log_input(**dataset_input(as_dict(cfg.data), counts, data.image_shape, data.class_names))
        if start_epoch > 0:
            run.log_metrics({"trial/resumed_at_epoch": start_epoch}, step=start_epoch)
        else:
            run.log_text("\n".join(f"{class_key(c)},{data.class_names[c]},{n}" for c, n in enumerate(counts)),
                         "class_counts.csv")

    epochs = tr.epochs
    rungs = set(int(e) for e in invariance_epochs)
    for epoch in range(start_epoch, epochs):
        metrics = train_one_epoch(t, epoch)
        if not math.isfinite(metrics["train/loss"]):
            end_diverged(run, metric, f"train/loss became {metrics['train/loss']} at epoch {epoch + 1}",
                         {"epoch": epoch + 1})
            return
        done = epoch + 1
        evaluated, inv = evaluate_epoch(t, done, rungs)
        metrics.update(evaluated)
        if device.type == "cuda":  # reset when the epoch began: training, evaluation and measurement
            metrics["perf/gpu_mem_peak_gb"] = gpu_mem_peak_gb(device)
        if run is not None:  # queued: sent once Tune holds the checkpoint of this epoch (report_step)
            run.log_metrics(metrics, step=done)
            if inv:
                _log_per_class(run, data, metrics, inv, done)
        report_step(metrics, lambda d: save_state(d, _parts(model, optimizer, scheduler), gens, epoch=done),
                    f"epoch {done}", run)
    if run is not None:
        run.finish("FINISHED")


def _node_id() -> str:
    import ray

    try:
        return ray.get_runtime_context().get_node_id() or ""
    except Exception:  # noqa: BLE001 - outside Ray (direct calls in tests)
        return ""


def _measure(model, inv_set: Batches, preprocess, C: int, counts: list[int], ev: Any, transform,
             extra_transform, gen_model, gens: dict[str, torch.Generator]) -> dict[str, float]:
    """Every invariance metric of one measurement: eKLD/consistency under the nuisance T, G-EED, latent
    G-EED and the representation ratio (when `extra_transform`), and eKLD under the generator. In fp32
    (model, nuisances and generator) even inside an autocast region."""
    n, b = ev.inv_transforms, ev.batch_size
    with full_precision(inv_set.images.device):
        inv = measure_invariance(model, inv_set.images, inv_set.labels, transform, preprocess, n, C, counts,
                                 batch_size=b, prefix="inv")
        if extra_transform is not None:
            inv.update(measure_extra_invariance(model, inv_set.images, inv_set.labels, extra_transform, preprocess,
                                                n, C, counts, batch_size=b, prefix="inv", layer=ev.latent_layer,
                                                generator=gens["invariance_extra"]))
        if gen_model is not None:
            inv_gen = measure_invariance(model, inv_set.images, inv_set.labels,
                                         generator_transform(gen_model, gens["invariance_gen"]), preprocess, n, C,
                                         counts, batch_size=b, prefix="inv")
            inv.update(_as_generator_keys(inv_gen))
    return inv


def _as_generator_keys(inv: dict[str, float]) -> dict[str, float]:
    """inv/ekld/c007 → inv/ekld_gen/c007, inv/ekld_few → inv/ekld_gen_few, likewise for consistency."""
    out = {}
    for k, v in inv.items():
        for name in ("ekld", "consistency"):
            if k.startswith(f"inv/{name}"):
                k = f"inv/{name}_gen" + k[len(f"inv/{name}"):]
                break
        out[k] = v
    return out


def _invariance_subset(data: LongTailData, per_class: int, device: torch.device) -> Batches:
    """The first `per_class` validation images of each class (held out, so eKLD is not measured on
    images the model memorised), as floats in [0, 1] on the device. On a transformed dataset these are
    the untransformed originals, so x' = T(x) is one nuisance draw away from x (docs/method.md, long-tailed data; measuring invariance)."""
    labels = data.clean_val.labels
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(data.num_classes)])
    return Batches(to_float(data.clean_val.images[keep].to(device)), labels[keep].to(device))


def check_layer(model: torch.nn.Module, layer: str) -> None:
    """eval.latent_layer must name the penultimate features or a module of the model."""
    names = [n for n, _ in model.named_modules() if n]
    if layer != "features" and layer not in names:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        raise UserError(f"eval.latent_layer: {layer!r} is not a layer of this model (expected 'features' "
                        f"or a module name: {shown})")
