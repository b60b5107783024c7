"""`gitune COMMAND ...`: the console script (and `python -m gitune`); `gitune sweep` and `gitune report`.

Only the standard library is imported until a command is chosen, so `gitune --help` and `gitune --version`
start at once; torch, Ray and MLflow load when a sweep or a report runs.
"""

from __future__ import annotations

import argparse
import sys

from gitune import version_string

COMMANDS = {
    "sweep": ("gitune.sweep", "run a sweep of a search-space file with Ray Tune, tracked in MLflow"),
    "report": ("gitune.report.cli", "tables and figures of a finished sweep, read back from MLflow"),
}

EXAMPLES = """\
commands:
  sweep     run a sweep of a search-space file with Ray Tune, tracked in MLflow (= python -m gitune.sweep)
  report    tables and figures of a finished sweep, read back from MLflow (= python -m gitune.report)

examples:
  gitune sweep --list                                          # the bundled search spaces
  gitune sweep --space search_spaces/demo.yaml                 # built-in data, CPU, offline (~5 min)
  gitune sweep --space search_spaces/cifar_lt.yaml             # CIFAR-10-LT, the paper's recipe (GPU)
  gitune sweep --space search_spaces/cifar_lt.yaml --dry-run   # check and print the resolved spec
  gitune report demo                                           # report on the sweep (MLflow experiment) demo
  gitune sweep --help                                          # every flag of a command

python -m gitune COMMAND ... is the same as gitune COMMAND ...
"""


def parser() -> argparse.ArgumentParser:
    from gitune.errors import CliParser

    p = CliParser(prog="gitune", usage="gitune [--help] [--version] COMMAND [ARGS ...]",
                  description="Hyperparameter sweeps of Generative Invariance Transfer on long-tailed image "
                              "classification (Ray Tune + MLflow).",
                  epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=version_string())
    p.add_argument("command", metavar="COMMAND", nargs="?", choices=list(COMMANDS),
                   help="one of: " + ", ".join(COMMANDS) + "; its arguments follow it (gitune COMMAND --help)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:  # the command's own parser sees everything after it, --help included
        command, rest = argv[0], argv[1:]
    else:
        p = parser()
        p.parse_args(argv)  # --help, --version, an unknown command or flag: exits here
        p.error(f"expected a command: {' or '.join(COMMANDS)}")  # nothing given
    if command == "sweep":
        from gitune.sweep import main as sweep_main

        return sweep_main(rest, prog="gitune sweep")
    from gitune.report.cli import main as report_main

    return report_main(rest, prog="gitune report")


if __name__ == "__main__":
    sys.exit(main())
