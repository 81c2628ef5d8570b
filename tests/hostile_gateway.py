"""`python -m tests.hostile_gateway`: the real ash-gateway, whose sandboxes run the hostile
bridge (tests/hostile_bridge.py) instead of the real one — through the same spawn path,
bubblewrap and cgroups. Only this test entry point swaps the bridge: the gateway and
runner offer no way to choose a bridge program.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from runner import bwrap

HOSTILE_SOURCE = Path(__file__).with_name("hostile_bridge.py").read_text()


def hostile_bootstrap(paths: Sequence[str]) -> str:
    """The sandbox's `-c` program: the bridge's import path, then the hostile bridge."""
    return (f"import sys; sys.path[:0] = {list(paths)!r}; "
            f"exec(compile({HOSTILE_SOURCE!r}, 'hostile_bridge', 'exec'))")


def use_hostile_bridge() -> None:
    """Every sandbox this process starts from now on runs the hostile bridge."""
    bwrap.bootstrap = hostile_bootstrap


if __name__ == "__main__":
    use_hostile_bridge()
    from gateway.cli import main

    sys.exit(main())
