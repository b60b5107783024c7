"""`python -m gitune.report EXPERIMENT`: summary tables and figures of one sweep, read back from MLflow.

Writes into a folder (default reports/<experiment>) and uploads the same files under `report/` on the
sweep's parent run: the best trials, every trial, the headline metrics per group of trials pooled over seeds
and instances (with paired differences against a baseline group), eKLD against class size pooled over
trials, few-shot accuracy against a tuned parameter, and parameter importances when Optuna searched. Bad
input (unknown experiment, parent run or key; unreachable store) is one line and exit status 2, with nothing
written.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gitune.errors import CliParser, UserError, run_cli
from gitune.metrics.accuracy import SHOT_GROUPS, shot_groups
from gitune.report_stats import is_replicate_key, same_value

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# (metric key, short column title) of the best-trials table, shown when any trial has them.
TABLE_METRICS = (
    ("val/bal_acc", "val bal. acc"), ("test/bal_acc", "test bal. acc"),
    ("val/acc_few", "val few-shot acc"), ("test/acc_few", "test few-shot acc"),
    ("inv/ekld_few", "eKLD few"), ("inv/ekld_many", "eKLD many"),
    ("inv/ekld_size_spearman", "Spearman(size, eKLD)"),
    ("inv/geed_few", "G-EED few"), ("inv/rep_ratio", "rep. ratio"),
)
# Extra columns of trials.csv (every trial).
MORE_METRICS = ("val/acc", "val/acc_many", "val/acc_medium", "test/acc", "test/acc_many", "test/acc_medium",
                "inv/ekld_medium", "inv/ekld_mean", "inv/ekld_gen_few", "inv/ekld_gen_many", "inv/consistency_few",
                "inv/consistency_many", "inv/geed_many", "inv/latent_geed_few", "train/loss")
# Per-class families drawn against class size: (metric prefix, file stem, y label, short name).
PER_CLASS = (
    ("inv/ekld/", "ekld_vs_class_size", "eKLD under the nuisance T (nats)\nlower = more invariant", "eKLD"),
    ("inv/ekld_gen/", "ekld_gen_vs_class_size", "eKLD under the generator (nats)\nlower = more invariant",
     "generator eKLD"),
    ("inv/geed/", "geed_vs_class_size", "softmax G-EED (nats)\nlower = more invariant", "G-EED"),
)
# Short titles of the aggregated headline metrics (gitune.report_stats.headline_metrics).
HEADLINE_TITLES = {"test/bal_acc": "test bal. acc", "test/acc_many": "test many-shot acc",
                   "test/acc_medium": "test medium-shot acc", "test/acc_few": "test few-shot acc",
                   "val/bal_acc": "val bal. acc", "val/acc_many": "val many-shot acc",
                   "val/acc_medium": "val medium-shot acc", "val/acc_few": "val few-shot acc",
                   "inv/ekld_few": "eKLD few", "inv/ekld_many": "eKLD many",
                   "inv/ekld_size_spearman": "Spearman(size, eKLD)"}
AUTO_BASELINE = ("git.prob", 0.0)  # GIT off: the baseline every GIT sweep compares against
COLOR_DEFAULTS = ("git.prob", "train.rule", "data.instance")
MAX_COLOUR_GROUPS = 6  # a numeric colour key with more distinct values is binned into quartiles
MIN_IMPORTANCE_TRIALS = 4
CLASS_RE = re.compile(r"^c\d+$")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = CliParser(prog="python -m gitune.report", description=__doc__.splitlines()[0])
    p.add_argument("experiment", help="MLflow experiment name (= the sweep's name)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLflow's default, sqlite:///mlflow.db "
                   "in the working directory)")
    p.add_argument("--out", help="output folder (default: reports/<experiment>); replaced as a whole")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--parent", metavar="RUN_ID", help="report on this parent (sweep) run instead of the "
                       "experiment's most recent one")
    which.add_argument("--all", action="store_true", help="pool the trials of every parent run of the experiment")
    p.add_argument("--top", type=int, default=10, help="rows of the best-trials table (default 10)")
    p.add_argument("--param", metavar="KEY", help="trial parameter for the few-shot accuracy plot (default: "
                   "git.prob when it varies, else the first varying numeric tuned parameter)")
    p.add_argument("--color-by", metavar="KEY", help="trial parameter that colours the class-size scatter "
                   "(default: git.prob, train.rule or data.instance, the first that varies)")
    p.add_argument("--group-by", metavar="KEY[,KEY...]", help="trial parameters that define the groups of "
                   "groups.csv: per group n, mean, sd and 95%% Student-t interval of test balanced/many/medium/"
                   "few-shot accuracy (val/ when no trial has test/), eKLD few/many and Spearman(size, eKLD), "
                   "pooled over the group's trials (default: every varying tuned parameter except seeds and "
                   "instances, i.e. keys ending in .seed or .instance: the replicates pooled over)")
    p.add_argument("--baseline", metavar="KEY=VALUE", help="paired differences (paired.csv) of every other group "
                   "against the trials with KEY=VALUE (e.g. git.prob=0 or aug.oracle_prob=0; 0 matches a stored "
                   "0.0): a trial pairs with the baseline trial that has the same seeds and instances and the "
                   "same values of every other grouping key (and of any other key pooled over); mean difference, "
                   "95%% t-interval and paired t-test p. KEY joins the grouping keys if needed. Default: "
                   "git.prob=0 (GIT off) when git.prob is a grouping key with 0 among its values and was not "
                   "sampled from a continuous range; 'none' for no paired differences")
    p.add_argument("--finished-only", action="store_true",
                   help="leave out trials that ASHA stopped early (their metrics come from an earlier epoch)")
    p.add_argument("--no-upload", action="store_true", help="write the folder only; do not log it to MLflow")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run_cli(run, parse_args(argv))


# --------------------------------------------------------------------------------------------------- loading


@dataclass
class Trial:
    run_id: str
    trial_id: str
    parent_id: str
    status: str  # MLflow run status
    state: str  # finished | stopped early | errored | killed | running
    stopped_by: str  # scheduler that stopped it early ("" if none)
    stopped_at: int | None
    error: str
    params: dict[str, Any]
    raw_params: dict[str, str]
    metrics: dict[str, float]
    counts: dict[str, int] = field(default_factory=dict)  # class key -> training images

    @property
    def early(self) -> bool:
        return self.state == "stopped early"


@dataclass
class Sweep:
    uri: str
    experiment: str
    experiment_id: str
    parents: list  # mlflow Run objects, most recent first
    trials: list[Trial]  # every classifier trial of those parents
    metric: str
    mode: str
    search: str
    space: dict[str, str]  # tuned key -> distribution text (from the parents' space.* params)


def parse_value(text: str) -> Any:
    """MLflow params are str(python value): turn them back into None/bool/int/float, else keep the string."""
    if text in ("None", "null"):
        return None
    if text in ("True", "False"):
        return text == "True"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _state(run) -> tuple[str, str]:
    status, tags = run.info.status, run.data.tags
    if status == "FINISHED":
        stopped = tags.get("gitune.stopped_early", "")
        return ("stopped early" if stopped else "finished"), stopped
    return {"FAILED": "errored", "KILLED": "killed"}.get(status, status.lower()), ""


def _store_error(uri: str, e: Exception) -> UserError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return UserError(f"--tracking-uri {uri}: cannot read the MLflow store ({first})")


def open_store(uri_arg: str | None):
    from gitune import tracking

    uri = tracking.resolve_uri(uri_arg)
    tracking.check_reachable(uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        if not db.is_file():
            raise UserError(f"--tracking-uri {uri}: no MLflow database at {db} (run a sweep first, or pass the "
                            f"store the sweep used)")
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri[len("file://"):] if uri.startswith("file://") else uri)
        if not folder.is_dir():
            raise UserError(f"--tracking-uri {uri}: folder {folder} does not exist")
    return uri, tracking._client(uri)


def load_sweep(client, uri: str, name: str, parent_id: str | None, pool_all: bool) -> Sweep:
    from gitune.tracking import PARENT, ROLE, retry

    try:
        exp = retry(lambda: client.get_experiment_by_name(name))
    except Exception as e:  # noqa: BLE001 - MLflow wraps sqlite/http errors in several types
        raise _store_error(uri, e) from None
    if exp is None or exp.lifecycle_stage == "deleted":
        known = [x.name for x in retry(lambda: client.search_experiments(max_results=200))]
        listed = ", ".join(known[:10]) + (f", … ({len(known)} in all)" if len(known) > 10 else "")
        raise UserError(f"experiment '{name}' not found in {uri}; expected a sweep name, known experiments: "
                        f"{listed or 'none'}")
    parents = retry(lambda: client.search_runs([exp.experiment_id], f"tags.`{ROLE}` = 'sweep'",
                                               order_by=["attributes.start_time DESC"], max_results=10_000))
    if not parents:
        raise UserError(f"experiment '{name}' has no parent sweep run (tag {ROLE}=sweep); expected an experiment "
                        f"written by python -m gitune.sweep")
    if parent_id:
        chosen = [p for p in parents if p.info.run_id == parent_id]
        if not chosen:
            ids = ", ".join(p.info.run_id for p in parents[:10])
            raise UserError(f"--parent {parent_id}: not a parent sweep run of experiment '{name}'; expected one "
                            f"of: {ids}")
    else:
        chosen = parents if pool_all else parents[:1]
    trials: list[Trial] = []
    for p in chosen:
        runs = retry(lambda: client.search_runs(
            [exp.experiment_id], f"tags.`{PARENT}` = '{p.info.run_id}' and tags.`{ROLE}` = 'trial'",
            order_by=["attributes.start_time ASC"], max_results=10_000))
        for r in runs:
            if r.data.tags.get("stage", "classifier") != "classifier":
                continue  # the generator stage's runs
            state, stopped_by = _state(r)
            at = r.data.tags.get("gitune.stopped_at_epoch")
            trials.append(Trial(
                run_id=r.info.run_id, trial_id=r.data.tags.get("gitune.trial_id", r.info.run_id[:8]),
                parent_id=p.info.run_id, status=r.info.status, state=state, stopped_by=stopped_by,
                stopped_at=int(at) if at and at.isdigit() else None, error=r.data.tags.get("gitune.error", ""),
                params={k: parse_value(v) for k, v in r.data.params.items()}, raw_params=dict(r.data.params),
                metrics=dict(r.data.metrics)))
    which = "any parent run" if len(chosen) > 1 else f"parent run {chosen[0].info.run_id}"
    if not trials:
        raise UserError(f"experiment '{name}': {which} has no classifier trial runs; expected a sweep whose "
                        f"trials started")
    latest = chosen[0].data.params
    space: dict[str, str] = {}
    for p in chosen:
        for k, v in p.data.params.items():
            if k.startswith("space."):
                space.setdefault(k[len("space."):], v)
    return Sweep(uri=uri, experiment=name, experiment_id=exp.experiment_id, parents=chosen, trials=trials,
                 metric=latest.get("metric", "val/bal_acc"), mode=latest.get("mode", "max"),
                 search=latest.get("search", ""), space=space)


def load_class_counts(client, trials: Sequence[Trial]) -> list[str]:
    """Fill each trial's training class sizes from its class_counts.csv (per_class.csv as a fallback).
    Returns the trial ids that had neither."""
    from gitune.tracking import retry

    missing = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in trials:
            counts = None
            for name in ("class_counts.csv", "per_class.csv"):
                try:
                    path = retry(lambda: client.download_artifacts(t.run_id, name, os.path.join(tmp, t.run_id)))
                except Exception:  # noqa: BLE001 - missing artifact: MlflowException or OSError by store
                    continue
                counts = _read_counts(Path(path).read_text(), header=name == "per_class.csv")
                if counts:
                    break
            if counts:
                t.counts = counts
            else:
                missing.append(t.trial_id)
    return missing


def _read_counts(text: str, header: bool) -> dict[str, int]:
    rows = list(csv.reader(io.StringIO(text)))
    out: dict[str, int] = {}
    if header:  # class,name,train_count,...
        for row in rows[1:]:
            if len(row) >= 3 and row[0].isdigit() and row[2].isdigit():
                out[f"c{int(row[0]):03d}"] = int(row[2])
    else:  # cNNN,<name>,<count>
        for row in rows:
            if len(row) >= 3 and CLASS_RE.match(row[0]) and row[-1].strip().isdigit():
                out[row[0]] = int(row[-1])
    return out


# --------------------------------------------------------------------------------------------------- analysis


def config_keys(trials: Sequence[Trial]) -> list[str]:
    """Trial config keys (dotted; not derived values like data/train_images), in first-seen order."""
    keys: dict[str, None] = {}
    for t in trials:
        for k in t.raw_params:
            if "/" not in k:
                keys.setdefault(k)
    return list(keys)


def varying_keys(trials: Sequence[Trial]) -> list[str]:
    return [k for k in config_keys(trials) if len({t.raw_params.get(k) for t in trials}) > 1]


def tuned_columns(sweep: Sweep, trials: Sequence[Trial]) -> list[str]:
    """The tuned config: the parents' space keys, then any other parameter that varies between trials."""
    keys = [k for k in sweep.space if any(k in t.raw_params for t in trials)]
    return keys + [k for k in varying_keys(trials) if k not in keys]


def is_numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def dist_kind(sweep: Sweep, key: str) -> str:
    """'loguniform', 'categorical' (choice/grid) or 'continuous' from the space text; '' when not tuned."""
    text = sweep.space.get(key, "")
    if "loguniform" in text:
        return "loguniform"
    if "choice" in text or "grid" in text:
        return "categorical"
    return "continuous" if text else ""


def treat_as_categorical(sweep: Sweep, key: str, values: Sequence[Any]) -> bool:
    distinct = set(values)
    if not all(is_numeric(v) for v in values):
        return True
    kind = dist_kind(sweep, key)
    if kind:
        return kind == "categorical"
    return all(float(v).is_integer() for v in distinct) and len(distinct) <= MAX_COLOUR_GROUPS


def check_key(option: str, key: str, trials: Sequence[Trial]) -> None:
    keys = config_keys(trials)
    if key not in keys:
        vary = varying_keys(trials)
        hint = f"varying parameters: {', '.join(vary[:12])}" if vary else "no parameter varies between trials"
        raise UserError(f"{option} {key}: not a parameter of the trials; expected a dotted config key ({hint})")


def default_color_by(trials: Sequence[Trial]) -> str | None:
    vary = set(varying_keys(trials))
    return next((k for k in COLOR_DEFAULTS if k in vary), None)


def default_param(sweep: Sweep, trials: Sequence[Trial]) -> str | None:
    vary = varying_keys(trials)
    if "git.prob" in vary:
        return "git.prob"
    tuned = [k for k in tuned_columns(sweep, trials) if k in vary]
    for k in tuned:
        if not treat_as_categorical(sweep, k, [t.params.get(k) for t in trials]):
            return k
    return tuned[0] if tuned else (vary[0] if vary else None)


def grouping(group_by: str | None, baseline: str | None, sweep: Sweep,
             trials: Sequence[Trial]) -> tuple[list[str], tuple[str, Any] | None, bool]:
    """The grouping keys and the baseline (key, value) of the seed/instance aggregation, checked against the
    trials before anything is written. Returns (keys, baseline or None, whether the baseline is the default)."""
    if group_by is not None:
        keys = [k.strip() for k in group_by.split(",")]
        if not all(keys):
            raise UserError(f"--group-by {group_by}: expected KEY[,KEY...], comma-separated dotted config keys")
        for k in keys:
            check_key("--group-by", k, sweep.trials)
        keys = list(dict.fromkeys(keys))
    else:
        vary = set(varying_keys(trials))
        keys = [k for k in tuned_columns(sweep, trials) if k in vary and not is_replicate_key(k)]
    if baseline is None:
        key, value = AUTO_BASELINE
        values = [t.params.get(key) for t in trials]
        if (key in keys and len(set(values)) > 1 and any(same_value(v, value) for v in values)
                and dist_kind(sweep, key) in ("categorical", "")):  # a continuous range hits 0 by chance only
            return keys, AUTO_BASELINE, True
        return keys, None, False
    if baseline.strip().lower() == "none":
        return keys, None, False
    key, sep, text = (x.strip() for x in baseline.partition("="))
    if not sep or not key or not text:
        raise UserError(f"--baseline {baseline}: expected KEY=VALUE (e.g. git.prob=0), or none")
    check_key("--baseline", key, sweep.trials)
    value = parse_value(text)
    present = list(dict.fromkeys(t.params.get(key) for t in trials))
    if not any(same_value(v, value) for v in present):
        from gitune.report_stats import sort_key

        listed = ", ".join(_fmt(v) for v in sorted(present, key=sort_key)[:12])
        raise UserError(f"--baseline {key}={text}: no reported trial has {key} = {text}; expected one of: {listed}")
    return (keys if key in keys else [key, *keys]), (key, value), False


def metric_sorted(sweep: Sweep, trials: Sequence[Trial]) -> list[Trial]:
    """By the sweep's metric and mode; trials without it last."""
    sign = -1.0 if sweep.mode == "max" else 1.0
    have = [t for t in trials if _finite(t.metrics.get(sweep.metric))]
    rest = [t for t in trials if not _finite(t.metrics.get(sweep.metric))]
    return sorted(have, key=lambda t: sign * t.metrics[sweep.metric]) + rest


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


@dataclass
class ColourGroups:
    key: str | None
    labels: list[str]  # in legend order
    of_trial: dict[str, str]  # run id -> label
    ordered: bool
    binned: bool = False


def colour_groups(sweep: Sweep, key: str | None, trials: Sequence[Trial]) -> ColourGroups:
    """Trial → colour group: each value of the key, or quartile bins when a numeric key has many values."""
    if key is None:
        return ColourGroups(None, ["all trials"], {t.run_id: "all trials" for t in trials}, False)
    values = {t.run_id: t.params.get(key) for t in trials}
    distinct = list(dict.fromkeys(values.values()))
    numeric = all(is_numeric(v) for v in distinct)
    if numeric and len(distinct) > MAX_COLOUR_GROUPS and not treat_as_categorical(sweep, key, distinct):
        import numpy as np

        edges = [float(e) for e in np.quantile(sorted(float(v) for v in distinct), [0, 0.25, 0.5, 0.75, 1])]
        edges = sorted(set(edges))
        labels = [f"[{lo:.3g}, {hi:.3g}{']' if i == len(edges) - 2 else ')'}"
                  for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]

        def label_of(v: float) -> str:
            for i in range(len(edges) - 1):
                if v < edges[i + 1] or i == len(edges) - 2:
                    return labels[i]
            return labels[-1]

        return ColourGroups(key, labels, {r: label_of(float(v)) for r, v in values.items()}, True, binned=True)
    ordered = numeric and not key.endswith(("instance", "seed"))  # instances and seeds are labels, not levels
    order = sorted(distinct) if numeric else sorted(distinct, key=lambda v: str(v))
    labels = [_fmt(v) for v in order]
    return ColourGroups(key, labels, {r: _fmt(v) for r, v in values.items()}, ordered)


@dataclass
class Point:
    trial: Trial
    group: str
    cls: str
    size: int
    value: float


def per_class_points(prefix: str, trials: Sequence[Trial], groups: ColourGroups) -> list[Point]:
    pts = []
    for t in trials:
        for k, v in sorted(t.metrics.items()):
            if not k.startswith(prefix):
                continue
            cls = k[len(prefix):]
            if CLASS_RE.match(cls) and cls in t.counts and _finite(v):
                pts.append(Point(t, groups.of_trial[t.run_id], cls, t.counts[cls], float(v)))
    return pts


def _shot_means(pts: Sequence[Point]) -> list[str]:
    """Mean value of the pooled points in each shot group (the class's size in its own trial)."""
    out = []
    for group in SHOT_GROUPS:
        vals = [p.value for p in pts if shot_group(p.size) == group]
        out.append(f"{sum(vals) / len(vals):.4g} ({len(vals)})" if vals else "–")
    return out


def shot_group(n: int) -> str:
    return next(g for g, classes in shot_groups([n]).items() if classes)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from gitune.metrics.invariance import spearman as rho

    return rho(list(map(float, x)), list(map(float, y))) if len(x) > 2 else float("nan")


def importances(sweep: Sweep, trials: Sequence[Trial]) -> tuple[dict[str, float], str, int] | str:
    """fANOVA (or PED-ANOVA without scikit-learn) on an in-memory Optuna study rebuilt from the trials.
    Returns (importances, evaluator name, trials used), or the reason it was skipped."""
    if sweep.search != "optuna":
        return f"the sweep searched with `{sweep.search or 'unknown'}`, not Optuna"
    done = [t for t in trials if t.status == "FINISHED" and _finite(t.metrics.get(sweep.metric))]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return f"only {len(done)} completed trial(s) reported {sweep.metric}; at least {MIN_IMPORTANCE_TRIALS} needed"
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    keys = [k for k in sweep.space if all(k in t.raw_params for t in done)] or varying_keys(done)
    dists = {}
    for k in keys:
        values = [t.params.get(k) for t in done]
        distinct = list(dict.fromkeys(values))
        if len(distinct) < 2:
            continue
        if not treat_as_categorical(sweep, k, values):
            lo, hi = min(map(float, values)), max(map(float, values))
            dists[k] = FloatDistribution(lo, hi, log=dist_kind(sweep, k) == "loguniform" and lo > 0)
        else:
            dists[k] = CategoricalDistribution([v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
                                                for v in distinct])
    if not dists:
        return "no tuned parameter took more than one value"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize")
    for t in done:
        params = {k: (float(t.params[k]) if isinstance(d, FloatDistribution) else t.params.get(k))
                  for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=t.metrics[sweep.metric]))
    try:
        from optuna.importance import FanovaImportanceEvaluator

        evaluator, name = FanovaImportanceEvaluator(seed=0), "fANOVA"
        import sklearn  # noqa: F401 - fANOVA's random forest
    except ImportError:
        from optuna.importance import PedAnovaImportanceEvaluator

        evaluator, name = PedAnovaImportanceEvaluator(), "PED-ANOVA"
    try:
        imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as e:
        return f"Optuna could not compute importances ({e})"
    return {k: float(v) for k, v in imp.items()}, name, len(done)


# --------------------------------------------------------------------------------------------------- output


def _fmt(v: Any, missing: str = "none") -> str:
    if v is None:
        return missing
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _num(v: Any) -> str:
    """Full precision in CSV (round-trips to the MLflow value)."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(v) if isinstance(v, float) else str(v)


def _epoch(t: Trial) -> str:
    e = t.metrics.get("epoch")
    return str(int(e)) if _finite(e) and float(e).is_integer() else _num(e)


def _csv(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _state_text(t: Trial) -> str:
    if t.early:
        return f"stopped early ({t.stopped_by}" + (f", epoch {t.stopped_at})" if t.stopped_at else ")")
    return t.state


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "experiment"


@dataclass
class Plan:
    """Everything decided from the inputs before any file is written."""

    sweep: Sweep
    analysed: list[Trial]
    color_key: str | None
    param: str | None
    top: int
    finished_only: bool
    no_counts: list[str]
    group_keys: list[str] = field(default_factory=list)  # trials with the same values are one group
    baseline: tuple[str, Any] | None = None  # (key, parsed value) of the baseline group
    baseline_auto: bool = False  # chosen by default, not by --baseline
    group_by_given: bool = False  # --group-by, not the default grouping


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UserError(f"--top: expected an integer ≥ 1, got {args.top}")
    uri, client = open_store(args.tracking_uri)
    sweep = load_sweep(client, uri, args.experiment, args.parent, args.all)
    analysed = [t for t in sweep.trials if t.status == "FINISHED" and not (args.finished_only and t.early)]
    if not analysed:
        states = ", ".join(sorted({t.state for t in sweep.trials}))
        raise UserError(f"experiment '{sweep.experiment}': no trial to report on ({len(sweep.trials)} trial(s), "
                        f"{states}); expected at least one trial that "
                        f"{'finished all epochs' if args.finished_only else 'finished or was stopped by ASHA'}")
    for option, key in (("--param", args.param), ("--color-by", args.color_by)):
        if key is not None:
            check_key(option, key, sweep.trials)
    color_key = args.color_by or default_color_by(analysed)
    param = args.param or default_param(sweep, analysed)
    group_keys, baseline, auto = grouping(args.group_by, args.baseline, sweep, analysed)
    out = Path(args.out) if args.out else Path("reports") / safe_name(sweep.experiment)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; expected a folder (created or replaced)")
    no_counts = load_class_counts(client, analysed)
    plan = Plan(sweep, analysed, color_key, param, args.top, args.finished_only, no_counts, group_keys, baseline,
                auto, args.group_by is not None)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    try:
        summary = write_report(plan, tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"gitune: report for experiment '{sweep.experiment}' in {out}")
    print(f"gitune: {summary}")
    if not args.no_upload:
        from gitune.tracking import retry

        target = sweep.parents[0].info.run_id
        try:
            retry(lambda: client.log_artifacts(target, str(out), "report"))
        except Exception as e:  # noqa: BLE001 - a read-only server or a full disk; the folder is complete
            print(f"gitune: error: could not upload the report to parent run {target}: "
                  f"{(str(e).splitlines() or [type(e).__name__])[0]}", file=sys.stderr)
            return 1
        print(f"gitune: uploaded to parent run {target} under report/")
    return 0


def _replace_dir(tmp: Path, out: Path) -> None:
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_report(plan: Plan, d: Path) -> str:
    """Write every table, figure and report.md into folder d; return the one-line summary."""
    sweep = plan.sweep
    counts = {s: sum(t.state == s for t in sweep.trials) for s in ("finished", "stopped early", "errored")}
    ranked = metric_sorted(sweep, plan.analysed)
    md = _header(plan, counts)
    md += _tables(plan, ranked, d)
    md += _groups_section(plan, d)
    scatter_md, rho = _per_class_section(plan, d)
    md += scatter_md
    md += _few_shot_section(plan, d)
    md += _importance_section(plan, d)
    (d / "report.md").write_text("\n".join(md))
    rho_text = f"; pooled Spearman(class size, eKLD) = {_rho(rho)}" if math.isfinite(rho) else ""
    best_text = (f"; best {sweep.metric} = {_fmt(ranked[0].metrics.get(sweep.metric))} (trial {ranked[0].trial_id})"
                 if ranked and _finite(ranked[0].metrics.get(sweep.metric)) else "")
    return (f"{len(sweep.trials)} trials ({counts['finished']} finished, {counts['stopped early']} stopped early, "
            f"{counts['errored']} errored){best_text}{rho_text}")


def _header(plan: Plan, counts: dict[str, int]) -> list[str]:
    sweep = plan.sweep
    md = [f"# Sweep report: {sweep.experiment}\n",
          f"- Tracking URI: `{sweep.uri}`, experiment `{sweep.experiment}` (id {sweep.experiment_id})"]
    for p in sweep.parents:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.info.start_time / 1000))
        md.append(f"- Parent run `{p.info.run_id}` ({p.info.status.lower()}, started {started}, "
                  f"{sum(t.parent_id == p.info.run_id for t in sweep.trials)} trials)")
    latest = sweep.parents[0].data.params
    sched = latest.get("scheduler", "?")
    if sched == "asha":
        sched += (f" (max_t {latest.get('scheduler.max_t')}, grace period {latest.get('scheduler.grace_period')}, "
                  f"reduction factor {latest.get('scheduler.reduction_factor')})")
    md.append(f"- Search `{sweep.search}`, scheduler {sched}; metric `{sweep.metric}` ({sweep.mode})")
    if sweep.space:
        md.append("- Space: " + "; ".join(f"`{k}` {v}" for k, v in sweep.space.items()))
    other = len(sweep.trials) - sum(counts.values())
    which = ("finished only" if plan.finished_only else
             "finished + stopped early; the metrics of stopped trials come from the epoch they stopped at")
    md.append(f"- Trials: {len(sweep.trials)} classifier trials: {counts['finished']} finished all epochs, "
              f"{counts['stopped early']} stopped early by the scheduler, {counts['errored']} errored"
              f"{f', {other} killed or running' if other else ''}. Reported on: {len(plan.analysed)} ({which}).")
    md.append(f"- Written {time.strftime('%Y-%m-%d %H:%M')} by `python -m gitune.report`\n")
    return md


def _tables(plan: Plan, ranked: list[Trial], d: Path) -> list[str]:
    """best_trials.csv/.md (top N of the reported trials) and trials.csv (every trial)."""
    sweep = plan.sweep
    cols = tuned_columns(sweep, plan.analysed)
    metrics = [(sweep.metric, sweep.metric)] if sweep.metric not in dict(TABLE_METRICS) else []
    metrics += [(k, title) for k, title in TABLE_METRICS if any(k in t.metrics for t in sweep.trials)]
    best = ranked[:plan.top]
    header = ["rank", "trial_id", "run_id", "state", "epoch", *cols, *[k for k, _ in metrics]]
    rows = [[i + 1, t.trial_id, t.run_id, _state_text(t), _epoch(t),
             *[_num(t.params.get(k)) for k in cols], *[_num(t.metrics.get(k)) for k, _ in metrics]]
            for i, t in enumerate(best)]
    (d / "best_trials.csv").write_text(_csv(header, rows))
    md_rows = [[i + 1, f"`{t.trial_id}`", _state_text(t), _fmt(t.metrics.get("epoch")),
                *[_fmt(t.params.get(k)) for k in cols], *[_fmt(t.metrics.get(k), "–") for k, _ in metrics]]
               for i, t in enumerate(best)]
    best_md = _md_table(["#", "trial", "state", "epoch", *cols, *[title for _, title in metrics]], md_rows)
    (d / "best_trials.md").write_text(f"# Best trials of {sweep.experiment} by {sweep.metric} ({sweep.mode})\n\n"
                                      + best_md)

    more = [k for k in MORE_METRICS if any(k in t.metrics for t in sweep.trials)]
    all_metrics = [k for k, _ in metrics] + more
    all_cols = tuned_columns(sweep, sweep.trials)
    header = ["trial_id", "run_id", "parent_run_id", "status", "state", "stopped_early", "stopped_at_epoch",
              "epoch", "error", *all_cols, *all_metrics]
    rows = [[t.trial_id, t.run_id, t.parent_id, t.status, t.state, t.stopped_by, _num(t.stopped_at),
             _epoch(t), t.error, *[_num(t.params.get(k)) for k in all_cols],
             *[_num(t.metrics.get(k)) for k in all_metrics]] for t in metric_sorted(sweep, sweep.trials)]
    (d / "trials.csv").write_text(_csv(header, rows))
    return [f"## Best trials by `{sweep.metric}` ({sweep.mode}), top {len(best)} of {len(plan.analysed)}\n",
            best_md,
            "Accuracies are fractions of 1; eKLD and G-EED in nats (lower = more invariant); Spearman(size, eKLD) "
            "is negative when invariance fails to transfer to small classes. Full precision: "
            "[best_trials.csv](best_trials.csv); every trial, errored ones included: [trials.csv](trials.csv).\n"]


def _groups_section(plan: Plan, d: Path) -> list[str]:
    """The headline metrics per group, pooled over seeds and instances, and paired differences against the
    baseline: groups.csv, paired.csv, groups.png and their Markdown. The sweep's answer with its uncertainty."""
    from gitune import report_plots as rp
    from gitune import report_stats as rs

    trials, keys = plan.analysed, plan.group_keys
    md = ["## Groups pooled over seeds and instances\n"]
    metrics = rs.headline_metrics(trials)
    if not metrics:
        return md + ["_Skipped: no trial recorded a headline metric (balanced, many/medium/few-shot accuracy, "
                     "eKLD)._\n"]
    pooled = [k for k in varying_keys(trials) if k not in keys]
    groups = rs.aggregate(trials, keys, metrics)
    md += _groups_table(plan, groups, metrics, pooled, d)
    pairings = None
    if plan.baseline:
        pairings = rs.compare(groups, keys, *plan.baseline, pooled, metrics)
        md += _paired_table(plan, pairings, metrics, pooled, d)
    rp.save(_groups_figure(plan, groups, pairings, metrics), d / "groups.png")
    return md[:1] + ["![group means and paired differences with 95 % CIs](groups.png)\n"] + md[1:]


def _group_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values)) or "all trials"


def _is_base(plan: Plan, values: Sequence[Any]) -> bool:
    return plan.baseline is not None and same_value(values[plan.group_keys.index(plan.baseline[0])],
                                                     plan.baseline[1])


def _groups_table(plan: Plan, groups: list, metrics: list[str], pooled: list[str], d: Path) -> list[str]:
    """groups.csv (one row per group and metric, full precision) and a Markdown table (one row per group)."""
    keys = plan.group_keys
    rows = [[*[_num(v) for v in g.values], _group_label(keys, g.values), len(g.trials),
             "yes" if _is_base(plan, g.values) else "", m, s.n, _num(s.mean), _num(s.sd), _num(s.low), _num(s.high)]
            for g in groups for m, s in g.stats.items()]
    (d / "groups.csv").write_text(_csv([*keys, "group", "trials", "baseline", "metric", "n", "mean", "sd",
                                        "ci_low", "ci_high"], rows))
    base_i = keys.index(plan.baseline[0]) if plan.baseline else -1
    md_rows = [[*([_fmt(v) + (" (baseline)" if i == base_i and _is_base(plan, g.values) else "")
                   for i, v in enumerate(g.values)] or ["all trials"]),
                len(g.trials), *[_mean_ci(g.stats[m], len(g.trials)) for m in metrics]] for g in groups]
    chosen = "`--group-by`" if plan.group_by_given else "every varying tuned key but seeds and instances"
    md = [f"Trials grouped by {_keys_text(keys) or 'nothing (no tuned parameter varies)'} ({chosen}); pooled over "
          f"{_keys_text(pooled) or 'nothing'}. Each cell: mean ± sd [95 % confidence interval of the mean, Student "
          f"t] of each trial's last reported value over the group's trials; n when fewer trials recorded the "
          f"metric; a single trial has no interval. {_source_text(metrics)}Data: [groups.csv](groups.csv).\n",
          _md_table([*(keys or ["group"]), "trials", *[HEADLINE_TITLES.get(m, m) for m in metrics]], md_rows)]
    if any(t.early for t in plan.analysed):
        md.append("Trials stopped early count with the values of the epoch they stopped at (`--finished-only` "
                  "leaves them out).\n")
    if all(len(g.trials) == 1 for g in groups):
        coarse = [k for k in keys if treat_as_categorical(plan.sweep, k, [t.params.get(k) for t in plan.analysed])]
        hint = f", e.g. `--group-by {','.join(coarse)}`" if coarse and len(coarse) < len(keys) else ""
        md.append(f"_Every group has a single trial, so nothing is pooled: choose coarser groups with "
                  f"`--group-by`{hint}._\n")
    return md


def _paired_table(plan: Plan, pairings: list, metrics: list[str], pooled: list[str], d: Path) -> list[str]:
    """paired.csv (one row per non-baseline group and metric) and its Markdown table."""
    keys, (key, value) = plan.group_keys, plan.baseline
    rows, md_rows = [], []
    for pr in pairings:
        label = _group_label(keys, pr.group.values)
        base = _group_label(keys, pr.baseline.values) if pr.baseline else "none"
        for j, m in enumerate(metrics):
            s = pr.stats[m]
            rows.append([*[_num(v) for v in pr.group.values], label, base, len(pr.group.trials), len(pr.pairs),
                         len(pr.unpaired), m, s.n, _num(s.mean), _num(s.sd), _num(s.low), _num(s.high), _num(s.p)])
            first = j == 0
            md_rows.append([label if first else "", base if first else "", len(pr.unpaired) if first else "",
                            HEADLINE_TITLES.get(m, m), s.n, _signed(s.mean), _fmt(s.sd, "–") if s.n > 1 else "–",
                            _interval(s, signed=True), _p(s.p)])
    (d / "paired.csv").write_text(_csv([*keys, "group", "baseline_group", "trials", "pairs", "unpaired", "metric",
                                        "n", "mean_diff", "sd", "ci_low", "ci_high", "p"], rows))
    how = ("chosen by default: git.prob varies and includes 0, the arm without GIT; `--baseline KEY=VALUE` for "
           "another, `--baseline none` for none") if plan.baseline_auto else "`--baseline`"
    match = _keys_text([*pooled, *[k for k in keys if k != key]])
    md = [f"### Paired differences against `{key}={_fmt(value)}` ({how})\n",
          f"Each trial pairs with the baseline trial that has the same {match or 'settings'}; Δ = trial − "
          f"baseline: Δ > 0 is higher than the baseline (better for accuracies; worse for eKLD, where lower is "
          f"more invariant). Mean Δ ± sd, its 95 % t-interval and the two-sided paired t-test p over the pairs "
          f"that recorded the metric. Trials without a partner are left out and counted as unpaired. Data: "
          f"[paired.csv](paired.csv).\n"]
    if not pairings:
        return md + [f"_No group other than `{key}={_fmt(value)}` to compare._\n"]
    return md + [_md_table(["group", "baseline", "unpaired", "metric", "pairs", "mean Δ", "sd", "95 % CI", "p"],
                           md_rows)]


def _groups_figure(plan: Plan, groups: list, pairings: list | None, metrics: list[str]):
    """Per metric, the group means with their CIs and the paired differences (when a baseline is set)."""
    from gitune import report_plots as rp
    from gitune.report_stats import metric_values

    keys = plan.group_keys

    def means(m: str) -> list:
        return [rp.Interval(_group_label(keys, g.values) + (" (baseline)" if _is_base(plan, g.values) else ""),
                            g.stats[m].mean, g.stats[m].low, g.stats[m].high, metric_values(g.trials, m))
                for g in groups]

    def deltas(m: str) -> list | None:
        if pairings is None:
            return None
        return [rp.Interval(_group_label(keys, pr.group.values), pr.stats[m].mean, pr.stats[m].low,
                            pr.stats[m].high, pr.diffs[m]) for pr in pairings]

    right = f"paired Δ vs {plan.baseline[0]}={_fmt(plan.baseline[1])}, 95 % CI (dots: pairs)" if plan.baseline else ""
    return rp.intervals_grid([(HEADLINE_TITLES.get(m, m), means(m), deltas(m)) for m in metrics],
                             "group mean, 95 % CI (dots: trials)", right,
                             f"Groups pooled over seeds and instances: {plan.sweep.experiment}, "
                             f"{len(plan.analysed)} trials")


def _keys_text(keys: Sequence[str]) -> str:
    return ", ".join(f"`{k}`" for k in keys)


def _source_text(metrics: Sequence[str]) -> str:
    """Say where the accuracies come from when it is not the test split."""
    val = [m for m in metrics if m.startswith("val/")]
    if not val:
        return ""
    return (f"From the validation split, as no trial recorded its test/ counterpart: "
            f"{', '.join(f'`{m}`' for m in val)}. ")


def _mean_ci(s, trials: int) -> str:
    if s.n == 0:
        return "–"
    n = f" (n={s.n})" if s.n != trials else ""
    if s.n == 1:
        return f"{s.mean:.4g}{n}"
    return f"{s.mean:.4g} ± {s.sd:.2g} {_interval(s)}{n}"


def _interval(s, signed: bool = False) -> str:
    if not (math.isfinite(s.low) and math.isfinite(s.high)):
        return "–"
    f = _signed if signed else (lambda v: f"{v:.4g}")
    return f"[{f(s.low)}, {f(s.high)}]"


def _signed(v: float) -> str:
    return f"{v:+.4g}" if _finite(v) else "–"


def _p(p: float) -> str:
    if not _finite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _per_class_section(plan: Plan, d: Path) -> tuple[list[str], float]:
    """Per-class values against class size, pooled over trials: CSV, figure and Spearman table per family.
    Returns the Markdown and the pooled Spearman(class size, eKLD) over all trials."""
    from gitune import report_plots as rp

    sweep, trials = plan.sweep, plan.analysed
    groups = colour_groups(sweep, plan.color_key, trials)
    color_title = plan.color_key or "all trials"
    md = ["## Invariance against class size, pooled over trials\n"]
    if plan.no_counts:
        md.append(f"Left out (no class_counts.csv artifact): trials {', '.join(plan.no_counts)}.\n")
    overall = float("nan")
    for prefix, stem, ylabel, short in PER_CLASS:
        pts = per_class_points(prefix, trials, groups)
        if not pts:
            if prefix == "inv/ekld/":
                md.append("_No trial recorded per-class eKLD (eval.inv_interval: 0?)._\n")
            continue
        header = ["trial_id", "run_id", "color_by", "color_value", "color_group", "class", "class_size",
                  short.lower().replace(" ", "_").replace("-", ""), "stopped_early"]
        rows = [[p.trial.trial_id, p.trial.run_id, plan.color_key or "",
                 _num(p.trial.params.get(plan.color_key)) if plan.color_key else "", p.group, p.cls, p.size,
                 repr(p.value), "yes" if p.trial.early else ""] for p in pts]
        (d / f"{stem}.csv").write_text(_csv(header, rows))
        rho_rows, plot_groups = [], []
        for label in groups.labels:
            sel = [p for p in pts if p.group == label]
            n_trials = len({p.trial.run_id for p in sel})
            rho_rows.append([label, n_trials, len(sel), _rho(spearman([p.size for p in sel],
                                                                       [p.value for p in sel])),
                             *_shot_means(sel)])
            plot_groups.append(rp.Group(label, [p.size for p in sel], [p.value for p in sel],
                                        [p.trial.early for p in sel], n_trials))
        r_all = spearman([p.size for p in pts], [p.value for p in pts])
        if prefix == "inv/ekld/":
            overall = r_all
        n_trials = len({p.trial.run_id for p in pts})
        if len(groups.labels) > 1:
            rho_rows.append(["all trials", n_trials, len(pts), _rho(r_all), *_shot_means(pts)])
        fig = rp.pooled_vs_size(
            plot_groups, groups.ordered, color_title + (" (quartiles of trials)" if groups.binned else ""), ylabel,
            f"{short} vs training class size: {sweep.experiment}, {n_trials} trials",
            f"pooled Spearman ρ(class size, {short}) = {_rho(r_all)}  (ρ < 0: small classes less invariant)")
        rp.save(fig, d / f"{stem}.png")
        md += [f"### {short}\n", f"![{short} vs class size]({stem}.png)\n",
               f"Pooled Spearman ρ(class size, {short}) and mean {short} per shot group (many > 100 training "
               f"images, medium 20–100, few < 20) by `{color_title}` (one point per class per trial; "
               f"data: [{stem}.csv]({stem}.csv)):\n",
               _md_table([color_title, "trials", "points", "Spearman ρ", "mean many", "mean medium", "mean few"],
                         rho_rows)]
    return md, overall


def _few_shot_section(plan: Plan, d: Path) -> list[str]:
    from gitune import report_plots as rp

    sweep, trials, param = plan.sweep, plan.analysed, plan.param
    md = ["## Few-shot accuracy against a parameter\n"]
    if param is None:
        return md + ["_Skipped: no parameter varies between the trials._\n"]
    series = []
    for key, label in (("val/acc_few", "validation"), ("test/acc_few", "test (trials that finished)")):
        sel = [t for t in trials if _finite(t.metrics.get(key))]
        if sel:
            series.append((label, [t.params.get(param) for t in sel], [100.0 * t.metrics[key] for t in sel],
                           [t.early for t in sel]))
    if not series:
        return md + ["_Skipped: no trial recorded val/acc_few (no class has fewer than 20 training images?)._\n"]
    values = [v for _, xs, _, _ in series for v in xs]
    categorical = treat_as_categorical(sweep, param, values)
    log_x = not categorical and dist_kind(sweep, param) == "loguniform" and all(float(v) > 0 for v in values)
    stem = f"few_shot_vs_{safe_name(param).replace('.', '_')}"
    fig = rp.metric_vs_param(series, param, categorical, log_x,
                             "few-shot accuracy (%; classes with < 20 training images)",
                             f"Few-shot accuracy vs {param}: {sweep.experiment}, {len(trials)} trials", percent=True)
    rp.save(fig, d / f"{stem}.png")
    return md + [f"![few-shot accuracy vs {param}]({stem}.png)\n",
                 f"One point per trial; {'a box per value' if categorical else 'numeric axis'}"
                 f"{' (log scale: loguniform space)' if log_x else ''}. Choose another with `--param KEY`.\n"]


def _importance_section(plan: Plan, d: Path) -> list[str]:
    from gitune import report_plots as rp

    sweep = plan.sweep
    md = ["## Parameter importances\n"]
    res = importances(sweep, plan.analysed)
    if isinstance(res, str):
        return md + [f"_Skipped: {res}._\n"]
    imp, evaluator, used = res
    names = list(imp)
    (d / "param_importances.csv").write_text(
        _csv(["param", "importance", "evaluator", "trials", "metric"],
             [[k, repr(v), evaluator, used, sweep.metric] for k, v in imp.items()]))
    fig = rp.importance_bars(names, [imp[k] for k in names], f"importance for {sweep.metric} ({evaluator}; sums to 1)",
                             f"Parameter importances: {sweep.experiment}, {used} completed trials")
    rp.save(fig, d / "param_importances.png")
    early = "" if plan.finished_only else " (stopped-early trials count with the value they stopped at)"
    return md + ["![parameter importances](param_importances.png)\n",
                 f"{evaluator} on an Optuna study rebuilt from the {used} completed trials{early}. With few trials "
                 f"these numbers are rough.\n",
                 _md_table(["parameter", "importance"], [[f"`{k}`", f"{v:.3f}"] for k, v in imp.items()])]


def _rho(r: float) -> str:
    return f"{r:+.3f}" if math.isfinite(r) else "n/a"


if __name__ == "__main__":
    sys.exit(main())
