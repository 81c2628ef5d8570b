"""`python -m runner.bridge`: the bridge process entry point."""

from __future__ import annotations

import sys

from runner.bridge.server import main

sys.exit(main())
