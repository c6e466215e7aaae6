"""``python -m loom.cli``: the same as the ``loom`` command."""

from . import main

main()
