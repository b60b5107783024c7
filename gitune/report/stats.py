"""Seed and instance aggregation for `python -m gitune.report`: group trials by their tuned settings, pool the
replicates (seeds, long-tail instances) of each group, and pair each group's trials with a baseline group's.

One trial is one noisy draw; the question a sweep answers is whether a setting helps beyond that noise. So each
group gets mean ± sd and a Student-t 95 % confidence interval over its replicates, and, against a baseline,
paired differences: trials that share seeds and instances share data order and initialisation, so their
difference cancels much of the seed-to-seed spread that unpaired means keep.

Plain functions on the report's Trial objects (anything with .params, .metrics, .parent_id); no MLflow, no
files: gitune.report.write writes the tables and gitune.report.figures draws them; gitune.comparison uses the same
functions for the closing table of a sweep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

REPLICATE_PARTS = ("seed", "instance")  # last part of a key that names a replicate, not a setting
ACCURACIES = ("bal_acc", "acc_many", "acc_medium", "acc_few")  # under test/, else val/
INVARIANCE = ("inv/ekld_few", "inv/ekld_many", "inv/ekld_size_spearman")
LEVEL = 0.95


def is_replicate_key(key: str) -> bool:
    """train.seed, data.seed, generator.seed, data.instance, ...: which draw, not which setting."""
    return key.rsplit(".", 1)[-1] in REPLICATE_PARTS


def is_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def headline_metrics(trials: Sequence) -> list[str]:
    """The metrics to aggregate, those that some trial has: each accuracy from test/ when any trial recorded
    it there, else from val/ (never mixed within one metric), then the eKLD summaries."""
    out = []
    for name in ACCURACIES:
        for key in (f"test/{name}", f"val/{name}"):
            if any(is_finite(t.metrics.get(key)) for t in trials):
                out.append(key)
                break
    return out + [k for k in INVARIANCE if any(is_finite(t.metrics.get(k)) for t in trials)]


# --------------------------------------------------------------------------------------------------- statistics


@dataclass
class Summary:
    """n values: mean, sample sd (ddof 1) and the Student-t confidence interval of the mean. With n = 1 the
    sd and interval are NaN (one draw says nothing about spread); with n = 0 so is the mean."""

    n: int
    mean: float
    sd: float
    low: float
    high: float


@dataclass
class PairedSummary(Summary):
    """Summary of paired differences (group − baseline) plus the two-sided paired t-test p-value
    (H0: mean difference 0)."""

    p: float = math.nan


def t_quantile(n: int, level: float = LEVEL) -> float:
    """Two-sided Student-t critical value for a mean of n values (t_{(1+level)/2, n-1}); NaN for n < 2."""
    if n < 2:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1))


def summarize(values: Sequence[float], level: float = LEVEL) -> Summary:
    vals = [float(v) for v in values if is_finite(v)]
    n = len(vals)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    if n == 1:
        return Summary(1, vals[0], math.nan, math.nan, math.nan)
    if min(vals) == max(vals):  # no spread, exactly: sum/n can round to a neighbour and fake an sd of 1e-17
        return Summary(n, vals[0], 0.0, vals[0], vals[0])
    mean = math.fsum(vals) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t_quantile(n, level) * sd / math.sqrt(n)
    return Summary(n, mean, sd, mean - half, mean + half)


def paired_summary(diffs: Sequence[float], level: float = LEVEL) -> PairedSummary:
    """Mean difference with its t interval and the paired t-test p (the same as scipy.stats.ttest_rel on the
    two arms). Identical nonzero differences give p = 0 (t is infinite), all-zero ones p = 1."""
    s = summarize(diffs, level)
    p = math.nan
    if s.n >= 2:
        from scipy import stats

        if s.sd > 0:
            t = s.mean / (s.sd / math.sqrt(s.n))
            p = float(2 * stats.t.sf(abs(t), s.n - 1))
        else:
            p = 0.0 if s.mean != 0 else 1.0
    return PairedSummary(s.n, s.mean, s.sd, s.low, s.high, p)


# --------------------------------------------------------------------------------------------------- grouping


@dataclass
class Group:
    """Trials that share the values of the grouping keys (they differ only in replicates)."""

    values: tuple  # one per grouping key, parsed param values
    trials: list = field(default_factory=list)
    stats: dict[str, Summary] = field(default_factory=dict)  # metric -> summary over the trials (aggregate)


def sort_key(v: Any) -> tuple:
    """Numbers in numeric order before everything else in text order (None, booleans and strings)."""
    return (0, float(v), "") if is_finite(v) else (1, 0.0, str(v))


def group_trials(trials: Sequence, keys: Sequence[str]) -> list[Group]:
    """Trials by their values of `keys` (parsed, so a stored 0 and 0.0 fall together), groups in value order."""
    groups: dict[tuple, Group] = {}
    for t in trials:
        values = tuple(t.params.get(k) for k in keys)
        groups.setdefault(values, Group(values)).trials.append(t)
    return sorted(groups.values(), key=lambda g: tuple(sort_key(v) for v in g.values))


@dataclass
class Pairing:
    """One non-baseline group against its baseline group (the same values of the other grouping keys): the
    (trial, baseline trial) pairs and the trials of the group left without a partner."""

    group: Group
    baseline: Group | None
    pairs: list  # (trial, baseline trial)
    unpaired: list
    diffs: dict[str, list[float]] = field(default_factory=dict)  # metric -> differences (compare)
    stats: dict[str, PairedSummary] = field(default_factory=dict)  # metric -> their summary


def pair_with_baseline(groups: Sequence[Group], group_keys: Sequence[str], key: str, value: Any,
                       match_keys: Sequence[str]) -> list[Pairing]:
    """Pair each trial of every group whose `key` is not `value` with the baseline trial that has the same
    values of every other grouping key (so with git.prob × aug.oracle_prob and baseline git.prob=0, the
    oracle-on GIT arm pairs with the oracle-on baseline) and of `match_keys`: the keys pooled over within a
    group, i.e. the replicates (seeds, instances) and any varying key left out of the grouping.

    Pairs are one to one. When a cell holds more than one trial of either side (a key outside the grouping
    varies, or --all pooled repeated runs of the sweep), trials pair only within their own parent run, one to
    one; the rest stay unpaired rather than be matched arbitrarily. Returns the pairings of the non-baseline
    groups, in group order."""
    i = list(group_keys).index(key)
    other = [j for j, k in enumerate(group_keys) if k != key]

    def rest(g: Group) -> tuple:
        return tuple(g.values[j] for j in other)

    def replicate(t) -> tuple:
        return tuple(t.params.get(k) for k in match_keys)

    bases = {rest(g): g for g in groups if is_baseline(g, i, value)}
    out = []
    for g in groups:
        if is_baseline(g, i, value):
            continue
        base = bases.get(rest(g))
        base_cells: dict[tuple, list] = {}
        for b in base.trials if base else []:
            base_cells.setdefault(replicate(b), []).append(b)
        cells: dict[tuple, list] = {}
        for t in g.trials:
            cells.setdefault(replicate(t), []).append(t)
        pairs = []
        for c, ts in cells.items():
            pairs += _match(ts, base_cells.get(c, []))
        paired = {id(t) for t, _ in pairs}
        out.append(Pairing(g, base, pairs, [t for t in g.trials if id(t) not in paired]))
    return out


def is_baseline(g: Group, i: int, value: Any) -> bool:
    """The group's i-th key has the baseline value."""
    return same_value(g.values[i], value)


def same_value(a: Any, b: Any) -> bool:
    """Parsed param values: 0 matches 0.0 (stored as either), true does not match 1."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _match(trials: list, bases: list) -> list:
    """One to one within a cell: the single trial on each side, else per parent run where that is unique."""
    if len(trials) == 1 and len(bases) == 1:
        return [(trials[0], bases[0])]
    pairs = []
    for parent in dict.fromkeys(getattr(t, "parent_id", "") for t in trials):
        ts = [t for t in trials if getattr(t, "parent_id", "") == parent]
        bs = [b for b in bases if getattr(b, "parent_id", "") == parent]
        if len(ts) == 1 and len(bs) == 1:
            pairs.append((ts[0], bs[0]))
    return pairs


def differences(pairs: Sequence, metric: str) -> list[float]:
    """trial − baseline trial for each pair where both recorded the metric."""
    return [float(t.metrics[metric]) - float(b.metrics[metric]) for t, b in pairs
            if is_finite(t.metrics.get(metric)) and is_finite(b.metrics.get(metric))]


def metric_values(trials: Sequence, metric: str) -> list[float]:
    return [float(t.metrics[metric]) for t in trials if is_finite(t.metrics.get(metric))]


def aggregate(trials: Sequence, keys: Sequence[str], metrics: Sequence[str]) -> list[Group]:
    """The groups of `keys`, each with the summary of every metric over its trials."""
    groups = group_trials(trials, keys)
    for g in groups:
        g.stats = {m: summarize(metric_values(g.trials, m)) for m in metrics}
    return groups


def compare(groups: Sequence[Group], keys: Sequence[str], key: str, value: Any, match_keys: Sequence[str],
            metrics: Sequence[str]) -> list[Pairing]:
    """pair_with_baseline, with every metric's paired differences and their summary filled in."""
    pairings = pair_with_baseline(groups, keys, key, value, match_keys)
    for pr in pairings:
        pr.diffs = {m: differences(pr.pairs, m) for m in metrics}
        pr.stats = {m: paired_summary(d) for m, d in pr.diffs.items()}
    return pairings
