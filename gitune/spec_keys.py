"""The space file's own keys (all but the trial config): each declared once with its default, check and doc.

As gitune.config.KEYS does for trial keys: a key of a block is dotted by its block (`scheduler.max_t`,
`generator.search.seed`), a block is a key whose own keys follow it. The spec parser (gitune.spaces) checks
every value with these checks, and docs/config.md and the JSON Schema (gitune.config_doc) are generated from
them; TOP_KEYS, SUB_DEFAULTS and GENERATOR_BLOCK are derived. Rules between keys (grace_period ≤ max_t, a
nuisance metric needs a nuisance, ...) stay in gitune.spaces, beside the parser that knows the config.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

from gitune.config import Check, Key, float_range, int_range, one_of

TRAINABLES = ("classifier",)
SEARCHERS = ("random", "grid", "optuna")
SCHEDULERS = ("asha", "fifo")
MODES = ("max", "min")
# Reported every epoch, so ASHA can compare trials on them at any rung.
EPOCH_METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "val/bal_acc", "val/acc_many",
                 "val/acc_medium", "val/acc_few")
# Reported by the generator trainable; `generator.metric` picks the checkpoint among generator trials, in
# the mode given here unless the block sets one. The losses do not say whether the nuisance was learned (an
# identity map minimises loss/recon_x); the fidelity metrics (gitune/metrics/generator_fidelity.py) do.
GENERATOR_METRICS: dict[str, str] = {
    "fid/nuisance_ed": "min", "fid/nuisance_ed_feat": "min",  # need config.data.nuisance
    "fid/style_x_content": "max", "fid/style_effect": "max", "fid/content": "max",
    "loss/recon_x": "min", "loss/recon_s": "min", "loss/recon_c": "min", "loss/gen_adv": "min",
    "loss/gen_total": "min", "loss/dis": "min",
}
REQUIRED = ("name",)  # no default: a file without them is refused


def _plain_name(name: Any) -> bool:
    """The sweep name is a folder under --storage and the MLflow experiment name: one plain path component, so
    the run folder cannot land outside --storage nor be read as a flag."""
    if not isinstance(name, str) or name.strip() in ("", ".", ".."):
        return False
    name = name.strip()
    return (not any(c in "/\\" or ord(c) < 32 or ord(c) == 127 for c in name)
            and not name.startswith("-") and len(name.encode("utf-8")) <= 200)


def _is_class_metric(metric: Any) -> bool:
    return isinstance(metric, str) and metric.startswith("val/class_acc/c") and metric[15:].isdigit()


def _or_null(chk: Check) -> Check:
    """The same check, also allowing null (a key that inherits its value from elsewhere)."""
    return Check(lambda v: v is None or chk.test(v), chk.expected + " (or null)", chk.numeric,
                 {"anyOf": [chk.json, {"type": "null"}]})


_NAME = Check(_plain_name, "a sweep name that is one plain folder name (not '.' or '..', no '/', '\\' or control "
                           "characters, not starting with '-', at most 200 bytes)",
              json={"type": "string", "minLength": 1, "pattern": "^[^/]*$"})
_TEXT = Check(lambda v: isinstance(v, str), "text", json={"type": "string"})
_METRIC = Check(lambda v: v in EPOCH_METRICS or _is_class_metric(v),
                f"a metric reported every epoch ({', '.join(EPOCH_METRICS)}, val/class_acc/cNNN)",
                json={"anyOf": [{"enum": list(EPOCH_METRICS)},
                                {"type": "string", "pattern": "^val/class_acc/c[0-9]+$"}]})
_MAPPING = Check(lambda v: v is None or isinstance(v, dict), "a mapping (or null)", json={"type": ["object", "null"]})
_SEARCHER = one_of(*SEARCHERS)
_SEED = int_range(0, nullable=True)
_CPU = float_range(0, lo_open=True)
_GPU = replace(float_range(0, 1), expected="0, 1 or a fraction < 1 (packs trials on a GPU); a trial uses one "
                                               "device, so more than 1 GPU per trial would sit idle")
_RETRIES = replace(int_range(-1), expected="an integer ≥ 0 (or -1: retry forever)")
_POINTS = Check(lambda v: v is None or (isinstance(v, list) and bool(v) and all(isinstance(p, dict) and p for p in v)),
                "a non-empty list of mappings {tuned config key: value} (or null)",
                json={"type": ["array", "null"], "minItems": 1,
                      "items": {"type": "object", "minProperties": 1}})
_CHECKPOINT = Check(lambda v: v is None or (isinstance(v, str) and v.strip() != ""),
                    "a path to generator.pt, runs:/<run_id> or models:/<name>/<version> (or null)",
                    json={"type": ["string", "null"], "minLength": 1})

SPEC_KEYS: tuple[Key, ...] = (
    Key("name", None, _NAME, "the sweep (and MLflow experiment) name; required"),
    Key("description", "", _TEXT, "free text"),
    Key("trainable", "classifier", one_of(*TRAINABLES), "which trainable to run"),
    Key("metric", "val/bal_acc", _METRIC, "the metric ASHA and the searcher optimise"),
    Key("mode", "max", one_of(*MODES), "whether the metric is maximised or minimised"),
    Key("num_samples", 1, int_range(1), "trials to sample (each grid point counts once)"),
    Key("scheduler", {}, _MAPPING, "the trial scheduler"),
    Key("scheduler.type", "asha", one_of(*SCHEDULERS), "`asha` stops poor trials at rungs, `fifo` runs them all"),
    Key("scheduler.max_t", None, int_range(1, nullable=True), "in epochs (null: train.epochs)"),
    Key("scheduler.grace_period", 1, int_range(1), "epochs before ASHA may stop a trial (≤ max_t)"),
    Key("scheduler.reduction_factor", 3, float_range(1, lo_open=True), "ASHA keeps 1/reduction_factor at each rung"),
    Key("search", {}, _MAPPING, "the search algorithm"),
    Key("search.type", "random", _SEARCHER, "`random`, `grid` (choice/grid values only) or `optuna` (TPE)"),
    Key("search.seed", 0, _SEED, "the searcher's seed (null: unseeded)"),
    Key("search.max_concurrent", None, int_range(1, nullable=True), "trials at once (null: as resources allow)"),
    Key("search.points_to_evaluate", None, _POINTS,
        "configs tried first, e.g. the paper's recipe: [{git.prob: 0.5, optim.lr: 0.1}]; each names tuned keys "
        "(every one with optuna) with values their distributions can produce; random and optuna only "
        "(docs/search.md)"),
    Key("resources", {}, _MAPPING, "per-trial resources"),
    Key("resources.cpu", 1, _CPU, "CPUs per trial"),
    Key("resources.gpu", 0, _GPU, "GPUs per trial: 0, 1 or a fraction that packs trials on a GPU"),
    Key("checkpoint", {}, _MAPPING, "checkpoint retention"),
    Key("checkpoint.num_to_keep", 2, int_range(1, nullable=True), "checkpoints kept per trial (null: all)"),
    Key("failure", {}, _MAPPING, "retries of crashed trials"),
    Key("failure.max_failures", 2, _RETRIES, "retries of a crashed trial (-1: forever)"),
    Key("time_budget_s", None, float_range(0, lo_open=True, nullable=True),
        "wall-clock seconds for the classifier stage (Tune's TuneConfig time_budget_s): no new trial starts after "
        "it and running ones are stopped (null: no limit)"),
    Key("config", None, _MAPPING, "fixed trial config"),
    Key("space", None, _MAPPING, "tuned trial config: dotted config keys → one distribution"),
    Key("generator", None, _MAPPING, "the generator stage (GIT); absent: none"),
    Key("generator.checkpoint", None, _CHECKPOINT,
        "a generator.pt file/folder, runs:/<run_id> or models:/<name>/<version>: skips pretraining"),
    Key("generator.register_as", None, _or_null(_TEXT),
        "the MLflow registered model a newly trained generator becomes a version of (null: `<name>-generator`; "
        "'': not registered); `generator.checkpoint: models:/NAME/VERSION` takes it"),
    Key("generator.num_samples", 1, int_range(1), "generator trials"),
    Key("generator.metric", None, one_of(*GENERATOR_METRICS, nullable=True),
        "null: fid/nuisance_ed with a data.nuisance, else fid/style_x_content"),
    Key("generator.mode", None, one_of(*MODES, nullable=True), "null: the metric's own"),
    Key("generator.search", {}, _MAPPING, "the generator trials' search algorithm"),
    Key("generator.search.type", "random", _SEARCHER, "as `search.type`"),
    Key("generator.search.seed", 0, _SEED, "as `search.seed`"),
    Key("generator.resources", {}, _MAPPING, "per generator trial; a key left out is the classifier trials'"),
    Key("generator.resources.cpu", None, _or_null(_CPU), "null: resources.cpu"),
    Key("generator.resources.gpu", None, _or_null(_GPU), "null: resources.gpu"),
    Key("generator.config", None, _MAPPING, "generator keys without the `generator.` prefix (docs/config.md)"),
    Key("generator.space", None, _MAPPING, "tuned generator keys, without the prefix"),
)
SPEC_KEY_BY_NAME: dict[str, Key] = {k.name: k for k in SPEC_KEYS}


def children(block: str) -> dict[str, Key]:
    """{name within the block: Key} of a block's own keys; block '' is the file's top level."""
    start = f"{block}." if block else ""
    depth = start.count(".")
    return {k.name[len(start):]: k for k in SPEC_KEYS if k.name.startswith(start) and k.name.count(".") == depth}


def defaults(block: str) -> dict[str, Any]:
    """A block's defaults; a nested block (default {}) is filled with its own keys' defaults."""
    return {name: defaults(k.name) if k.default == {} else copy.deepcopy(k.default)
            for name, k in children(block).items()}


# Derived: the top-level keys with their docs, the blocks every sweep has, and the optional generator block.
TOP_KEYS: dict[str, str] = {name: k.doc for name, k in children("").items()}
SUB_DEFAULTS: dict[str, dict[str, Any]] = {name: defaults(name) for name, k in children("").items() if k.default == {}}
GENERATOR_BLOCK: dict[str, Any] = defaults("generator")
