"""What the report shows, decided from the loaded sweep before any file is written: the tuned and varying
keys, the distribution of each tuned key (from the spec), the default colour/parameter/grouping/baseline, the
trials ranked by the sweep's metric, colour groups and per-class points against class size, and parameter
importances. Plain functions on load.Sweep / load.Trial; no MLflow calls, no files, no figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from gitune.errors import UserError
from gitune.report.load import CLASS_RE, Sweep, Trial, parse_value
from gitune.report.stats import is_replicate_key, same_value, sort_key
from gitune.report.text import fmt

AUTO_BASELINE = ("git.prob", 0.0)  # GIT off: the baseline every GIT sweep compares against
COLOR_DEFAULTS = ("git.prob", "train.rule", "data.instance")
MAX_COLOUR_GROUPS = 6  # a numeric colour key with more distinct values is binned into quartiles
MIN_IMPORTANCE_TRIALS = 4


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
    """'loguniform', 'categorical' (choice/grid) or 'continuous' (uniform, quniform, randint): the kind of the
    key's distribution in the sweep's spec; '' when the key is not tuned."""
    dist = sweep.space.get(key) or {}
    kind = next(iter(dist), "") if isinstance(dist, dict) else ""
    if kind == "loguniform":
        return "loguniform"
    if kind in ("choice", "grid"):
        return "categorical"
    return "continuous" if key in sweep.space else ""


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
        listed = ", ".join(fmt(v) for v in sorted(present, key=sort_key)[:12])
        raise UserError(f"--baseline {key}={text}: no reported trial has {key} = {text}; expected one of: {listed}")
    return (keys if key in keys else [key, *keys]), (key, value), False


def metric_sorted(sweep: Sweep, trials: Sequence[Trial]) -> list[Trial]:
    """By the sweep's metric and mode; trials without it last."""
    sign = -1.0 if sweep.mode == "max" else 1.0
    have = [t for t in trials if finite(t.metrics.get(sweep.metric))]
    rest = [t for t in trials if not finite(t.metrics.get(sweep.metric))]
    return sorted(have, key=lambda t: sign * t.metrics[sweep.metric]) + rest


def finite(v) -> bool:
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
    labels = [fmt(v) for v in order]
    return ColourGroups(key, labels, {r: fmt(v) for r, v in values.items()}, ordered)


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
            if CLASS_RE.match(cls) and cls in t.counts and finite(v):
                pts.append(Point(t, groups.of_trial[t.run_id], cls, t.counts[cls], float(v)))
    return pts


def shot_group(n: int) -> str:
    """'many', 'medium' or 'few' for a class of n training images (gitune.metrics.accuracy, which loads torch)."""
    from gitune.metrics.accuracy import shot_groups

    return next(g for g, classes in shot_groups([n]).items() if classes)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from gitune.metrics.invariance import spearman as rho

    return rho(list(map(float, x)), list(map(float, y))) if len(x) > 2 else float("nan")


def importances(sweep: Sweep, trials: Sequence[Trial]) -> tuple[dict[str, float], str, int] | str:
    """fANOVA (or PED-ANOVA without scikit-learn) on an in-memory Optuna study rebuilt from the trials.
    Returns (importances, evaluator name, trials used), or the reason it was skipped."""
    if sweep.search != "optuna":
        return f"the sweep searched with `{sweep.search or 'unknown'}`, not Optuna"
    done = [t for t in trials if t.status == "FINISHED" and finite(t.metrics.get(sweep.metric))]
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


@dataclass
class Plan:
    """Everything decided from the inputs before any file is written."""

    sweep: Sweep
    analysed: list[Trial]
    color_key: str | None
    param: str | None
    top: int
    finished_only: bool
    no_counts: list[str] = field(default_factory=list)  # trials without class sizes (load.load_class_counts)
    group_keys: list[str] = field(default_factory=list)  # trials with the same values are one group
    baseline: tuple[str, Any] | None = None  # (key, parsed value) of the baseline group
    baseline_auto: bool = False  # chosen by default, not by --baseline
    group_by_given: bool = False  # --group-by, not the default grouping


def make_plan(sweep: Sweep, top: int = 10, finished_only: bool = False, param: str | None = None,
              color_by: str | None = None, group_by: str | None = None, baseline: str | None = None) -> Plan:
    """The trials to report on and every choice the command line leaves open, each checked against the trials
    (a UserError names the option) before anything is written. Class sizes are filled in later (no_counts)."""
    analysed = [t for t in sweep.trials if t.status == "FINISHED" and not (finished_only and t.early)]
    if not analysed:
        states = ", ".join(sorted({t.state for t in sweep.trials}))
        raise UserError(f"experiment '{sweep.experiment}': no trial to report on ({len(sweep.trials)} trial(s), "
                        f"{states}); expected at least one trial that "
                        f"{'finished all epochs' if finished_only else 'finished or was stopped by ASHA'}")
    for option, key in (("--param", param), ("--color-by", color_by)):
        if key is not None:
            check_key(option, key, sweep.trials)
    group_keys, base, auto = grouping(group_by, baseline, sweep, analysed)
    return Plan(sweep, analysed, color_by or default_color_by(analysed), param or default_param(sweep, analysed),
                top, finished_only, [], group_keys, base, auto, group_by is not None)
