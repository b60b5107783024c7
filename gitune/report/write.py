"""The report folder: report.md, best_trials.md/.csv, trials.csv, groups.csv, paired.csv, the per-class CSVs,
param_importances.csv and the figures, written into a temporary folder that then replaces the output folder
as a whole. Only a folder that a report wrote (it holds MARKER) is ever replaced: a typo such as `--out ~/code`
must not delete anything.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import gitune.report.figures as figures
import gitune.report.stats as stats
from gitune.errors import UserError
from gitune.redact import redact
from gitune.report.analysis import (Plan, Point, colour_groups, dist_kind, finite, importances, metric_sorted,
                                    per_class_points, shot_group, spearman, treat_as_categorical, tuned_columns,
                                    varying_keys)
from gitune.report.load import Trial
from gitune.report.stats import metric_values, same_value
from gitune.report.text import csv_text, fmt, keys_text, md_table, num, safe_name

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
# Short titles of the aggregated headline metrics (stats.headline_metrics).
MARKER = ".gitune-report"  # written into every report folder; only folders holding it are replaced
HEADLINE_TITLES = {"test/bal_acc": "test bal. acc", "test/acc_many": "test many-shot acc",
                   "test/acc_medium": "test medium-shot acc", "test/acc_few": "test few-shot acc",
                   "val/bal_acc": "val bal. acc", "val/acc_many": "val many-shot acc",
                   "val/acc_medium": "val medium-shot acc", "val/acc_few": "val few-shot acc",
                   "inv/ekld_few": "eKLD few", "inv/ekld_many": "eKLD many",
                   "inv/ekld_size_spearman": "Spearman(size, eKLD)"}


def check_out(out: Path) -> None:
    """`out` may be new, an empty folder, or a folder an earlier report wrote; anything else is refused
    before any work, since the report replaces the folder as a whole."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; expected a folder (created or replaced)")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()):
        raise UserError(f"--out {out}: the folder exists and was not written by gitune report (it has no {MARKER} "
                        f"file), so it is not replaced; name a new or empty folder")


def write_folder(plan: Plan, out: Path) -> str:
    """Write the report as the folder `out` (see write_replacing). Returns the one-line summary."""
    return write_replacing(out, lambda tmp: write_report(plan, tmp))


def mark(folder: Path) -> None:
    """The MARKER file that lets a later report replace `folder`."""
    (folder / MARKER).write_text("Written by gitune report. The next report to this folder replaces it as a whole.\n")


def write_replacing(out: Path, fill):
    """Run `fill(folder)` on a temporary folder beside `out`, then replace `out` with it as a whole (nothing
    half-written is left behind on an error); returns what `fill` returned."""
    check_out(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror or e})") from None
    try:
        result = fill(tmp)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


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
    mark(d)
    rho_text = f"; pooled Spearman(class size, eKLD) = {_rho(rho)}" if math.isfinite(rho) else ""
    best_text = (f"; best {sweep.metric} = {fmt(ranked[0].metrics.get(sweep.metric))} (trial {ranked[0].trial_id})"
                 if ranked and finite(ranked[0].metrics.get(sweep.metric)) else "")
    return (f"{len(sweep.trials)} trials ({counts['finished']} finished, {counts['stopped early']} stopped early, "
            f"{counts['errored']} errored){best_text}{rho_text}")


def _header(plan: Plan, counts: dict[str, int]) -> list[str]:
    sweep = plan.sweep
    md = [f"# Sweep report: {sweep.experiment}\n",
          f"- Tracking URI: `{redact(sweep.uri)}`, experiment `{sweep.experiment}` (id {sweep.experiment_id})"]
    for p in sweep.parents:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(p.info.start_time / 1000))
        md.append(f"- Parent run `{p.info.run_id}` ({p.info.status.lower()}, started {started}, "
                  f"{sum(t.parent_id == p.info.run_id for t in sweep.trials)} trials)")
    s = sweep.scheduler
    sched = s.get("type", "?")
    if sched == "asha":
        sched += (f" (max_t {s.get('max_t')}, grace period {s.get('grace_period')}, "
                  f"reduction factor {s.get('reduction_factor')})")
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
             *[num(t.params.get(k)) for k in cols], *[num(t.metrics.get(k)) for k, _ in metrics]]
            for i, t in enumerate(best)]
    (d / "best_trials.csv").write_text(csv_text(header, rows))
    md_rows = [[i + 1, f"`{t.trial_id}`", _state_text(t), fmt(t.metrics.get("epoch")),
                *[fmt(t.params.get(k)) for k in cols], *[fmt(t.metrics.get(k), "–") for k, _ in metrics]]
               for i, t in enumerate(best)]
    best_md = md_table(["#", "trial", "state", "epoch", *cols, *[title for _, title in metrics]], md_rows)
    (d / "best_trials.md").write_text(f"# Best trials of {sweep.experiment} by {sweep.metric} ({sweep.mode})\n\n"
                                      + best_md)

    more = [k for k in MORE_METRICS if any(k in t.metrics for t in sweep.trials)]
    all_metrics = [k for k, _ in metrics] + more
    all_cols = tuned_columns(sweep, sweep.trials)
    header = ["trial_id", "run_id", "parent_run_id", "status", "state", "stopped_early", "stopped_at_epoch",
              "epoch", "error", *all_cols, *all_metrics]
    rows = [[t.trial_id, t.run_id, t.parent_id, t.status, t.state, t.stopped_by, num(t.stopped_at),
             _epoch(t), t.error, *[num(t.params.get(k)) for k in all_cols],
             *[num(t.metrics.get(k)) for k in all_metrics]] for t in metric_sorted(sweep, sweep.trials)]
    (d / "trials.csv").write_text(csv_text(header, rows))
    return [f"## Best trials by `{sweep.metric}` ({sweep.mode}), top {len(best)} of {len(plan.analysed)}\n",
            best_md,
            "Accuracies are fractions of 1; eKLD and G-EED in nats (lower = more invariant); Spearman(size, eKLD) "
            "is negative when invariance fails to transfer to small classes. Full precision: "
            "[best_trials.csv](best_trials.csv); every trial, errored ones included: [trials.csv](trials.csv).\n"]


def _epoch(t: Trial) -> str:
    e = t.metrics.get("epoch")
    return str(int(e)) if finite(e) and float(e).is_integer() else num(e)


def _state_text(t: Trial) -> str:
    if t.early:
        return f"stopped early ({t.stopped_by}" + (f", epoch {t.stopped_at})" if t.stopped_at else ")")
    return t.state


def _groups_section(plan: Plan, d: Path) -> list[str]:
    """The headline metrics per group, pooled over seeds and instances, and paired differences against the
    baseline: groups.csv, paired.csv, groups.png and their Markdown. The sweep's answer with its uncertainty."""

    trials, keys = plan.analysed, plan.group_keys
    md = ["## Groups pooled over seeds and instances\n"]
    metrics = stats.headline_metrics(trials)
    if not metrics:
        return md + ["_Skipped: no trial recorded a headline metric (balanced, many/medium/few-shot accuracy, "
                     "eKLD)._\n"]
    pooled = [k for k in varying_keys(trials) if k not in keys]
    groups = stats.aggregate(trials, keys, metrics)
    md += _groups_table(plan, groups, metrics, pooled, d)
    pairings = None
    if plan.baseline:
        pairings = stats.compare(groups, keys, *plan.baseline, pooled, metrics)
        md += _paired_table(plan, pairings, metrics, pooled, d)
    figures.save(_groups_figure(plan, groups, pairings, metrics), d / "groups.png")
    return md[:1] + ["![group means and paired differences with 95 % CIs](groups.png)\n"] + md[1:]


def _group_label(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in zip(keys, values)) or "all trials"


def _is_base(plan: Plan, values: Sequence[Any]) -> bool:
    return plan.baseline is not None and same_value(values[plan.group_keys.index(plan.baseline[0])],
                                                     plan.baseline[1])


def _groups_table(plan: Plan, groups: list, metrics: list[str], pooled: list[str], d: Path) -> list[str]:
    """groups.csv (one row per group and metric, full precision) and a Markdown table (one row per group)."""
    keys = plan.group_keys
    rows = [[*[num(v) for v in g.values], _group_label(keys, g.values), len(g.trials),
             "yes" if _is_base(plan, g.values) else "", m, s.n, num(s.mean), num(s.sd), num(s.low), num(s.high)]
            for g in groups for m, s in g.stats.items()]
    (d / "groups.csv").write_text(csv_text([*keys, "group", "trials", "baseline", "metric", "n", "mean", "sd",
                                        "ci_low", "ci_high"], rows))
    base_i = keys.index(plan.baseline[0]) if plan.baseline else -1
    md_rows = [[*([fmt(v) + (" (baseline)" if i == base_i and _is_base(plan, g.values) else "")
                   for i, v in enumerate(g.values)] or ["all trials"]),
                len(g.trials), *[_mean_ci(g.stats[m], len(g.trials)) for m in metrics]] for g in groups]
    chosen = "`--group-by`" if plan.group_by_given else "every varying tuned key but seeds and instances"
    md = [f"Trials grouped by {keys_text(keys) or 'nothing (no tuned parameter varies)'} ({chosen}); pooled over "
          f"{keys_text(pooled) or 'nothing'}. Each cell: mean ± sd [95 % confidence interval of the mean, Student "
          f"t] of each trial's last reported value over the group's trials; n when fewer trials recorded the "
          f"metric; a single trial has no interval. {_source_text(metrics)}Data: [groups.csv](groups.csv).\n",
          md_table([*(keys or ["group"]), "trials", *[HEADLINE_TITLES.get(m, m) for m in metrics]], md_rows)]
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
            rows.append([*[num(v) for v in pr.group.values], label, base, len(pr.group.trials), len(pr.pairs),
                         len(pr.unpaired), m, s.n, num(s.mean), num(s.sd), num(s.low), num(s.high), num(s.p)])
            first = j == 0
            md_rows.append([label if first else "", base if first else "", len(pr.unpaired) if first else "",
                            HEADLINE_TITLES.get(m, m), s.n, _signed(s.mean), fmt(s.sd, "–") if s.n > 1 else "–",
                            _interval(s, signed=True), _p(s.p)])
    (d / "paired.csv").write_text(csv_text([*keys, "group", "baseline_group", "trials", "pairs", "unpaired", "metric",
                                        "n", "mean_diff", "sd", "ci_low", "ci_high", "p"], rows))
    how = ("chosen by default: git.prob varies and includes 0, the arm without GIT; `--baseline KEY=VALUE` for "
           "another, `--baseline none` for none") if plan.baseline_auto else "`--baseline`"
    match = keys_text([*pooled, *[k for k in keys if k != key]])
    md = [f"### Paired differences against `{key}={fmt(value)}` ({how})\n",
          f"Each trial pairs with the baseline trial that has the same {match or 'settings'}; Δ = trial − "
          f"baseline: Δ > 0 is higher than the baseline (better for accuracies; worse for eKLD, where lower is "
          f"more invariant). Mean Δ ± sd, its 95 % t-interval and the two-sided paired t-test p over the pairs "
          f"that recorded the metric. Trials without a partner are left out and counted as unpaired. Data: "
          f"[paired.csv](paired.csv).\n"]
    if not pairings:
        return md + [f"_No group other than `{key}={fmt(value)}` to compare._\n"]
    return md + [md_table(["group", "baseline", "unpaired", "metric", "pairs", "mean Δ", "sd", "95 % CI", "p"],
                           md_rows)]


def _groups_figure(plan: Plan, groups: list, pairings: list | None, metrics: list[str]):
    """Per metric, the group means with their CIs and the paired differences (when a baseline is set)."""

    keys = plan.group_keys

    def means(m: str) -> list:
        return [figures.Interval(_group_label(keys, g.values) + (" (baseline)" if _is_base(plan, g.values) else ""),
                            g.stats[m].mean, g.stats[m].low, g.stats[m].high, metric_values(g.trials, m))
                for g in groups]

    def deltas(m: str) -> list | None:
        if pairings is None:
            return None
        return [figures.Interval(_group_label(keys, pr.group.values), pr.stats[m].mean, pr.stats[m].low,
                            pr.stats[m].high, pr.diffs[m]) for pr in pairings]

    right = f"paired Δ vs {plan.baseline[0]}={fmt(plan.baseline[1])}, 95 % CI (dots: pairs)" if plan.baseline else ""
    return figures.intervals_grid([(HEADLINE_TITLES.get(m, m), means(m), deltas(m)) for m in metrics],
                             "group mean, 95 % CI (dots: trials)", right,
                             f"Groups pooled over seeds and instances: {plan.sweep.experiment}, "
                             f"{len(plan.analysed)} trials")


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
    return f"{v:+.4g}" if finite(v) else "–"


def _p(p: float) -> str:
    if not finite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _per_class_section(plan: Plan, d: Path) -> tuple[list[str], float]:
    """Per-class values against class size, pooled over trials: CSV, figure and Spearman table per family.
    Returns the Markdown and the pooled Spearman(class size, eKLD) over all trials."""

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
                 num(p.trial.params.get(plan.color_key)) if plan.color_key else "", p.group, p.cls, p.size,
                 repr(p.value), "yes" if p.trial.early else ""] for p in pts]
        (d / f"{stem}.csv").write_text(csv_text(header, rows))
        rho_rows, plot_groups = [], []
        for label in groups.labels:
            sel = [p for p in pts if p.group == label]
            n_trials = len({p.trial.run_id for p in sel})
            rho_rows.append([label, n_trials, len(sel), _rho(spearman([p.size for p in sel],
                                                                       [p.value for p in sel])),
                             *_shot_means(sel)])
            plot_groups.append(figures.Group(label, [p.size for p in sel], [p.value for p in sel],
                                        [p.trial.early for p in sel], n_trials))
        r_all = spearman([p.size for p in pts], [p.value for p in pts])
        if prefix == "inv/ekld/":
            overall = r_all
        n_trials = len({p.trial.run_id for p in pts})
        if len(groups.labels) > 1:
            rho_rows.append(["all trials", n_trials, len(pts), _rho(r_all), *_shot_means(pts)])
        fig = figures.pooled_vs_size(
            plot_groups, groups.ordered, color_title + (" (quartiles of trials)" if groups.binned else ""), ylabel,
            f"{short} vs training class size: {sweep.experiment}, {n_trials} trials",
            f"pooled Spearman ρ(class size, {short}) = {_rho(r_all)}  (ρ < 0: small classes less invariant)")
        figures.save(fig, d / f"{stem}.png")
        md += [f"### {short}\n", f"![{short} vs class size]({stem}.png)\n",
               f"Pooled Spearman ρ(class size, {short}) and mean {short} per shot group (many > 100 training "
               f"images, medium 20–100, few < 20) by `{color_title}` (one point per class per trial; "
               f"data: [{stem}.csv]({stem}.csv)):\n",
               md_table([color_title, "trials", "points", "Spearman ρ", "mean many", "mean medium", "mean few"],
                         rho_rows)]
    return md, overall


def _shot_means(pts: Sequence[Point]) -> list[str]:
    """Mean value of the pooled points in each shot group (the class's size in its own trial)."""
    from gitune.metrics.accuracy import SHOT_GROUPS

    out = []
    for group in SHOT_GROUPS:
        vals = [p.value for p in pts if shot_group(p.size) == group]
        out.append(f"{sum(vals) / len(vals):.4g} ({len(vals)})" if vals else "–")
    return out


def _few_shot_section(plan: Plan, d: Path) -> list[str]:

    sweep, trials, param = plan.sweep, plan.analysed, plan.param
    md = ["## Few-shot accuracy against a parameter\n"]
    if param is None:
        return md + ["_Skipped: no parameter varies between the trials._\n"]
    series = []
    for key, label in (("val/acc_few", "validation"), ("test/acc_few", "test (trials that finished)")):
        sel = [t for t in trials if finite(t.metrics.get(key))]
        if sel:
            series.append((label, [t.params.get(param) for t in sel], [100.0 * t.metrics[key] for t in sel],
                           [t.early for t in sel]))
    if not series:
        return md + ["_Skipped: no trial recorded val/acc_few (no class has fewer than 20 training images?)._\n"]
    values = [v for _, xs, _, _ in series for v in xs]
    categorical = treat_as_categorical(sweep, param, values)
    log_x = not categorical and dist_kind(sweep, param) == "loguniform" and all(float(v) > 0 for v in values)
    stem = f"few_shot_vs_{safe_name(param).replace('.', '_')}"
    fig = figures.metric_vs_param(series, param, categorical, log_x,
                             "few-shot accuracy (%; classes with < 20 training images)",
                             f"Few-shot accuracy vs {param}: {sweep.experiment}, {len(trials)} trials", percent=True)
    figures.save(fig, d / f"{stem}.png")
    return md + [f"![few-shot accuracy vs {param}]({stem}.png)\n",
                 f"One point per trial; {'a box per value' if categorical else 'numeric axis'}"
                 f"{' (log scale: loguniform space)' if log_x else ''}. Choose another with `--param KEY`.\n"]


def _importance_section(plan: Plan, d: Path) -> list[str]:

    sweep = plan.sweep
    md = ["## Parameter importances\n"]
    res = importances(sweep, plan.analysed)
    if isinstance(res, str):
        return md + [f"_Skipped: {res}._\n"]
    imp, evaluator, used = res
    names = list(imp)
    (d / "param_importances.csv").write_text(
        csv_text(["param", "importance", "evaluator", "trials", "metric"],
             [[k, repr(v), evaluator, used, sweep.metric] for k, v in imp.items()]))
    fig = figures.importance_bars(names, [imp[k] for k in names], f"importance for {sweep.metric} ({evaluator}; sums to 1)",
                             f"Parameter importances: {sweep.experiment}, {used} completed trials")
    figures.save(fig, d / "param_importances.png")
    early = "" if plan.finished_only else " (stopped-early trials count with the value they stopped at)"
    return md + ["![parameter importances](param_importances.png)\n",
                 f"{evaluator} on an Optuna study rebuilt from the {used} completed trials{early}. With few trials "
                 f"these numbers are rough.\n",
                 md_table(["parameter", "importance"], [[f"`{k}`", f"{v:.3f}"] for k, v in imp.items()])]


def _rho(r: float) -> str:
    return f"{r:+.3f}" if math.isfinite(r) else "n/a"
