"""The one exception type for user mistakes, and the CLI plumbing that reports it.

Anything raised as UserError is printed by the CLIs as a single line and ends the process with exit
status 2, before any Ray or MLflow state is created. The message must name the file, key or path at
fault and what was expected.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable


class UserError(Exception):
    """A mistake in the user's input (spec file, data file, flag): reported in one line, exit 2."""


class CliParser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line with exit 2, like every other user mistake."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command; a UserError becomes `gitune: error: <message>` on stderr and exit status 2."""
    try:
        return run(args)
    except UserError as e:
        from gitune.redact import redact

        print(f"gitune: error: {redact(str(e))}", file=sys.stderr)
        return 2
