"""`python -m gitune.report EXPERIMENT`: summary tables and figures of one sweep, read back from MLflow.

The command line (the package docstring says what the report holds). Only argparse and gitune.errors are
imported before the arguments are parsed, so --help and usage errors are instant; MLflow, numpy, scipy,
matplotlib and torch load when the report runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gitune.errors import CliParser, UserError, run_cli


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


def run(args: argparse.Namespace) -> int:
    """Load the sweep, decide and check everything, then write the folder and upload it to the parent run."""
    if args.top < 1:
        raise UserError(f"--top: expected an integer ≥ 1, got {args.top}")
    import gitune.report.analysis as analysis
    import gitune.report.load as load
    import gitune.report.write as write
    from gitune.report.text import safe_name

    if args.out:
        write.check_out(Path(args.out))  # before any loading: a wrong --out costs one line
    uri, client = load.open_store(args.tracking_uri)
    sweep = load.load_sweep(client, uri, args.experiment, args.parent, args.all)
    plan = analysis.make_plan(sweep, top=args.top, finished_only=args.finished_only, param=args.param,
                              color_by=args.color_by, group_by=args.group_by, baseline=args.baseline)
    out = Path(args.out) if args.out else Path("reports") / safe_name(sweep.experiment)
    write.check_out(out)
    plan.no_counts = load.load_class_counts(client, plan.analysed)
    summary = write.write_folder(plan, out)
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
