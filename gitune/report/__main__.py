"""`python -m gitune.report ...`"""

import sys

from gitune.report.cli import main

sys.exit(main())
