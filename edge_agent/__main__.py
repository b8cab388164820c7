"""``python -m edge_agent`` is ``edge-agent``."""

import sys

from .cli import main

sys.exit(main())
