"""`python -m gitune.report A B ...`: several sweeps side by side. Each experiment's trials are grouped and
pooled over seeds and instances exactly as its own report does (gitune.report.stats, the grouping and baseline
of analysis.make_plan), and paired against its own baseline (git.prob=0 by default); the blocks are written one
below the other into one table, so e.g. CE+DRS ± GIT and LDAM+DRW ± GIT read as one comparison. The headline
metrics are chosen once over all experiments (each accuracy from test/ when any trial has it there), so every
block has the same columns.

Writes report.md, compare_groups.csv and compare_paired.csv into the output folder (replaced as a whole, like a
report) and prints the same tables; nothing is uploaded, as the comparison belongs to no single sweep.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import gitune.report.stats as stats
from gitune.errors import UserError
from gitune.redact import redact
from gitune.report.analysis import Plan, varying_keys
from gitune.report.text import csv_text, fmt, keys_text, md_table, num, safe_name
from gitune.report.write import (HEADLINE_TITLES, _group_label, _interval, _mean_ci, _p, _signed,
                                 _source_text, mark, write_replacing)


@dataclass
class Block:
    """One experiment's part of the comparison."""

    plan: Plan
    pooled: list[str]  # varying keys pooled over within a group (replicates, keys left out of the grouping)
    groups: list  # stats.Group, each with .stats per metric
    pairings: list | None  # stats.Pairing against plan.baseline; None without a baseline

    @property
    def name(self) -> str:
        return self.plan.sweep.experiment

    def is_base(self, values: Sequence[Any]) -> bool:
        b = self.plan.baseline
        return b is not None and stats.same_value(values[self.plan.group_keys.index(b[0])], b[1])

    def label(self, values: Sequence[Any]) -> str:
        return _group_label(self.plan.group_keys, values) + (" (baseline)" if self.is_base(values) else "")


def default_out(names: Sequence[str]) -> Path:
    return Path("reports") / safe_name("compare-" + "-vs-".join(names))[:200]


def make_blocks(plans: Sequence[Plan]) -> tuple[list[Block], list[str]]:
    """Every experiment's groups and paired differences over one set of headline metrics."""
    metrics = stats.headline_metrics([t for p in plans for t in p.analysed])
    if not metrics:
        raise UserError(f"experiments {', '.join(repr(p.sweep.experiment) for p in plans)}: no trial recorded a "
                        f"headline metric (expected test/ or val/ balanced or shot accuracy, or eKLD)")
    blocks = []
    for plan in plans:
        keys = plan.group_keys
        pooled = [k for k in varying_keys(plan.analysed) if k not in keys]
        groups = stats.aggregate(plan.analysed, keys, metrics)
        pairings = stats.compare(groups, keys, *plan.baseline, pooled, metrics) if plan.baseline else None
        blocks.append(Block(plan, pooled, groups, pairings))
    return blocks, metrics


def _group_rows(blocks: Sequence[Block], metrics: Sequence[str]) -> list[list[str]]:
    rows = []
    for b in blocks:
        for i, g in enumerate(b.groups):
            rows.append([b.name if i == 0 else "", b.label(g.values) if b.plan.group_keys else "all trials",
                         str(len(g.trials)), *[_mean_ci(g.stats[m], len(g.trials)) for m in metrics]])
    return rows


def _paired_rows(blocks: Sequence[Block], metrics: Sequence[str]) -> list[list[str]]:
    rows = []
    for b in blocks:
        first_of_block = True
        for pr in b.pairings or []:
            for j, m in enumerate(metrics):
                s = pr.stats[m]
                rows.append([b.name if first_of_block else "",
                             _group_label(b.plan.group_keys, pr.group.values) if j == 0 else "",
                             (_group_label(b.plan.group_keys, pr.baseline.values) if pr.baseline else "none")
                             if j == 0 else "", HEADLINE_TITLES.get(m, m), str(s.n), _signed(s.mean),
                             _interval(s, signed=True), _p(s.p)])
                first_of_block = False
    return rows


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with aligned columns (what the terminal shows)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]])


def write_comparison(blocks: Sequence[Block], metrics: Sequence[str], out: Path) -> list[str]:
    """Write the comparison folder (replacing `out` as a whole, as a report does); returns the lines to print."""
    return write_replacing(out, lambda tmp: _write(blocks, metrics, tmp))


def _write(blocks: Sequence[Block], metrics: Sequence[str], d: Path) -> list[str]:
    titles = [HEADLINE_TITLES.get(m, m) for m in metrics]
    names = [b.name for b in blocks]
    md = [f"# Sweep comparison: {', '.join(names)}\n"]
    for b in blocks:
        sweep = b.plan.sweep
        parents = ", ".join(f"`{p.info.run_id}`" for p in sweep.parents)
        base = (f"baseline `{b.plan.baseline[0]}={fmt(b.plan.baseline[1])}`"
                + (" (default)" if b.plan.baseline_auto else "")) if b.plan.baseline else "no baseline"
        md.append(f"- `{b.name}` (`{redact(sweep.uri)}`, parent run {parents}): {len(b.plan.analysed)} trials "
                  f"reported on, grouped by {keys_text(b.plan.group_keys) or 'nothing'}, pooled over "
                  f"{keys_text(b.pooled) or 'nothing'}; {base}")
    md.append(f"- Written {time.strftime('%Y-%m-%d %H:%M')} by `python -m gitune.report {' '.join(names)}`\n")

    header = ["experiment", "group", "trials", *titles]
    group_rows = _group_rows(blocks, metrics)
    md += ["## Groups pooled over seeds and instances, per experiment\n",
           f"Each experiment's trials grouped and pooled as its own report does. Each cell: mean ± sd [95 % "
           f"confidence interval of the mean, Student t] over the group's trials; n when fewer trials recorded "
           f"the metric. {_source_text(metrics)}Data: [compare_groups.csv](compare_groups.csv).\n",
           md_table(header, group_rows)]
    (d / "compare_groups.csv").write_text(csv_text(
        ["experiment", "group", "trials", "baseline", "metric", "n", "mean", "sd", "ci_low", "ci_high"],
        [[b.name, _group_label(b.plan.group_keys, g.values), len(g.trials), "yes" if b.is_base(g.values) else "",
          m, s.n, num(s.mean), num(s.sd), num(s.low), num(s.high)]
         for b in blocks for g in b.groups for m, s in g.stats.items()]))
    printed = [text_table(header, group_rows)]

    with_base = [b for b in blocks if b.pairings]
    if with_base:
        paired_header = ["experiment", "group", "baseline", "metric", "pairs", "mean Δ", "95 % CI", "p"]
        paired_rows = _paired_rows(with_base, metrics)
        md += ["## Paired differences against each experiment's baseline\n",
               "Each trial pairs with its experiment's baseline trial that has the same seeds, instances and other "
               "settings; Δ = trial − baseline (Δ > 0 is higher: better for accuracies, worse for eKLD). Data: "
               "[compare_paired.csv](compare_paired.csv).\n",
               md_table(paired_header, paired_rows)]
        (d / "compare_paired.csv").write_text(csv_text(
            ["experiment", "group", "baseline_group", "pairs", "unpaired", "metric", "n", "mean_diff", "sd",
             "ci_low", "ci_high", "p"],
            [[b.name, _group_label(b.plan.group_keys, pr.group.values),
              _group_label(b.plan.group_keys, pr.baseline.values) if pr.baseline else "none", len(pr.pairs),
              len(pr.unpaired), m, s.n, num(s.mean), num(s.sd), num(s.low), num(s.high), num(s.p)]
             for b in with_base for pr in b.pairings for m, s in pr.stats.items()]))
        printed += ["paired differences against each experiment's baseline (Δ = trial − baseline):",
                    text_table(paired_header, paired_rows)]
    none = [b.name for b in blocks if not b.plan.baseline]
    if none:
        md.append(f"_No baseline (so no paired differences) for: {', '.join(f'`{n}`' for n in none)}; "
                  f"`--baseline KEY=VALUE` sets one for every experiment._\n")
    (d / "report.md").write_text("\n".join(md))
    mark(d)
    return printed
