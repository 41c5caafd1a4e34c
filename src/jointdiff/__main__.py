"""``python -m jointdiff`` is the ``jointdiff`` command."""

import sys

from jointdiff.cli import main

sys.exit(main())
