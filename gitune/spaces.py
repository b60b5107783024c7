"""Search-space files: YAML → validated SweepSpec → Ray Tune param space.

Everything a trial will read is validated here, on the driver, before Ray starts: fixed values and
every value a distribution can sample. Each error names the file and the key. Ray is imported only
by `param_space`/`search_algorithm`, so `--dry-run` and error paths stay fast.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gitune import config as C
from gitune.errors import UserError

class _Loader(yaml.SafeLoader):
    """safe_load, plus YAML 1.2 floats: PyYAML (YAML 1.1) reads `1e-3` or `5.0e39` as strings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def safe_load(text: str):
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


TRAINABLES = ("classifier",)
SEARCHERS = ("random", "grid", "optuna")
SCHEDULERS = ("asha", "fifo")
DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice", "grid")
# Reported every epoch, so ASHA can compare trials on them at any rung.
EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/bal_acc", "val/acc_many",
                 "val/acc_medium", "val/acc_few")

TOP_KEYS = {
    "name": "the sweep (and MLflow experiment) name",
    "description": "free text",
    "trainable": "which trainable to run",
    "metric": "the metric ASHA and the searcher optimise",
    "mode": "max or min",
    "num_samples": "trials to sample",
    "scheduler": "the trial scheduler",
    "search": "the search algorithm",
    "resources": "per-trial resources",
    "checkpoint": "checkpoint retention",
    "failure": "retries of crashed trials",
    "config": "fixed trial config",
    "space": "tuned trial config",
    "generator": "the generator stage (GIT)",
}
# Reported by the generator trainable; `generator.metric` picks the checkpoint among generator trials, in
# the mode given here unless the block sets one. The losses do not say whether the nuisance was learned (an
# identity map minimises loss/recon_x); the fidelity metrics (gitune/metrics/generator_fidelity.py) do.
GENERATOR_METRICS: dict[str, str] = {
    "fid/nuisance_ed": "min", "fid/nuisance_ed_feat": "min",  # need config.data.nuisance
    "fid/style_x_content": "max", "fid/style_effect": "max", "fid/content": "max",
    "loss/recon_x": "min", "loss/recon_s": "min", "loss/recon_c": "min", "loss/gen_adv": "min",
    "loss/gen_total": "min", "loss/dis": "min",
}
NUISANCE_METRICS = ("fid/nuisance_ed", "fid/nuisance_ed_feat")
GENERATOR_BLOCK: dict[str, Any] = {
    "checkpoint": None,  # a generator.pt file/folder or runs:/<run_id>: skips pretraining
    "num_samples": 1,
    "metric": None,  # default: fid/nuisance_ed with a data.nuisance, else fid/style_x_content
    "mode": None,  # default: the metric's own (GENERATOR_METRICS)
    "search": {"type": "random", "seed": 0},
    "resources": None,  # default: the classifier trials' resources
    "config": None,
    "space": None,
}
SUB_DEFAULTS: dict[str, dict[str, Any]] = {
    "scheduler": {"type": "asha", "max_t": None, "grace_period": 1, "reduction_factor": 3},
    "search": {"type": "random", "seed": 0, "max_concurrent": None},
    "resources": {"cpu": 1, "gpu": 0},
    "checkpoint": {"num_to_keep": 2},
    "failure": {"max_failures": 2},
}


@dataclass
class SweepSpec:
    """A validated sweep: what to run, how to schedule it, which keys are fixed and which tuned."""

    name: str
    trainable: str
    metric: str
    mode: str
    num_samples: int
    scheduler: dict[str, Any]
    search: dict[str, Any]
    resources: dict[str, Any]
    checkpoint: dict[str, Any]
    failure: dict[str, Any]
    config: dict[str, Any]
    space: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    description: str = ""
    source: str = ""
    generator: dict[str, Any] | None = None  # the validated `generator:` block (GENERATOR_BLOCK keys)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_spec(path: str | Path, overrides: list[str] = (), num_samples: int | None = None,
              name: str | None = None) -> SweepSpec:
    """Read, merge overrides into and validate a space file. Raises UserError on any mistake."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise UserError(f"{where}: no such file (expected a YAML search-space file)")
    try:
        raw = safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: invalid YAML{at}: {problem}") from None
    except UnicodeDecodeError:
        raise UserError(f"{where}: not a text file (expected a YAML search-space file)") from None
    if not isinstance(raw, dict):
        raise UserError(f"{where}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    raw = copy.deepcopy(raw)
    for item in overrides:
        apply_override(raw, item)
    if num_samples is not None:
        raw["num_samples"] = num_samples
    if name is not None:
        check_name(name, "--name")
        raw["name"] = name
    return build_spec(raw, where)


def check_name(name: Any, where: str) -> None:
    """The sweep name is a folder under --storage and the MLflow experiment name: one plain path component
    (not empty, `.` or `..`, no `/` or `\\`, no control character such as NUL, not starting with `-`), so the
    run folder cannot land outside --storage nor be read as a flag."""
    ok = isinstance(name, str) and name.strip() not in ("", ".", "..")
    if ok:
        stripped = name.strip()
        ok = (not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in stripped)
              and not stripped.startswith("-") and len(stripped.encode("utf-8")) <= 200)
    if not ok:
        raise UserError(f"{where}: expected a sweep name that is one plain folder name (not '.' or '..', no '/', "
                        f"'\\' or control characters, not starting with '-', at most 200 bytes), got {name!r}")


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`--set key=value`: a spec key (scheduler.max_t=5), a config key (train.epochs=5) or a tuned key
    (space.train.seed='{grid: [0, 1, 2]}': adds or replaces that entry of `space`; see _set_space).

    A config key that is also tuned in `space` is pinned: the override wins and the key leaves the space.
    """
    if "=" not in item:
        raise UserError(f"--set {item}: expected KEY=VALUE, e.g. train.epochs=5")
    key, text = item.split("=", 1)
    key = key.strip()
    try:
        value = safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise UserError(f"--set {item}: the value is not valid YAML") from None
    top = key.split(".")[0]
    if top in C.GROUPS:
        C.check_key(key, f"--set {key}")
        _set_in(raw, "config", key, value)
        space = raw.get("space")
        if isinstance(space, dict):
            space.pop(key, None)
    elif top not in TOP_KEYS:
        raise UserError(f"--set {key}: unknown key (expected a spec key ({', '.join(TOP_KEYS)}) "
                        f"or a config key under {', '.join(C.GROUPS)})")
    elif top == "space" and "." in key:
        _set_space(raw, key.split(".", 1)[1], value)
    elif "." in key:
        _set_in(raw, top, key.split(".", 1)[1], value)
    else:
        raw[key] = value


def _set_space(raw: dict[str, Any], key: str, dist: Any) -> None:
    """`--set space.train.seed='{grid: [0, 1, 2]}'`: the space's keys are dotted config keys, so everything
    after `space.` is one key (not a nested path). Adds or replaces that entry, checked like a space file's;
    an empty value or null removes it (the fixed config value applies again). The fixed value stays in
    `config` as the default the space shadows."""
    space = raw.get("space")
    if space is None:
        space = raw["space"] = {}
    if not isinstance(space, dict):
        raise UserError(f"--set space.{key}: 'space' in the file is not a mapping of config keys to distributions")
    if dist is None:
        space.pop(key, None)
        return
    try:
        _parse_space({key: dist}, "--set")
    except UserError as e:
        raise UserError(str(e).replace("--set: ", "--set ", 1)) from None
    space[key] = dist


def _set_in(raw: dict[str, Any], block: str, key: str, value: Any) -> None:
    if raw.get(block) is None:
        raw[block] = {}
    try:
        C.set_dotted(raw[block], key, value)
    except (AttributeError, TypeError):
        raise UserError(f"--set {block}.{key}: '{block}' in the file is not a mapping down to that key") from None


def build_spec(raw: dict[str, Any], where: str) -> SweepSpec:
    for key in raw:
        if key not in TOP_KEYS:
            raise UserError(f"{where}: {key}: unknown key (expected one of: {', '.join(TOP_KEYS)})")
    name = raw.get("name")
    check_name(name, f"{where}: name")
    trainable = raw.get("trainable", "classifier")
    if trainable not in TRAINABLES:
        raise UserError(f"{where}: trainable: expected one of: {', '.join(TRAINABLES)}, got {trainable!r}")
    mode = raw.get("mode", "max")
    if mode not in ("max", "min"):
        raise UserError(f"{where}: mode: expected max or min, got {mode!r}")
    metric = raw.get("metric", "val/bal_acc")
    if metric not in EPOCH_METRICS and not _is_class_metric(metric):
        raise UserError(f"{where}: metric: expected a metric reported every epoch "
                        f"({', '.join(EPOCH_METRICS)}, val/class_acc/cNNN), got {metric!r}")
    num_samples = raw.get("num_samples", 1)
    if not C._is_int(num_samples) or num_samples < 1:
        raise UserError(f"{where}: num_samples: expected an integer ≥ 1, got {num_samples!r}")
    desc = raw.get("description", "")
    if not isinstance(desc, str):
        raise UserError(f"{where}: description: expected text, got {type(desc).__name__}")

    subs = {k: _sub_block(raw, k, where) for k in SUB_DEFAULTS}
    cfg_raw = raw.get("config")
    cfg = C.merge_config(cfg_raw, f"{where}: config")
    space = _parse_space(raw.get("space"), where)
    C.validate_config(cfg, f"{where}: config", tuned=set(space))
    _check_shadowed(cfg, space, where)
    _check_subs(subs, cfg, space, where)
    generator = _generator_block(raw.get("generator"), subs["resources"], where,
                                 has_nuisance=_has_nuisance(cfg, space))
    spec = SweepSpec(name=name.strip(), trainable=trainable, metric=metric, mode=mode,
                     num_samples=num_samples, config=cfg, space=space, description=desc,
                     source=where, generator=generator, **subs)
    _check_space_sample(spec, where)
    _check_git(spec, where)
    _check_oracle(spec, where)
    return spec


def _check_shadowed(cfg: dict[str, Any], space: dict[str, Any], where: str) -> None:
    """A fixed value that a tuned key shadows is still checked (validate_config skips tuned keys for its
    cross-key rules): a typo there would otherwise pass until the key is pinned or leaves the space."""
    for key in space:
        chk = C.schema()[key]
        value = C.get_dotted(cfg, key)
        if not chk.test(value):
            raise UserError(f"{where}: config.{key}: expected {chk.expected}, got {value!r} (the fixed value "
                            f"that space.{key} shadows is still checked)")


def _has_nuisance(cfg: dict[str, Any], space: dict[str, Any]) -> bool:
    """Whether the data carries a known nuisance T (a tuned one counts: _check_git rejects it later)."""
    return any(v for v in cfg["data"]["nuisance"].values()) or any(k.startswith("data.nuisance.") for k in space)


def _generator_metric(out: dict[str, Any], has_nuisance: bool, w: str) -> None:
    """Fill metric and mode: by default the fidelity to the true nuisance when the data has one (else the
    style × content proxy); a metric given without a mode brings its own mode."""
    metric = out["metric"]
    if metric is None:
        metric = "fid/nuisance_ed" if has_nuisance else "fid/style_x_content"
    if not isinstance(metric, str) or metric not in GENERATOR_METRICS:
        raise UserError(f"{w}.metric: expected one of: {', '.join(GENERATOR_METRICS)}, got {metric!r}")
    if metric in NUISANCE_METRICS and not has_nuisance:
        raise UserError(f"{w}.metric: {metric} compares the generator with the data's true nuisance, but "
                        f"config.data.nuisance sets none (use fid/style_x_content)")
    mode = GENERATOR_METRICS[metric] if out["mode"] is None else out["mode"]
    if mode not in ("max", "min"):
        raise UserError(f"{w}.mode: expected max or min, got {mode!r}")
    out["metric"], out["mode"] = metric, mode


def _generator_block(block: Any, resources: dict[str, Any], where: str,
                     has_nuisance: bool = False) -> dict[str, Any] | None:
    """The `generator:` block: a checkpoint to use, or the config (and optional small space) to pretrain."""
    if block is None:
        return None
    w = f"{where}: generator"
    if not isinstance(block, dict):
        raise UserError(f"{w}: expected a mapping with keys {', '.join(GENERATOR_BLOCK)}")
    for k in block:
        if k not in GENERATOR_BLOCK:
            raise UserError(f"{w}.{k}: unknown key (expected one of: {', '.join(GENERATOR_BLOCK)})")
    out = copy.deepcopy(GENERATOR_BLOCK)
    out.update(copy.deepcopy(block))
    ckpt = out["checkpoint"]
    if ckpt is not None and (not isinstance(ckpt, str) or not ckpt.strip()):
        raise UserError(f"{w}.checkpoint: expected a path to generator.pt or runs:/<run_id>, got {ckpt!r}")
    if not C._is_int(out["num_samples"]) or out["num_samples"] < 1:
        raise UserError(f"{w}.num_samples: expected an integer ≥ 1, got {out['num_samples']!r}")
    _generator_metric(out, has_nuisance, w)
    search = out["search"] if isinstance(out["search"], dict) else None
    if search is None or set(search) - {"type", "seed"} or search.get("type", "random") not in SEARCHERS:
        raise UserError(f"{w}.search: expected {{type: {'|'.join(SEARCHERS)}, seed: N}}, got {out['search']!r}")
    out["search"] = {"type": search.get("type", "random"), "seed": search.get("seed", 0), "max_concurrent": None}
    res = out["resources"]
    if res is None:
        res = dict(resources)
    if not isinstance(res, dict) or set(res) - {"cpu", "gpu"}:
        raise UserError(f"{w}.resources: expected {{cpu: N, gpu: N}}, got {res!r}")
    out["resources"] = {**resources, **res}
    out["config"] = C.merge_generator_config(out["config"], f"{w}.config")
    space_raw = out["space"]
    if space_raw is not None and not isinstance(space_raw, dict):
        raise UserError(f"{w}.space: expected a mapping of generator keys to distributions")
    prefixed = {f"generator.{k}": v for k, v in (space_raw or {}).items()}
    out["space"] = _parse_space(prefixed or None, where, groups=("generator",))
    for key, dist in out["space"].items():
        if out["search"]["type"] == "optuna" and "grid" in dist:
            raise UserError(f"{where}: space.{key}: Optuna cannot take 'grid'; use 'choice'")
    _check_resources(out["resources"], f"{w}.resources")
    return out


def _check_resources(res: dict[str, Any], w: str) -> None:
    if not (C._is_num(res["cpu"]) and res["cpu"] > 0):
        raise UserError(f"{w}.cpu: expected a number > 0, got {res['cpu']!r}")
    if not (C._is_num(res["gpu"]) and 0 <= res["gpu"] <= 1):
        raise UserError(f"{w}.gpu: expected 0, 1 or a fraction < 1 (packs trials on a GPU); a trial uses one "
                        f"device, so more than 1 GPU per trial would sit idle, got {res['gpu']!r}")


def _check_git(spec: SweepSpec, where: str) -> None:
    """GIT needs a generator; a generator is trained on one data config, so data keys cannot be tuned."""
    probs = ([spec.config["git"]["prob"]] if "git.prob" not in spec.space
             else _values_or_bounds(spec.space["git.prob"], "git.prob"))
    if spec.generator is None:
        if any(p > 0 for p in probs):
            raise UserError(f"{where}: git.prob: values > 0 need a generator: add a `generator:` block "
                            f"(a config to pretrain, or checkpoint: PATH)")
        return
    tuned_data = sorted(k for k in spec.space if k.startswith("data."))
    if tuned_data:
        raise UserError(f"{where}: space.{tuned_data[0]}: the generator is trained once on config.data, so data "
                        f"keys cannot be tuned in a sweep with a `generator:` block; run one sweep per data config")


def _check_oracle(spec: SweepSpec, where: str) -> None:
    """The oracle applies the dataset's true nuisance, so it needs one."""
    def values(key: str) -> list[Any]:
        return [C.get_dotted(spec.config, key)] if key not in spec.space else _values_or_bounds(spec.space[key], key)

    oracle = values("aug.oracle_prob")
    if not any(p > 0 for p in oracle):
        return
    tuned_nuisance = any(k.startswith("data.nuisance.") for k in spec.space)
    if not tuned_nuisance and not any(v for v in spec.config["data"]["nuisance"].values()):
        raise UserError(f"{where}: aug.oracle_prob: values > 0 apply the dataset's true nuisance, but "
                        f"config.data.nuisance sets none (expected e.g. data.nuisance: {{rotation: 180}})")


def _is_class_metric(metric: Any) -> bool:
    return isinstance(metric, str) and metric.startswith("val/class_acc/c") and metric[15:].isdigit()


def _sub_block(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    block = raw.get(key) or {}
    if not isinstance(block, dict):
        raise UserError(f"{where}: {key}: expected a mapping with keys {', '.join(SUB_DEFAULTS[key])}")
    out = dict(SUB_DEFAULTS[key])
    for k, v in block.items():
        if k not in out:
            raise UserError(f"{where}: {key}.{k}: unknown key (expected one of: {', '.join(out)})")
        out[k] = v
    return out


def _check_subs(subs: dict[str, dict[str, Any]], cfg: dict[str, Any], space: dict, where: str) -> None:
    def need(ok: bool, key: str, expected: str, value: Any) -> None:
        if not ok:
            raise UserError(f"{where}: {key}: expected {expected}, got {value!r}")

    sch = subs["scheduler"]
    need(sch["type"] in SCHEDULERS, "scheduler.type", "one of: " + ", ".join(SCHEDULERS), sch["type"])
    epochs = cfg["train"]["epochs"]
    if sch["max_t"] is None:
        sch["max_t"] = (epochs if "train.epochs" not in space
                        else max(_values_or_bounds(space["train.epochs"], "train.epochs")))
    need(C._is_int(sch["max_t"]) and sch["max_t"] >= 1, "scheduler.max_t", "an integer ≥ 1", sch["max_t"])
    need(C._is_int(sch["grace_period"]) and 1 <= sch["grace_period"] <= sch["max_t"],
         "scheduler.grace_period", f"an integer from 1 to scheduler.max_t ({sch['max_t']})",
         sch["grace_period"])
    if "train.epochs" not in space and sch["max_t"] > epochs:
        # ASHA counts epochs: a shorter run (e.g. --set train.epochs=5) shrinks the rungs with it.
        sch["max_t"] = epochs
        sch["grace_period"] = min(sch["grace_period"], epochs)
    need(C._is_num(sch["reduction_factor"]) and sch["reduction_factor"] > 1,
         "scheduler.reduction_factor", "a number > 1", sch["reduction_factor"])

    se = subs["search"]
    need(se["type"] in SEARCHERS, "search.type", "one of: " + ", ".join(SEARCHERS), se["type"])
    need(se["seed"] is None or (C._is_int(se["seed"]) and se["seed"] >= 0), "search.seed",
         "a non-negative integer or null", se["seed"])
    need(se["max_concurrent"] is None or (C._is_int(se["max_concurrent"]) and se["max_concurrent"] >= 1),
         "search.max_concurrent", "an integer ≥ 1 or null", se["max_concurrent"])
    for key, dist in space.items():
        kind = next(iter(dist))
        if se["type"] == "optuna" and kind == "grid":
            raise UserError(f"{where}: space.{key}: Optuna cannot take 'grid'; use 'choice' or search.type: grid")
        if se["type"] == "grid" and kind not in ("grid", "choice"):
            raise UserError(f"{where}: space.{key}: search.type grid needs finite values "
                            f"('grid' or 'choice'), got '{kind}'")

    _check_resources(subs["resources"], f"{where}: resources")
    nk = subs["checkpoint"]["num_to_keep"]
    need(nk is None or (C._is_int(nk) and nk >= 1), "checkpoint.num_to_keep", "an integer ≥ 1 or null", nk)
    mf = subs["failure"]["max_failures"]
    need(C._is_int(mf) and mf >= -1, "failure.max_failures", "an integer ≥ 0 (or -1: retry forever)", mf)


def _parse_space(space: Any, where: str, groups: tuple[str, ...] = C.GROUPS) -> dict[str, dict[str, list[Any]]]:
    if space is None:
        return {}
    if not isinstance(space, dict):
        raise UserError(f"{where}: space: expected a mapping of dotted config keys to distributions")
    out: dict[str, dict[str, list[Any]]] = {}
    for key, dist in space.items():
        w = f"{where}: space.{key}"
        key = str(key)
        chk = C.check_key(key, w, groups)
        if not isinstance(dist, dict) or len(dist) != 1:
            raise UserError(f"{w}: expected one distribution, e.g. {{uniform: [0.0, 0.8]}} "
                            f"(one of: {', '.join(DISTRIBUTIONS)})")
        kind, args = next(iter(dist.items()))
        if kind not in DISTRIBUTIONS:
            raise UserError(f"{w}: unknown distribution '{kind}' (expected one of: {', '.join(DISTRIBUTIONS)})")
        if not isinstance(args, list) or not args:
            raise UserError(f"{w}.{kind}: expected a non-empty list, got {args!r}")
        if kind in ("choice", "grid"):
            for v in args:
                if not chk.test(v):
                    raise UserError(f"{w}.{kind}: value {v!r} is not allowed for {key} (expected {chk.expected})")
                if isinstance(v, (list, dict)) and kind == "choice":
                    raise UserError(f"{w}.choice: values must be numbers or strings (use 'grid' for lists)")
        else:
            _check_numeric(kind, args, key, chk, w)
        out[key] = {kind: list(args)}
    return out


def _check_numeric(kind: str, args: list[Any], key: str, chk: C.Check, w: str) -> None:
    n = 3 if kind == "quniform" else 2
    if len(args) != n or not all(C._is_num(a) for a in args):
        shape = "[low, high, q]" if kind == "quniform" else "[low, high]"
        raise UserError(f"{w}.{kind}: expected {shape} numbers, got {args!r}")
    if chk.numeric is None:
        raise UserError(f"{w}.{kind}: {key} is not numeric (expected {chk.expected}); use choice")
    lo, hi = args[0], args[1]
    if not lo < hi:
        raise UserError(f"{w}.{kind}: expected low < high, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        raise UserError(f"{w}.loguniform: bounds must be > 0, got [{lo}, {hi}]")
    if kind == "quniform" and args[2] <= 0:
        raise UserError(f"{w}.quniform: q must be > 0, got {args[2]}")
    if kind == "quniform" and chk.numeric == "float" and not all(
            math.isclose(b / args[2], round(b / args[2])) for b in (lo, hi)):
        raise UserError(f"{w}.quniform: Ray Tune needs low and high to be multiples of q, got {args!r}")
    if chk.numeric == "int" and kind != "randint" and not (kind == "quniform" and float(args[2]).is_integer()
                                                            and float(lo).is_integer()):
        raise UserError(f"{w}.{kind}: {key} takes integers; use randint, choice or quniform with integer q")
    if kind == "randint" and not (C._is_int(lo) and C._is_int(hi)):
        raise UserError(f"{w}.randint: expected integer bounds [low, high) , got {args!r}")
    if kind == "quniform" and chk.numeric == "int":
        low_value, high_value = _values_or_bounds({kind: args}, key)
        if low_value > high_value:
            raise UserError(f"{w}.quniform: no multiple of q={args[2]} that Ray Tune samples lies in "
                            f"[{lo}, {hi}]{' (q = 1 excludes high)' if args[2] == 1 else ''}")
    top = hi - 1 if kind == "randint" else hi
    for bound in (lo, top):
        value = int(bound) if chk.numeric == "int" else float(bound)
        if not chk.test(value):
            raise UserError(f"{w}.{kind}: bound {bound} is out of range for {key} (expected {chk.expected})")


def _values_or_bounds(dist: dict[str, list[Any]], key: str | None = None) -> list[Any]:
    """The values a distribution can produce (choice, grid), or the lowest and highest it can produce: never
    its raw arguments (a q-distribution's third argument is the step q, not a value).

    As param_space builds them with Ray Tune: randint [low, high) → high − 1; q-distributions ([low, high, q])
    sample the multiples of q between the bounds (for an integer key, q = 1 excludes high, as Ray's qrandint
    does). Given the key, an integer key's values come back as ints.
    """
    kind, args = next(iter(dist.items()))
    if kind in ("choice", "grid"):
        return list(args)
    is_int = kind in ("randint", "qrandint") or (key is not None and key in C.schema()
                                                   and C.schema()[key].numeric == "int")
    lo, hi = args[0], args[1]
    if kind == "randint":
        hi = hi - 1
    elif kind.startswith("q") and len(args) == 3:
        q = args[2]
        lo, hi = _on_grid(lo, q, math.ceil), _on_grid(hi, q, math.floor)
        if is_int and q == 1:
            hi -= 1
    return [int(lo), int(hi)] if is_int else [lo, hi]


def _on_grid(bound: float, q: float, round_fn) -> float:
    """The multiple of q nearest to bound, rounded inwards (as Ray's Quantized does); bound itself when on it."""
    scaled = bound / q
    return bound if math.isclose(scaled, round(scaled)) else round_fn(scaled) * q


def _check_space_sample(spec: SweepSpec, where: str) -> None:
    """Cross-key rules on one representative config per tuned value (catches e.g. npz without a path)."""
    for key, dist in spec.space.items():
        for value in _values_or_bounds(dist, key):
            cfg = copy.deepcopy(spec.config)
            value = int(value) if C.schema()[key].numeric == "int" else value
            C.set_dotted(cfg, key, value)
            C.validate_config(cfg, f"{where}: space.{key}={value!r} →", tuned=set(spec.space) - {key})


def param_space(spec: SweepSpec) -> dict[str, Any]:
    """The nested Ray Tune param space: fixed config with tune distributions at the tuned keys."""
    from ray import tune

    out = copy.deepcopy(spec.config)
    for key, dist in spec.space.items():
        kind, args = next(iter(dist.items()))
        is_int = C.schema()[key].numeric == "int"
        if kind == "uniform":
            d = tune.uniform(*args)
        elif kind == "loguniform":
            d = tune.loguniform(*args)
        elif kind == "quniform":
            d = tune.qrandint(int(args[0]), int(args[1]), int(args[2])) if is_int else tune.quniform(*args)
        elif kind == "randint":
            d = tune.randint(*args)
        elif kind == "choice":
            d = tune.choice(args)
        else:
            d = tune.grid_search(args)
        if spec.search["type"] == "grid" and kind == "choice":
            d = tune.grid_search(args)
        C.set_dotted(out, key, d)
    return out


def search_algorithm(spec: SweepSpec):
    """Random (seeded), grid or Optuna TPE (seeded), as the spec says."""
    from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter

    se = spec.search
    if se["type"] == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        alg = OptunaSearch(seed=se["seed"])  # TPE, seeded
        return ConcurrencyLimiter(alg, max_concurrent=se["max_concurrent"]) if se["max_concurrent"] else alg
    return BasicVariantGenerator(random_state=se["seed"], max_concurrent=se["max_concurrent"] or 0)


def describe(spec: SweepSpec) -> str:
    """The resolved spec as YAML, for --dry-run and the MLflow parent run."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None, width=100)
