"""The closing comparison of a sweep: arms (git.prob, aug.oracle_prob, ...) pooled over seeds and instances,
each against the baseline arm, printed when the trials finish.

A sweep that compares GIT with its baseline over several seeds should end with that comparison, not only
with its single best trial; the numbers are the same as `python -m gitune.report --baseline ...` gives from
MLflow later (gitune.report.stats does the statistics for both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import gitune.report.stats as rs

# What the comparison shows: (metric, short title, digits).
COLUMNS = (("test/bal_acc", "bal acc", 3), ("test/acc_few", "few acc", 3), ("test/acc_many", "many acc", 3),
           ("inv/ekld_few", "eKLD few", 3), ("inv/ekld_many", "eKLD many", 3))
# Keys whose zero value is the natural baseline, in order of preference.
BASELINE_KEYS = ("git.prob", "aug.oracle_prob")


@dataclass
class Result:
    """One finished trial, as gitune.report.stats sees it: its tuned values and its last reported metrics."""

    params: dict[str, Any]
    metrics: dict[str, Any]
    parent_id: str = ""


def baseline_of(arm_keys: Sequence[str], trials: Sequence[Result]) -> tuple[str, Any] | None:
    """(key, 0) for the first of BASELINE_KEYS that is an arm key and has a zero arm, else None."""
    for key in BASELINE_KEYS:
        if key in arm_keys and any(rs.same_value(t.params.get(key), 0.0) for t in trials):
            return key, 0.0
    return None


def comparison_lines(space_keys: Sequence[str], trials: Sequence[Result]) -> list[str]:
    """Text lines: each arm's mean [95 % CI] over its replicates, and the paired difference to the baseline
    arm. Empty when the sweep has no replicate key or no arm key, or nothing finished."""
    replicates = [k for k in space_keys if rs.is_replicate_key(k)]
    arms = [k for k in space_keys if not rs.is_replicate_key(k)]
    trials = [t for t in trials if any(rs.is_finite(t.metrics.get(m)) for m, _, _ in COLUMNS)]
    if not replicates or not arms or not trials:
        return []
    metrics = [m for m, _, _ in COLUMNS if any(rs.is_finite(t.metrics.get(m)) for t in trials)]
    titles = {m: (title, digits) for m, title, digits in COLUMNS}
    groups = rs.aggregate(trials, arms, metrics)
    lines = [f"gitune: arms pooled over {', '.join(replicates)} (mean [95 % CI], n trials):"]
    for g in groups:
        cells = [_cell(g.stats[m], titles[m]) for m in metrics]
        lines.append(f"  {_arm(arms, g.values)}  n={len(g.trials)}  " + "  ".join(cells))
    base = baseline_of(arms, trials)
    if base is None:
        return lines
    key, value = base
    lines.append(f"gitune: paired differences against {key}={value:g} (same {', '.join(replicates)}; "
                 f"mean [95 % CI], paired t-test p):")
    for pr in rs.compare(groups, arms, key, value, replicates, metrics):
        cells = [_cell(pr.stats[m], titles[m], signed=True) for m in metrics]
        lines.append(f"  {_arm(arms, pr.group.values)}  pairs={len(pr.pairs)}  " + "  ".join(cells))
    return lines


def _arm(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, values))


def _cell(s: rs.Summary, title: tuple[str, int], signed: bool = False) -> str:
    name, digits = title
    if s.n == 0:
        return f"{name} -"
    fmt = f"{{:{'+' if signed else ''}.{digits}f}}"
    text = f"{name} {fmt.format(s.mean)}"
    if s.n >= 2:
        text += f" [{fmt.format(s.low)}, {fmt.format(s.high)}]"
    p = getattr(s, "p", None)
    if p is not None and p == p:
        text += f" p={p:.3f}"
    return text
