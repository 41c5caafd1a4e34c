"""``python -m jointdiff.cli`` (as ``accelerate launch -m jointdiff.cli train`` runs it) is the ``jointdiff`` command."""

import sys

from jointdiff.cli import main

sys.exit(main())
