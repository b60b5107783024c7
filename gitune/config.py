"""The trial configuration: defaults and a validator for every key a trainable reads.

One table (SCHEMA) says, for each dotted key, what values are allowed. The spaces parser checks the
fixed values and every value a distribution can produce against it, so that a typo in a loss name or
a negative learning rate is caught before Ray starts, not in trial 37 after an hour.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

from gitune.errors import UserError

GROUPS = ("data", "model", "optim", "train", "aug", "git", "eval")  # a classifier trial's config
GENERATOR_GROUPS = ("data", "generator")  # a generator trial's config

DEFAULTS: dict[str, Any] = {
    "data": {
        "name": "glyphs",
        "root": "./data",
        "path": None,
        "download": True,
        "profile": "exp",
        "ratio": 100.0,
        "alpha": 2.0,
        "n_max": None,
        "n_min": 5,
        "num_classes": None,
        "image_size": None,
        "channels": None,
        "val_per_class": 50,
        "test_per_class": 100,
        "instance": 0,
        "seed": 0,
        "natural": None,
        "nuisance": {"rotation": 0.0, "background": 0, "stroke": False, "translate": 0},
        "nuisance_rank": None,
        "dataset": None,
        "subset": None,
    },
    "model": {"arch": "resnet32"},
    "optim": {
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 2e-4,
        "nesterov": False,
        "warmup_epochs": 5,
        "milestones": [160, 180],
        "gamma": 0.01,
    },
    "train": {
        "epochs": 200,
        "batch_size": 128,
        "loss": "ce",
        "rule": "erm",
        "deferred_epoch": None,
        "beta": 0.9999,
        "focal_gamma": 1.0,
        "ldam_max_m": 0.5,
        "ldam_s": 30.0,
        "la_tau": 1.0,
        "crop_pad": None,
        "flip": None,
        "seed": 0,
        "threads": None,
        "precision": "auto",
        "channels_last": None,
        "compile": False,
        "deterministic": False,
    },
    "aug": {
        "oracle_prob": 0.0,
    },
    "git": {
        "prob": 0.0,
        "start_epoch": 0,
        "class_threshold": None,
        "sampler": "same",
    },
    "eval": {
        "batch_size": 1024,
        "inv_interval": 10,
        "inv_images_per_class": 40,
        "inv_transforms": 100,
        "extra_invariance": True,
        "latent_layer": "features",
    },
}

# The generator stage's own keys (`generator:` block of a space file); docs/method.md, the generator sizes and losses.
# Not part of a classifier trial's config: classifier trials receive the trained weights instead.
GENERATOR_DEFAULTS: dict[str, Any] = {
    "dim": 64,
    "style_dim": 8,
    "n_downsample": 2,
    "n_res": 4,
    "mlp_dim": 256,
    "mlp_layers": 3,
    "disc_dim": 64,
    "disc_layers": 4,
    "disc_scales": 1,
    "iterations": 10000,
    "batch_size": 1,
    "lr": 1e-4,
    "beta1": 0.5,
    "beta2": 0.999,
    "weight_decay": 1e-4,
    "lr_step": 100000,
    "lr_gamma": 0.5,
    "w_gan": 1.0,
    "w_recon_x": 10.0,
    "w_recon_s": 1.0,
    "w_recon_c": 1.0,
    "report_every": 500,
    "grid_every": 2000,
    "fid_images": 128,  # held-out clean validation images for the fidelity metrics at every report
    "fid_draws": 4,  # styles (and nuisance draws) per image for them
    "seed": 0,
    "threads": None,
    # Compute of the generator stage, as train.precision / train.channels_last for classifier trials
    # (channels_last null: on CUDA). Precision stays fp32 by default: bf16 GAN training is opt-in ("auto" or
    # "bf16") until a GPU run has shown it reaches the fp32 generator's fid/* numbers.
    "precision": "fp32",
    "channels_last": None,
    # lr is the LR at batch 1 (the reference's batch); with a larger batch_size the LR used is
    # lr × batch_size (linear) or lr × √batch_size (sqrt), or lr itself (none).
    "lr_scaling": "none",
}

LR_SCALINGS = ("none", "linear", "sqrt")

DATASETS = ("glyphs", "cifar10", "cifar100", "npz", "imagefolder", "torchvision")


@dataclass(frozen=True)
class Check:
    """How one config key is validated: `test(value)` is False for a bad value; `expected` says why."""

    test: Callable[[Any], bool]
    expected: str
    numeric: str | None = None  # "int" or "float" when numeric distributions may sample this key


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def int_range(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Check:
    def test(v: Any) -> bool:
        if v is None:
            return nullable
        return _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)

    return Check(test, _describe("an integer", lo, hi, nullable), "int")


def float_range(lo: float | None = None, hi: float | None = None, nullable: bool = False,
                lo_open: bool = False) -> Check:
    def test(v: Any) -> bool:
        if v is None:
            return nullable
        if not _is_num(v):
            return False
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return False
        return hi is None or v <= hi

    return Check(test, _describe("a number", lo, hi, nullable, lo_open), "float")


def one_of(*names: str, nullable: bool = False) -> Check:
    text = "one of: " + ", ".join(names) + (" (or null)" if nullable else "")
    return Check(lambda v: (v is None and nullable) or v in names, text)


def boolean(nullable: bool = False) -> Check:
    return Check(lambda v: isinstance(v, bool) or (v is None and nullable),
                 "true or false" + (" (or null)" if nullable else ""))


def string(nullable: bool = False) -> Check:
    return Check(lambda v: isinstance(v, str) and v != "" or (v is None and nullable),
                 "a non-empty string" + (" (or null)" if nullable else ""))


def int_list() -> Check:
    return Check(lambda v: isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)
                 and v == sorted(v), "an ascending list of non-negative integers")


def _describe(kind: str, lo: Any, hi: Any, nullable: bool, lo_open: bool = False) -> str:
    bounds = ([f"{'>' if lo_open else '≥'} {lo}"] if lo is not None else []) + ([f"≤ {hi}"] if hi is not None else [])
    return kind + (" " + " and ".join(bounds) if bounds else "") + (" (or null)" if nullable else "")


def _schema() -> dict[str, Check]:
    # Name lists come from the modules that implement them, so adding a loss adds it here too.
    from gitune.data.profiles import PROFILES
    from gitune.models import MODEL_NAMES
    from gitune.training.losses import LOSSES
    from gitune.training.git import GIT_SAMPLERS
    from gitune.training.rules import RULES

    return {
        "data.name": one_of(*DATASETS),
        "data.root": string(),
        "data.path": string(nullable=True),
        "data.download": boolean(),
        "data.profile": one_of(*PROFILES),
        "data.ratio": float_range(1.0),
        "data.alpha": float_range(0.0, lo_open=True),
        "data.n_max": int_range(1, nullable=True),
        "data.n_min": int_range(1),
        "data.num_classes": int_range(2, 1000, nullable=True),
        "data.image_size": int_range(16, 512, nullable=True),
        "data.channels": Check(lambda v: v in (None, 1, 3), "1 or 3 (or null)"),
        "data.val_per_class": int_range(1),
        "data.test_per_class": int_range(1),
        "data.instance": int_range(0),
        "data.seed": int_range(0),
        "data.natural": boolean(nullable=True),
        "data.nuisance.rotation": float_range(0.0, 180.0),
        "data.nuisance.background": int_range(0, 255),
        "data.nuisance.stroke": boolean(),
        "data.nuisance.translate": int_range(0, 16),
        "data.nuisance_rank": int_range(1, nullable=True),
        "data.dataset": string(nullable=True),
        "data.subset": string(nullable=True),
        "model.arch": one_of(*MODEL_NAMES),
        "optim.lr": float_range(0.0, 10.0, lo_open=True),
        "optim.momentum": float_range(0.0, 1.0),
        "optim.weight_decay": float_range(0.0, 1.0),
        "optim.nesterov": boolean(),
        "optim.warmup_epochs": int_range(0),
        "optim.milestones": int_list(),
        "optim.gamma": float_range(0.0, 1.0, lo_open=True),
        "train.epochs": int_range(1, 100_000),
        "train.batch_size": int_range(1, 65_536),
        "train.loss": one_of(*LOSSES),
        "train.rule": one_of(*RULES),
        "train.deferred_epoch": int_range(0, nullable=True),
        "train.beta": float_range(0.0, 1.0),
        "train.focal_gamma": float_range(0.0),
        "train.ldam_max_m": float_range(0.0, lo_open=True),
        "train.ldam_s": float_range(0.0, lo_open=True),
        "train.la_tau": float_range(0.0),
        "train.crop_pad": int_range(0, 64, nullable=True),
        "train.flip": boolean(nullable=True),
        "train.seed": int_range(0),
        "train.threads": int_range(1, 1024, nullable=True),
        "train.precision": one_of("auto", "fp32", "bf16"),
        "train.channels_last": boolean(nullable=True),
        "train.compile": boolean(),
        "train.deterministic": boolean(),
        "aug.oracle_prob": float_range(0.0, 1.0),
        "git.prob": float_range(0.0, 1.0),
        "git.start_epoch": int_range(0),
        "git.class_threshold": int_range(1, nullable=True),
        "git.sampler": one_of(*GIT_SAMPLERS),
        "eval.batch_size": int_range(1, 65_536),
        "eval.inv_interval": int_range(0),
        "eval.inv_images_per_class": int_range(1),
        "eval.inv_transforms": int_range(1),
        "eval.extra_invariance": boolean(),
        "eval.latent_layer": string(),
        "generator.dim": int_range(1, 1024),
        "generator.style_dim": int_range(1, 1024),
        "generator.n_downsample": int_range(0, 5),
        "generator.n_res": int_range(0, 32),
        "generator.mlp_dim": int_range(1, 4096),
        "generator.mlp_layers": int_range(2, 16),
        "generator.disc_dim": int_range(1, 1024),
        "generator.disc_layers": int_range(1, 8),
        "generator.disc_scales": int_range(1, 4),
        "generator.iterations": int_range(1, 10_000_000),
        "generator.batch_size": int_range(1, 4096),
        "generator.lr": float_range(0.0, 1.0, lo_open=True),
        "generator.beta1": float_range(0.0, 1.0),
        "generator.beta2": float_range(0.0, 1.0),
        "generator.weight_decay": float_range(0.0, 1.0),
        "generator.lr_step": int_range(1),
        "generator.lr_gamma": float_range(0.0, 1.0, lo_open=True),
        "generator.w_gan": float_range(0.0),
        "generator.w_recon_x": float_range(0.0),
        "generator.w_recon_s": float_range(0.0),
        "generator.w_recon_c": float_range(0.0),
        "generator.report_every": int_range(1),
        "generator.grid_every": int_range(0),
        "generator.fid_images": int_range(1, 100_000),
        "generator.fid_draws": int_range(2, 64),
        "generator.seed": int_range(0),
        "generator.threads": int_range(1, 1024, nullable=True),
        "generator.precision": one_of("auto", "fp32", "bf16"),
        "generator.channels_last": boolean(nullable=True),
        "generator.lr_scaling": one_of(*LR_SCALINGS),
    }


_SCHEMA: dict[str, Check] | None = None


def schema() -> dict[str, Check]:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = _schema()
    return _SCHEMA


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict → {dotted.key: leaf}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for p in key.split("."):
        node = node[p]
    return node


def merge_config(user: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """Defaults overlaid with the user's values; unknown keys are errors (typos must not pass silently)."""
    cfg = copy.deepcopy(DEFAULTS)
    if user is None:
        return cfg
    if not isinstance(user, dict):
        raise UserError(f"{where}: expected a mapping of groups ({', '.join(GROUPS)})")
    for key, value in flatten(user).items():
        check_key(key, f"{where}.{key}")
        set_dotted(cfg, key, value)
    return cfg


def merge_generator_config(user: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """GENERATOR_DEFAULTS overlaid with a `generator.config` block (keys without the `generator.` prefix)."""
    cfg = copy.deepcopy(GENERATOR_DEFAULTS)
    if user is None:
        return cfg
    if not isinstance(user, dict):
        raise UserError(f"{where}: expected a mapping of generator keys ({', '.join(GENERATOR_DEFAULTS)})")
    for key, value in user.items():
        check_value(f"generator.{key}", value, f"{where}.{key}", groups=("generator",))
        cfg[key] = value
    return cfg


def check_key(key: str, where: str, groups: tuple[str, ...] = GROUPS) -> Check:
    sch = schema()
    group = key.split(".")[0]
    if key in sch and group in groups:
        return sch[key]
    if group not in groups:
        raise UserError(f"{where}: unknown group '{group}' (expected one of: {', '.join(groups)})")
    known = sorted(k for k in sch if k.startswith(group + "."))
    raise UserError(f"{where}: unknown key (known keys in '{group}': {', '.join(known)})")


def check_value(key: str, value: Any, where: str, groups: tuple[str, ...] = GROUPS) -> None:
    chk = check_key(key, where, groups)
    if not chk.test(value):
        raise UserError(f"{where}: expected {chk.expected}, got {value!r}")


def validate_config(cfg: dict[str, Any], where: str, tuned: set[str] = frozenset()) -> None:
    """Check every value, then the cross-key rules that single values cannot express."""
    flat = flatten(cfg)
    for key, value in flat.items():
        if key not in tuned:
            check_value(key, value, f"{where}.{key}")
    data = cfg["data"]
    if "data.name" not in tuned:
        if data["name"] in ("npz", "imagefolder") and not data["path"]:
            raise UserError(f"{where}.data.path: data.name '{data['name']}' needs data.path "
                            f"({'an .npz file' if data['name'] == 'npz' else 'an image folder'})")
    opt = cfg["optim"]
    tr = cfg["train"]
    if not tuned & {"optim.warmup_epochs", "train.epochs"} and opt["warmup_epochs"] > tr["epochs"]:
        raise UserError(f"{where}.optim.warmup_epochs: expected ≤ train.epochs ({tr['epochs']}), "
                        f"got {opt['warmup_epochs']}")


def resolve_trial_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill the values whose defaults depend on other keys (done in the trial, after sampling)."""
    cfg = copy.deepcopy(cfg)
    tr, opt = cfg["train"], cfg["optim"]
    if tr["deferred_epoch"] is None:
        tr["deferred_epoch"] = opt["milestones"][0] if opt["milestones"] else int(tr["epochs"] * 0.8)
    return cfg
