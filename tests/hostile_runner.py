"""`python -m tests.hostile_runner`: the real ash-runner, whose sandboxes run the hostile
bridge (tests/hostile_bridge.py; see tests/hostile_gateway.py)."""

from __future__ import annotations

import sys

from tests.hostile_gateway import use_hostile_bridge

if __name__ == "__main__":
    use_hostile_bridge()
    from runner.cli import main

    sys.exit(main())
