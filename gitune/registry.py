"""The names a config key may take, per kind of implementation, without importing the implementations.

Config checks (gitune.config.KEYS), docs/config.md and the space-file JSON Schema read these tuples; the
modules that implement the names import their tuple from here and dispatch on it. So `python -m gitune.sweep
--schema` and the spec checks run without importing torch, and adding a loss is its code plus one name here.
"""

MODEL_NAMES = ("small_cnn", "resnet20", "resnet32", "resnet44", "resnet56")  # gitune.models.create_model
LOSSES = ("ce", "ldam", "focal", "logit_adjusted")  # gitune.training.losses.build_loss
RULES = ("erm", "resample", "reweight", "drw", "drs")  # gitune.training.rules
GIT_SAMPLERS = ("same", "balanced")  # gitune.training.git
DATASETS = ("glyphs", "cifar10", "cifar100", "npz", "imagefolder", "torchvision")  # gitune.data.sources.SOURCES
PROFILES = ("exp", "step", "zipf", "none")  # gitune.data.profiles.class_counts
