"""The one exception type for user mistakes.

Anything raised as UserError is printed by the CLIs as a single line and ends the process with exit
status 2, before any Ray or MLflow state is created. The message must name the file, key or path at
fault and what was expected.
"""


class UserError(Exception):
    """A mistake in the user's input (spec file, data file, flag): reported in one line, exit 2."""
