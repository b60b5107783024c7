"""The one exception type for user mistakes, and the CLI plumbing that reports it.

Anything raised as UserError is printed by the CLIs as a single line and ends the process with exit
status 2, before any Ray or MLflow state is created. The message must name the file, key or path at
fault and what was expected.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

MESSAGE_LIMIT = 2000  # characters of one error line; longer ones lose their middle (see run_cli)


class UserError(Exception):
    """A mistake in the user's input (spec file, data file, flag): reported in one line, exit 2."""


def shown(value: Any, limit: int = 200) -> str:
    """A user value as an error message shows it: its repr, or for a longer one the first `limit` characters of
    it, an ellipsis and the value's size. The repr is written only as far as shown, so a huge string or a
    self-multiplying YAML alias structure costs `limit` characters, not megabytes."""
    parts: list[str] = []
    _write_repr(value, parts, limit + 1)
    text = "".join(parts)
    if len(text) <= limit and "…" not in parts:
        return text
    return f"{text[:limit].rstrip('…')}… ({_size(value)})"


_BRACKETS = {list: ("[", "]"), tuple: ("(", ")"), dict: ("{", "}"), set: ("{", "}")}


def _write_repr(value: Any, out: list[str], budget: int) -> int:
    """Append the repr of value to out until about `budget` characters are written; returns what is left."""
    if budget <= 0:
        return budget
    kind = type(value)
    if kind not in _BRACKETS or (kind is set and not value):
        text = _scalar_repr(value, budget)
        out.append(text)
        return budget - len(text)
    opening, closing = _BRACKETS[kind]
    out.append(opening)
    budget -= 1
    for i, item in enumerate(value.items() if kind is dict else value):
        if budget <= 0:
            return budget
        if i:
            out.append(", ")
            budget -= 2
        if kind is dict:
            budget = _write_repr(item[0], out, budget)
            out.append(": ")
            budget = _write_repr(item[1], out, budget - 2)
        else:
            budget = _write_repr(item, out, budget)
    if kind is tuple and len(value) == 1:
        out.append(",")
        budget -= 1
    out.append(closing)
    return budget - 1


def _scalar_repr(value: Any, budget: int) -> str:
    """repr of a non-container, cut before it is built where it could be large (strings, bytes, big ints):
    a cut is marked by a "…" part of its own."""
    if isinstance(value, (str, bytes)) and len(value) > budget:
        return repr(value[:budget])
    if isinstance(value, int) and value.bit_length() > 600:  # ~180 digits; Python refuses repr beyond 4300
        return "…"
    return repr(value)


def _size(value: Any) -> str:
    """The size of a value whose repr was cut: characters, bytes, items or digits."""
    if isinstance(value, str):
        return f"{len(value):,} characters"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value):,} bytes"
    if isinstance(value, int):
        return f"an integer of {value.bit_length():,} bits"
    try:
        return f"{type(value).__name__} of {len(value):,} items"
    except TypeError:
        return type(value).__name__


def cut_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """A message of at most about `limit` characters: its middle is replaced by an ellipsis and the length, so
    that both the name of the key at fault (front) and what was expected (end) stay readable."""
    if len(text) <= limit:
        return text
    head, tail = limit * 3 // 4, limit // 4
    return f"{text[:head]} … [{len(text) - head - tail:,} characters cut] … {text[-tail:]}"


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

        print(f"gitune: error: {cut_message(redact(str(e)))}", file=sys.stderr)
        return 2
