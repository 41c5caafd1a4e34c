"""``python -m jointdiff`` is the ``jointdiff`` command."""

from jointdiff.cli import run

run()
