"""Name → implementation registries, and the names a config key may take, without importing the implementations.

Each map sends a name to "module.path:function"; `resolve(kind, name)` imports the module only when the name
is used, so config checks (gitune.config.KEYS), docs/config.md and the space-file JSON Schema read the names
without torch, and `python -m gitune.sweep --schema` stays fast. Adding a data source, a model or a loss is its
module plus one line here. The name collections are live views of the maps' keys (so an entry added at run
time, e.g. by a test, is a known name), and iterate in the order the maps list them.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

# data.name → load(cfg) with the validated `data` group: RawData (images in source order, which
# gitune.data.dataset.build_dataset turns into the long tail), or a finished LongTailData for a source that
# renders its own splits (glyphs).
SOURCES = {
    "glyphs": "gitune.data.dataset:build_glyphs",
    "cifar10": "gitune.data.sources:load_cifar",
    "cifar100": "gitune.data.sources:load_cifar",
    "npz": "gitune.data.sources:load_npz",
    "imagefolder": "gitune.data.sources:load_imagefolder",
    "tinyimagenet": "gitune.data.sources:load_tinyimagenet",
    "torchvision": "gitune.data.torchvision_source:load",
}
# data.name → check(cfg): the optional cheap preflight before Ray starts (files there and well formed).
SOURCE_CHECKS = {
    "cifar10": "gitune.data.sources:check_cifar",
    "cifar100": "gitune.data.sources:check_cifar",
    "npz": "gitune.data.sources:check_npz",
    "imagefolder": "gitune.data.sources:check_imagefolder",
    "tinyimagenet": "gitune.data.sources:check_tinyimagenet",
    "torchvision": "gitune.data.torchvision_source:check",
}
# model.arch → build(arch, num_classes, in_channels, cosine_head, cosine_scale); one builder may serve a family.
MODELS = {
    "small_cnn": "gitune.models:build_small_cnn",
    "resnet20": "gitune.models.resnet:resnet",
    "resnet32": "gitune.models.resnet:resnet",
    "resnet44": "gitune.models.resnet:resnet",
    "resnet56": "gitune.models.resnet:resnet",
}
# train.loss → build(class_counts, weight, **the train.* loss hyperparameters); each takes the ones it uses.
LOSS_FUNCTIONS = {
    "ce": "gitune.training.losses:cross_entropy",
    "ldam": "gitune.training.losses:ldam",
    "focal": "gitune.training.losses:focal",
    "logit_adjusted": "gitune.training.losses:logit_adjusted",
}
_KINDS = {"source": SOURCES, "source_check": SOURCE_CHECKS, "model": MODELS, "loss": LOSS_FUNCTIONS}

DATASETS = SOURCES.keys()  # data.name: gitune.data.sources / gitune.data.dataset.build_dataset
MODEL_NAMES = MODELS.keys()  # model.arch: gitune.models.create_model
LOSSES = LOSS_FUNCTIONS.keys()  # train.loss: gitune.training.losses.build_loss

# Names whose implementations dispatch on them directly (no registry map).
RULES = ("erm", "resample", "reweight", "drw", "drs")  # gitune.training.rules
GIT_SAMPLERS = ("same", "balanced")  # gitune.training.git
PROFILES = ("exp", "step", "zipf", "none")  # gitune.data.profiles.class_counts


def resolve(kind: str, name: str) -> Callable[..., Any]:
    """The implementation registered as `name` under `kind` ("source", "source_check", "model", "loss"),
    imported now: callers check the name against the config key first, so a KeyError here is a bug."""
    module, _, attr = _KINDS[kind][name].partition(":")
    return getattr(importlib.import_module(module), attr)
