"""The trial configuration: defaults and a validator for every key a trainable reads.

One table (KEYS) declares each dotted key once: its default, its check (what values are allowed) and a
one-line doc. DEFAULTS, GENERATOR_DEFAULTS, schema(), docs/config.md and the space-file JSON Schema
(gitune.config_doc) are derived from it. The spaces parser checks the fixed values and every value a
distribution can produce against it, so that a typo in a loss name or a negative learning rate is caught
before Ray starts, not in trial 37 after an hour. The names a key may take (losses, models, ...) come from
gitune.registry, so this module imports no implementation (and no torch).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from gitune.errors import UserError, shown
from gitune.munit_defaults import MUNIT_DEFAULTS
from gitune.registry import DATASETS, GIT_SAMPLERS, LOSSES, MODEL_NAMES, PROFILES, RULES

GROUPS = ("data", "model", "optim", "train", "aug", "git", "eval")  # a classifier trial's config
GENERATOR_GROUPS = ("data", "generator")  # a generator trial's config

LR_SCALINGS = ("none", "linear", "sqrt")


@dataclass(frozen=True)
class Check:
    """How one config key is validated: `test(value)` is False for a bad value; `expected` says why."""

    test: Callable[[Any], bool]
    expected: str
    numeric: str | None = None  # "int" or "float" when numeric distributions may sample this key
    # The same rule as a JSON Schema fragment (for `python -m gitune.sweep --schema`); {} = anything.
    json: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def _json(kind: str | None, nullable: bool, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {} if kind is None else {"type": [kind, "null"] if nullable else kind}
    return {**out, **{k: v for k, v in more.items() if v is not None}}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def int_range(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Check:
    def test(v: Any) -> bool:
        if v is None:
            return nullable
        return _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)

    return Check(test, _describe("an integer", lo, hi, nullable), "int",
                 _json("integer", nullable, minimum=lo, maximum=hi))


def float_range(lo: float | None = None, hi: float | None = None, nullable: bool = False,
                lo_open: bool = False, hi_open: bool = False) -> Check:
    def test(v: Any) -> bool:
        if v is None:
            return nullable
        if not _is_num(v):
            return False
        if lo is not None and (v < lo or (lo_open and v == lo)):
            return False
        return hi is None or v < hi or (v == hi and not hi_open)

    bounds = {"exclusiveMinimum" if lo_open else "minimum": lo, "exclusiveMaximum" if hi_open else "maximum": hi}
    return Check(test, _describe("a number", lo, hi, nullable, lo_open, hi_open), "float",
                 _json("number", nullable, **bounds))


def one_of(*names: str, nullable: bool = False) -> Check:
    text = "one of: " + ", ".join(names) + (" (or null)" if nullable else "")
    return Check(lambda v: (v is None and nullable) or v in names, text,
                 json={"enum": list(names) + ([None] if nullable else [])})


def boolean(nullable: bool = False) -> Check:
    return Check(lambda v: isinstance(v, bool) or (v is None and nullable),
                 "true or false" + (" (or null)" if nullable else ""), json=_json("boolean", nullable))


def string(nullable: bool = False) -> Check:
    return Check(lambda v: isinstance(v, str) and v != "" or (v is None and nullable),
                 "a non-empty string" + (" (or null)" if nullable else ""),
                 json=_json("string", nullable, minLength=1))


def int_list() -> Check:
    return Check(lambda v: isinstance(v, list) and all(_is_int(x) and x >= 0 for x in v)
                 and v == sorted(v), "an ascending list of non-negative integers",
                 json={"type": "array", "items": {"type": "integer", "minimum": 0}})


def _describe(kind: str, lo: Any, hi: Any, nullable: bool, lo_open: bool = False, hi_open: bool = False) -> str:
    bounds = (([f"{'>' if lo_open else '≥'} {lo}"] if lo is not None else [])
              + ([f"{'<' if hi_open else '≤'} {hi}"] if hi is not None else []))
    return kind + (" " + " and ".join(bounds) if bounds else "") + (" (or null)" if nullable else "")


@dataclass(frozen=True)
class Key:
    """One config key, declared once: its default, its check and a one-line doc (docs/config.md shows it)."""

    name: str  # dotted: group.key (data.nuisance.rotation)
    default: Any
    check: Check
    doc: str

    @property
    def group(self) -> str:
        return self.name.split(".")[0]


_CHANNELS = Check(lambda v: v is None or (_is_int(v) and v in (1, 3)), "1 or 3 (or null)", json={"enum": [1, 3, None]})
_PRECISIONS = ("auto", "fp32", "bf16")
_G = MUNIT_DEFAULTS  # the generator's architecture defaults live beside the networks (gitune/munit_defaults.py)

# Every key a trial reads, in the order of the trial config. DEFAULTS, GENERATOR_DEFAULTS, schema() and
# docs/config.md are all derived from this table: a new key is one line here (and the code that reads it).
KEYS: tuple[Key, ...] = (
    Key("data.name", "glyphs", Check(lambda v: isinstance(v, str) and v in DATASETS,  # live: registry.SOURCES
                                     "one of: " + ", ".join(DATASETS), json={"enum": list(DATASETS)}),
        "`glyphs` (built-in, no download), `cifar10`, `cifar100`, `npz`, `imagefolder`, `tinyimagenet`, "
        "`torchvision`"),
    Key("data.root", "./data", string(),
        "where CIFAR / torchvision files live / are downloaded; `tinyimagenet`: the folder holding tiny-imagenet-200/"),
    Key("data.path", None, string(nullable=True), "the `.npz` file or image folder for custom data"),
    Key("data.download", True, boolean(), "let torchvision download CIFAR / a torchvision dataset when missing"),
    Key("data.profile", "exp", one_of(*PROFILES), "long-tail profile"),
    Key("data.ratio", 100.0, float_range(1.0), "imbalance ratio ρ = n_max / n_min (`exp`, `step`)"),
    Key("data.alpha", 2.0, float_range(0.0, lo_open=True), "Zipf exponent (`zipf`)"),
    Key("data.n_max", None, int_range(1, nullable=True),
        "images in the largest class (null: CIFAR-10 5000, CIFAR-100 500, custom: the largest class; glyphs 500)"),
    Key("data.n_min", 5, int_range(1), "images in the smallest class: the Zipf floor (`zipf`)"),
    Key("data.num_classes", None, int_range(2, 1000, nullable=True),
        "glyphs: number of classes (null: 10)"),
    Key("data.image_size", None, int_range(16, 512, nullable=True),
        "image side in px: glyphs (null: 28); custom data is resized to it (null: as stored)"),
    Key("data.channels", None, _CHANNELS, "image channels: glyphs 1; custom data is converted to it (null: as stored)"),
    Key("data.val_per_class", 50, int_range(1),
        "balanced validation images per class, drawn from images the long tail left unused"),
    Key("data.test_per_class", 100, int_range(1), "held-out test images per class when the source has no test set"),
    Key("data.instance", 0, int_range(0),
        "Zipf class-to-rank order (instance k is reproducible; instances differ)"),
    Key("data.seed", 0, int_range(0), "seed of the data generation and of the held-out slices"),
    Key("data.natural", None, boolean(nullable=True),
        "natural images get crop+flip and standard augmentation as invariance T (null: true for CIFAR and "
        "3-channel custom data, false for glyphs and 1-channel data)"),
    Key("data.nuisance.rotation", 0.0, float_range(0.0, 180.0),
        "class-agnostic nuisance: max rotation angle (°), U[−a, a] bicubic. Glyphs are rendered with the nuisances; "
        "any other source has every image transformed once (seeded), as in K49-LT. They are also the T used for eKLD"),
    Key("data.nuisance.background", 0, int_range(0, 255),
        "class-agnostic nuisance: pixels equal to 0 set to a grey level U{0..b} (0–255)"),
    Key("data.nuisance.stroke", False, boolean(),
        "class-agnostic nuisance: dilation/erosion (the stroke width for glyphs)"),
    Key("data.nuisance.translate", 0, int_range(0, 16), "class-agnostic nuisance: max shift (px)"),
    Key("data.nuisance_rank", None, int_range(1, nullable=True),
        "single-transformed-class mode: only the class of this rank (1 = head; Zipf ranks follow `data.instance`) "
        "gets the nuisance, in every split"),
    Key("data.dataset", None, string(nullable=True),
        "with `name: torchvision`: the `torchvision.datasets` class name, e.g. `KMNIST`, `MNIST`, `FashionMNIST`, "
        "`EMNIST`, `SVHN`, `GTSRB`, `USPS`"),
    Key("data.subset", None, string(nullable=True),
        "the torchvision class's `split` when it has both `split` and `train`, e.g. EMNIST `balanced`, `letters`"),
    Key("model.arch", "resnet32", one_of(*MODEL_NAMES), "classifier architecture"),
    Key("optim.lr", 0.1, float_range(0.0, 10.0, lo_open=True), "SGD learning rate"),
    Key("optim.momentum", 0.9, float_range(0.0, 1.0), "SGD momentum"),
    Key("optim.weight_decay", 2e-4, float_range(0.0, 1.0), "SGD weight decay"),
    Key("optim.nesterov", False, boolean(), "Nesterov momentum"),
    Key("optim.warmup_epochs", 5, int_range(0), "linear LR warm-up epochs (≤ `train.epochs`)"),
    Key("optim.milestones", [160, 180], int_list(), "epochs at which the LR is multiplied by `optim.gamma`"),
    Key("optim.gamma", 0.01, float_range(0.0, 1.0, lo_open=True), "LR factor at each milestone"),
    Key("train.epochs", 200, int_range(1, 100_000), "training epochs"),
    Key("train.batch_size", 128, int_range(1, 65_536), "training batch size"),
    Key("train.loss", "ce", one_of(*LOSSES),
        "`ce`, `ldam` (cosine head, s=`ldam_s`, max margin `ldam_max_m`), `focal` (`focal_gamma`), "
        "`logit_adjusted` (`la_tau`; τ=1 is balanced softmax)"),
    Key("train.rule", "erm", one_of(*RULES),
        "`erm`, `resample`, `reweight` (effective number, `beta`), `drw`, `drs` (deferred at `deferred_epoch`)"),
    Key("train.deferred_epoch", None, int_range(0, nullable=True),
        "epoch at which `drw` / `drs` start (null: the first milestone, else 80 % of the epochs)"),
    Key("train.beta", 0.9999, float_range(0.0, 1.0, hi_open=True),
        "effective-number β of `reweight` / `drw`: β = (N−1)/N for a finite N, so < 1 (→ 1: inverse frequency)"),
    Key("train.focal_gamma", 1.0, float_range(0.0), "focal loss γ"),
    Key("train.ldam_max_m", 0.5, float_range(0.0, lo_open=True), "LDAM largest margin (the smallest class's)"),
    Key("train.ldam_s", 30.0, float_range(0.0, lo_open=True), "LDAM logit scale s of the cosine head"),
    Key("train.la_tau", 1.0, float_range(0.0), "logit adjustment τ (1: balanced softmax)"),
    Key("train.crop_pad", None, int_range(0, 64, nullable=True),
        "training random-crop padding (null: 4 for natural images, none otherwise)"),
    Key("train.flip", None, boolean(nullable=True), "training horizontal flip (null: for natural images only)"),
    Key("train.seed", 0, int_range(0),
        "model init, sampling and augmentation; same config + seed → the same numbers on CPU, exactly; on a GPU "
        "up to the last bits unless `train.deterministic`"),
    Key("train.threads", None, int_range(1, 1024, nullable=True), "torch CPU threads per trial"),
    Key("train.precision", "auto", one_of(*_PRECISIONS),
        "`auto` (bf16 autocast on CUDA, fp32 on CPU), `fp32`, `bf16`; autocast covers the training forward pass "
        "and the loss only: augmentation, GIT's generator, the LDAM cosine head, the optimizer, evaluation and "
        "every invariance metric run in fp32"),
    Key("train.channels_last", None, boolean(nullable=True),
        "channels_last weights and inputs (null: on CUDA, off on CPU)"),
    Key("train.compile", False, boolean(),
        "`torch.compile` the training forward pass (compiles once per trial: worth it for long trials on a GPU)"),
    Key("train.deterministic", False, boolean(),
        "deterministic kernels (`torch.use_deterministic_algorithms`, deterministic cuDNN without autotuning, "
        "`CUBLAS_WORKSPACE_CONFIG=:4096:8`); slower on a GPU. Off, CPU runs still repeat exactly; GPU runs of "
        "the same config + seed may differ in the last bits"),
    Key("aug.oracle_prob", 0.0, float_range(0.0, 1.0),
        "the oracle: like `git.prob`, but the dataset's true nuisance (a fresh draw) applied to the untransformed "
        "originals instead of the generator; shares `git.start_epoch`/`class_threshold`/`sampler`; with both on, "
        "GIT fills the first part of the batch and the oracle the next"),
    Key("git.prob", 0.0, float_range(0.0, 1.0),
        "the generative augmentation probability: the fraction of each batch replaced by generated images "
        "(round(prob·B) candidates per batch); 0 is exactly the baseline"),
    Key("git.start_epoch", 0, int_range(0),
        "first (0-based) epoch with GIT; 160 of 200 = after the first LR drop, as the reference"),
    Key("git.class_threshold", None, int_range(1, nullable=True),
        "per-class keep probability p_c = max((thr − n_c)/(thr − n_min), 0): the smallest class always, "
        "classes ≥ thr never (reference: 500 CIFAR-10, 100 CIFAR-100); null = every class"),
    Key("git.sampler", "same", one_of(*GIT_SAMPLERS),
        "source images of the generated ones: `same` sampler as the batch (class-balanced under resample/DRS), "
        "or `balanced`"),
    Key("eval.batch_size", 1024, int_range(1, 65_536), "evaluation batch size"),
    Key("eval.inv_interval", 10, int_range(0),
        "measure invariance every N epochs (and at the last epoch and at every ASHA rung); 0 = never"),
    Key("eval.inv_images_per_class", 40, int_range(1), "eKLD protocol: held-out images per class"),
    Key("eval.inv_transforms", 100, int_range(1), "eKLD protocol: transforms per image"),
    Key("eval.extra_invariance", True, boolean(),
        "also measure softmax G-EED, latent G-EED and the representation ratio (same images and T, own RNG stream)"),
    Key("eval.latent_layer", "features", string(),
        "layer for latent G-EED: `features` (pooled penultimate) or a module name of the model, e.g. `layer2`"),
    # The generator stage's own keys (`generator:` block of a space file, without the prefix; docs/method.md, the
    # generator). Not part of a classifier trial's config: classifier trials receive the trained weights instead.
    Key("generator.dim", _G["dim"], int_range(1, 1024), "MUNIT generator base channels"),
    Key("generator.style_dim", _G["style_dim"], int_range(1, 1024), "style code size"),
    Key("generator.n_downsample", _G["n_downsample"], int_range(0, 5),
        "content encoder downsamplings; the image size must divide by 2^n_downsample"),
    Key("generator.n_res", _G["n_res"], int_range(0, 32), "residual blocks of the content encoder and decoder"),
    Key("generator.mlp_dim", _G["mlp_dim"], int_range(1, 4096), "width of the MLP from style to AdaIN parameters"),
    Key("generator.mlp_layers", _G["mlp_layers"], int_range(2, 16), "layers of that MLP"),
    Key("generator.disc_dim", _G["disc_dim"], int_range(1, 1024), "PatchGAN discriminator base channels"),
    Key("generator.disc_layers", _G["disc_layers"], int_range(1, 8), "PatchGAN discriminator layers"),
    Key("generator.disc_scales", _G["disc_scales"], int_range(1, 4), "discriminator scales (> 1: multi-scale)"),
    Key("generator.iterations", 10000, int_range(1, 10_000_000),
        "training iterations (reference: 10k for 28 px K49, 140k for CIFAR)"),
    Key("generator.batch_size", 1, int_range(1, 4096), "training batch (the reference's: 1)"),
    Key("generator.lr", 1e-4, float_range(0.0, 1.0, lo_open=True), "Adam learning rate (at batch 1, see `lr_scaling`)"),
    Key("generator.beta1", 0.5, float_range(0.0, 1.0), "Adam β1"),
    Key("generator.beta2", 0.999, float_range(0.0, 1.0), "Adam β2"),
    Key("generator.weight_decay", 1e-4, float_range(0.0, 1.0), "Adam weight decay"),
    Key("generator.lr_step", 100000, int_range(1), "iterations between LR drops"),
    Key("generator.lr_gamma", 0.5, float_range(0.0, 1.0, lo_open=True), "LR factor every `lr_step` iterations"),
    Key("generator.w_gan", 1.0, float_range(0.0), "loss weight: adversarial (least-squares GAN)"),
    Key("generator.w_recon_x", 10.0, float_range(0.0), "loss weight: image reconstruction"),
    Key("generator.w_recon_s", 1.0, float_range(0.0),
        "loss weight: style-code reconstruction (raise it when `fid/style_effect` stays under the nuisance's)"),
    Key("generator.w_recon_c", 1.0, float_range(0.0), "loss weight: content-code reconstruction"),
    Key("generator.report_every", 500, int_range(1), "iterations per Tune report + checkpoint"),
    Key("generator.grid_every", 2000, int_range(0), "iterations per sample grid (0: only at the end)"),
    Key("generator.fid_images", 128, int_range(1, 100_000),
        "held-out clean validation images (balanced over classes) for the fidelity metrics at every report"),
    Key("generator.fid_draws", 4, int_range(2, 64), "styles (and nuisance draws) per image for the fidelity metrics"),
    Key("generator.seed", 0, int_range(0), "seed of the generator trial"),
    Key("generator.threads", None, int_range(1, 1024, nullable=True), "torch CPU threads per generator trial"),
    Key("generator.precision", "fp32", one_of(*_PRECISIONS),
        "the stage's compute, as `train.precision`; bf16 (`auto` or `bf16`) autocasts the forward passes only, "
        "losses reduce in fp32; opt-in until a GPU run shows it reaches the fp32 fidelity"),
    Key("generator.channels_last", None, boolean(nullable=True), "as `train.channels_last` (null: on CUDA)"),
    Key("generator.lr_scaling", "none", one_of(*LR_SCALINGS),
        "with a `batch_size` above the reference's 1, `lr` is read as the batch-1 LR and used as `lr` (`none`), "
        "× batch (`linear`) or × √batch (`sqrt`); logged as `generator/lr_used`. Measured at equal images "
        "(benchmarks/README.md, (f)): batch 8 `linear` kept batch 1's fidelity, `none` and `sqrt` did not: "
        "use `linear` up to batch 8"),
)
KEY_BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}


def _defaults(groups: tuple[str, ...]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for k in KEYS:
        if k.group in groups:
            set_dotted(tree, k.name, copy.deepcopy(k.default))
    return tree


_SCHEMA: dict[str, Check] = {k.name: k.check for k in KEYS}


def schema() -> dict[str, Check]:
    """{dotted key: its Check} for every declared key (trial and generator keys)."""
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


# Derived from KEYS: a classifier trial's config, and the generator stage's keys without their prefix.
DEFAULTS: dict[str, Any] = _defaults(GROUPS)
GENERATOR_DEFAULTS: dict[str, Any] = _defaults(("generator",))["generator"]


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
        raise UserError(f"{where}: expected {chk.expected}, got {shown(value)}")


def validate_config(cfg: dict[str, Any], where: str, tuned: set[str] = frozenset()) -> None:
    """Check every value, then the cross-key rules that single values cannot express."""
    flat = flatten(cfg)
    for key, value in flat.items():
        if key not in tuned:
            check_value(key, value, f"{where}.{key}")
    if not tuned & {"data.name", "data.path", "data.dataset"}:  # tuned: checked per value (spaces._check_space_sample)
        check_data_rules(cfg["data"], f"{where}.")
    opt = cfg["optim"]
    tr = cfg["train"]
    if not tuned & {"optim.warmup_epochs", "train.epochs"} and opt["warmup_epochs"] > tr["epochs"]:
        raise UserError(f"{where}.optim.warmup_epochs: expected ≤ train.epochs ({tr['epochs']}), "
                        f"got {opt['warmup_epochs']}")


def check_data_rules(data: dict[str, Any], where: str = "") -> None:
    """What single data keys cannot express: the keys a source needs besides data.name. The one rule for the
    spec (gitune.spaces) and the data layer (gitune.data.sources.validate_data_config)."""
    name = data.get("name")
    if name in ("npz", "imagefolder") and not data.get("path"):
        what = "an .npz file" if name == "npz" else "an image folder"
        raise UserError(f"{where}data.path: required when data.name is {name} (expected the path of {what})")
    if name == "torchvision" and not data.get("dataset"):
        raise UserError(f"{where}data.dataset: required when data.name is torchvision (expected a class name of "
                        f"torchvision.datasets such as MNIST, KMNIST, FashionMNIST, EMNIST, SVHN, GTSRB)")


def resolve_trial_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill the values whose defaults depend on other keys (done in the trial, after sampling)."""
    cfg = copy.deepcopy(cfg)
    tr, opt = cfg["train"], cfg["optim"]
    if tr["deferred_epoch"] is None:
        tr["deferred_epoch"] = opt["milestones"][0] if opt["milestones"] else int(tr["epochs"] * 0.8)
    return cfg


# ---------------------------------------------------------------- preconditions shared by the spec and the trial

def has_nuisance(cfg: dict[str, Any]) -> bool:
    """Whether config.data.nuisance sets a nuisance (0, false and null set none, as gitune.data reads it)."""
    return any(v for v in (cfg["data"].get("nuisance") or {}).values())


def check_augmentation_sources(git_probs: list[float], oracle_probs: list[float], has_generator: bool,
                               nuisance: bool, where: str = "") -> None:
    """GIT replaces images by generated ones and the oracle by the data's true nuisance: each needs its source.

    One rule for the spec parser (every value a distribution can produce) and the trial (the sampled value),
    so both refuse the same configs with the same words."""
    at = f"{where}: " if where else ""
    if any(p > 0 for p in git_probs) and not has_generator:
        raise UserError(f"{at}git.prob: values > 0 need a generator: add a `generator:` block to the space file "
                        f"(a config to pretrain, or checkpoint: PATH)")
    if any(p > 0 for p in oracle_probs) and not nuisance:
        raise UserError(f"{at}aug.oracle_prob: values > 0 apply the dataset's true nuisance, but "
                        f"config.data.nuisance sets none (expected e.g. data.nuisance: {{rotation: 180}})")


# ---------------------------------------------------------------- typed trial configs, generated from KEYS
#
# A trial reads `c.train.epochs` from a frozen object rather than `cfg["train"]["epochs"]` from a dict: the
# classes are generated from KEYS (one per group, one per sub-block such as data.nuisance), so a key is still
# declared once. Tune samples and MLflow logs plain dicts; the trainables convert at their top (typed_config)
# and hand `as_dict(...)` to the layers that still take dicts (the data layer).

from collections.abc import Mapping  # noqa: E402 - this section's own imports, kept with it
from dataclasses import fields, is_dataclass, make_dataclass  # noqa: E402
from functools import lru_cache, partial  # noqa: E402
from typing import Optional  # noqa: E402

_JSON_TYPES: dict[str, type] = {"integer": int, "number": float, "boolean": bool, "string": str}


class ConfigBlock(Mapping):
    """Base of the generated config classes. Also a read-only mapping (`block["epochs"]`, `.get`, equal to the
    dict it came from), so code still written against the dict shape (benchmarks/, resolve_compute) reads a
    typed config unchanged; trainables read attributes."""

    def __getitem__(self, name: str) -> Any:
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self) -> int:
        return len(self.__dataclass_fields__)

    def __reduce__(self):
        # Generated classes are not module attributes, so pickle (Ray's way to ship arguments) rebuilds them.
        return _rebuild, (self._source, as_dict(self))


def _rebuild(source: str | tuple[str, ...], tree: dict[str, Any]) -> ConfigBlock:
    cls = config_class(source) if isinstance(source, tuple) else _block_class(source)
    return _typed(cls, tree, "config")


def _field_type(check: Check) -> Any:
    """The Python type a Check admits, read from its JSON Schema fragment (Any where it does not say one)."""
    js = check.json
    if "enum" in js:
        kinds = {type(v) for v in js["enum"] if v is not None}
        base, nullable = (kinds.pop() if len(kinds) == 1 else Any), None in js["enum"]
    else:
        named = js.get("type")
        named = named if isinstance(named, list) else [named]
        nullable = "null" in named
        named = [n for n in named if n != "null"]
        if named == ["array"]:
            base = list[_JSON_TYPES.get(js.get("items", {}).get("type"), Any)]
        else:
            base = _JSON_TYPES.get(named[0], Any) if len(named) == 1 else Any
    return Optional[base] if nullable and base is not Any else base


def _class_name(prefix: str) -> str:
    return "".join(part.title().replace("_", "") for part in prefix.split(".")) + "Config"


def _make_class(name: str, specs: list[tuple[str, Any, Any]], doc: str, source: str | tuple[str, ...]) -> type:
    cls = make_dataclass(name, specs, bases=(ConfigBlock,), frozen=True, eq=False,
                         namespace={"__doc__": doc, "__module__": __name__, "_source": source})
    cls.__qualname__ = name
    return cls


@lru_cache(maxsize=None)
def _block_class(prefix: str) -> type:
    """The frozen dataclass of block `prefix` (`train`, `data.nuisance`): a field per key directly under it,
    with the Key's default, and a nested block for each deeper prefix, in KEYS order. One class per block,
    shared by the configs that hold it (a classifier and a generator trial's `data`)."""
    depth = prefix.count(".") + 1
    specs: list[tuple[str, Any, Any]] = []
    for k in KEYS:
        parts = k.name.split(".")
        name = parts[depth] if k.name.startswith(prefix + ".") else None
        if name is None or any(s[0] == name for s in specs):
            continue
        if len(parts) > depth + 1:
            sub = _block_class(f"{prefix}.{name}")
            specs.append((name, sub, field(default_factory=sub)))
        elif isinstance(k.default, (list, dict)):  # a fresh copy per object: the declared default stays intact
            specs.append((name, _field_type(k.check), field(default_factory=partial(copy.deepcopy, k.default))))
        else:
            specs.append((name, _field_type(k.check), field(default=k.default)))
    return _make_class(_class_name(prefix), specs, f"The `{prefix}` keys of a trial config (gitune.config.KEYS).",
                       prefix)


@lru_cache(maxsize=None)
def config_class(groups: tuple[str, ...] = GROUPS) -> type:
    """The frozen dataclass of a whole trial config made of `groups` (a field per group, in that order)."""
    specs = []
    for group in groups:
        block = _block_class(group)
        specs.append((group, block, field(default_factory=block)))
    name = {GROUPS: "TrialConfig", GENERATOR_GROUPS: "GeneratorTrialConfig"}.get(groups)
    return _make_class(name or _class_name("_".join(groups)), specs, f"A trial config of groups {', '.join(groups)}.",
                       groups)


TrialConfig = config_class(GROUPS)
GeneratorTrialConfig = config_class(GENERATOR_GROUPS)


def typed_config(cfg: Mapping[str, Any], groups: tuple[str, ...] = GROUPS, where: str = "config") -> ConfigBlock:
    """The typed, frozen form of a trial config dict (resolve its derived defaults first): `c.train.epochs`,
    `c.data.nuisance.rotation`. A key the dict leaves out takes its declared default (configs of older runs); a
    key KEYS does not declare is refused here, at the top of the trial, as one line. Values are taken as they
    are (no coercion, no checks: the spec parser validated them, and Tune may sample numpy numbers)."""
    return _typed(config_class(tuple(groups)), cfg, where)


def typed_generator_config(cfg: Mapping[str, Any], where: str = "config") -> ConfigBlock:
    """typed_config of a generator trial's config ({data, generator}): `g.generator.lr`."""
    return typed_config(cfg, GENERATOR_GROUPS, where)


def _typed(cls: type, tree: Any, where: str) -> ConfigBlock:
    if not isinstance(tree, Mapping):
        raise UserError(f"{where}: expected a mapping of keys ({', '.join(cls.__dataclass_fields__)}), got "
                        f"{tree!r}")
    known = cls.__dataclass_fields__
    values = {}
    for name, value in tree.items():
        if name not in known:
            raise UserError(f"{where}.{name}: unknown key (known keys here: {', '.join(known)})")
        kind = known[name].type
        values[name] = _typed(kind, value, f"{where}.{name}") if is_dataclass(kind) else value
    return cls(**values)


def as_dict(block: ConfigBlock) -> dict[str, Any]:
    """A typed config (or one of its blocks) back as the plain nested dict, for the layers that take dicts
    (build_dataset, MLflow params): as_dict(typed_config(d)) == d for a complete config."""
    return {f.name: as_dict(v) if isinstance(v := getattr(block, f.name), ConfigBlock) else copy.deepcopy(v)
            for f in fields(block)}
