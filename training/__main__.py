"""``python -m training``: the same as the ``edge-train`` command."""

from training.cli import main

raise SystemExit(main())
