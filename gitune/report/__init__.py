"""`python -m gitune.report EXPERIMENT`: summary tables and figures of one sweep, read back from MLflow
(with several experiment names: their pooled groups side by side, gitune.report.compare).

Writes into a folder (default reports/<experiment>) and uploads the same files under `report/` on the
sweep's parent run: the best trials, every trial, the headline metrics per group of trials pooled over seeds
and instances (with paired differences against a baseline group), eKLD against class size pooled over
trials, few-shot accuracy against a tuned parameter, and parameter importances when Optuna searched. Bad
input (unknown experiment, parent run or key; unreachable store) is one line and exit status 2, with nothing
written.

Modules, each importing only those above it:
    text.py      value formatting for Markdown and CSV cells
    load.py      MLflow: store, experiment, parent runs and their spec/resolved.yaml, trial runs, class sizes
    stats.py     groups pooled over seeds/instances, t intervals, paired differences (also gitune.comparison)
    analysis.py  the report's decisions: tuned keys and their distributions, defaults, ranking, importances
    figures.py   the matplotlib figures
    write.py     the report folder: report.md, CSV tables, figures
    compare.py   several experiments (`python -m gitune.report A B ...`): their groups and paired differences
                 side by side in one table, printed and written
    cli.py       argparse and main; nothing heavy is imported before the arguments are parsed
"""
