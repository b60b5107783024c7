"""`python -m gitune COMMAND ...`: the same as the `gitune` console script (gitune.cli)."""

import sys

from gitune.cli import main

sys.exit(main())
