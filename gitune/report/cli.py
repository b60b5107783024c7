"""`python -m gitune.report EXPERIMENT [EXPERIMENT ...]`: summary tables and figures of one sweep, or several
sweeps' pooled groups side by side, read back from MLflow.

The command line (the package docstring says what the report holds). Only argparse and gitune.errors are
imported before the arguments are parsed, so --help and usage errors are instant; MLflow, numpy, scipy,
matplotlib and torch load when the report runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gitune.errors import CliParser, UserError, run_cli


EXAMPLES = """examples:
  python -m gitune.report demo                          # the latest sweep of experiment demo -> reports/demo/
  python -m gitune.report demo --all --group-by git.prob
  python -m gitune.report cifar-ce-drs cifar-ldam-drw   # two sweeps side by side -> reports/compare-...
  python -m gitune.report demo --tracking-uri http://127.0.0.1:5000
"""


def parse_args(argv: list[str] | None, prog: str = "python -m gitune.report") -> argparse.Namespace:
    p = CliParser(prog=prog, description="Summary tables and figures of one sweep, or several sweeps' pooled "
                  "groups side by side, read back from MLflow.",
                  epilog=EXAMPLES.replace("python -m gitune.report", prog),
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", nargs="+", metavar="EXPERIMENT", help="MLflow experiment name (= the sweep's name); with several, "
                   "their groups pooled over seeds and paired against each one's baseline side by side in one "
                   "table (default --out reports/compare-A-vs-B; not uploaded)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: MLflow's default, sqlite:///mlflow.db "
                   "in the working directory)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: reports/<experiment>, or reports/compare-A-vs-B with "
                   "several experiments); replaced as a whole")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--parent", metavar="RUN_ID", help="report on this parent (sweep) run instead of the "
                       "experiment's most recent one")
    which.add_argument("--all", action="store_true", help="pool the trials of every parent run of the experiment")
    p.add_argument("--top", type=int, default=10, metavar="N", help="rows of the best-trials table (default 10)")
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


def main(argv: list[str] | None = None, prog: str = "python -m gitune.report") -> int:
    return run_cli(run, parse_args(argv, prog))


def run(args: argparse.Namespace) -> int:
    """Load the sweep, decide and check everything, then write the folder and upload it to the parent run."""
    if args.top < 1:
        raise UserError(f"--top: expected an integer ≥ 1, got {args.top}")
    names = list(args.experiment)
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise UserError(f"experiment '{twice}' named twice; expected distinct experiment names")
    if len(names) > 1 and args.parent:
        raise UserError(f"--parent {args.parent}: picks a run of one sweep; expected a single experiment with "
                        f"--parent ({len(names)} given)")
    import gitune.report.analysis as analysis
    import gitune.report.load as load
    import gitune.report.write as write
    from gitune.report.text import safe_name

    if args.out:
        write.check_out(Path(args.out))  # before any loading: a wrong --out costs one line
    uri, client = load.open_store(args.tracking_uri)
    if len(names) > 1:
        return compare(args, names, uri, client)
    sweep = load.load_sweep(client, uri, names[0], args.parent, args.all)
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


def compare(args: argparse.Namespace, names: list[str], uri: str, client) -> int:
    """Several experiments side by side: every name is loaded and planned (each refusal one line naming the
    experiment) before anything is written."""
    import gitune.report.analysis as analysis
    import gitune.report.compare as cmp
    import gitune.report.load as load

    sweeps = [load.load_sweep(client, uri, name, None, args.all) for name in names]
    plans = []
    for sweep in sweeps:
        try:
            plans.append(analysis.make_plan(sweep, top=args.top, finished_only=args.finished_only,
                                            param=args.param, color_by=args.color_by, group_by=args.group_by,
                                            baseline=args.baseline))
        except UserError as e:
            text = str(e)
            raise UserError(text if text.startswith(f"experiment '{sweep.experiment}'")
                            else f"experiment '{sweep.experiment}': {text}") from None
    blocks, metrics = cmp.make_blocks(plans)
    out = Path(args.out) if args.out else cmp.default_out(names)
    printed = cmp.write_comparison(blocks, metrics, out)
    print(f"gitune: comparison of {len(names)} experiments ({', '.join(names)}) in {out}")
    for text in printed:
        print(text)
    return 0
