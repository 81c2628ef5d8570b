"""Edit a session's stored state (coordinator mode, no live sandbox): the files API's writes.

The stored state is the tar the session's runner shipped; a cold resume restores it on any
runner. A write, delete or upload while no sandbox is live unpacks it into a scratch
directory on the gateway (`restore_workspace`: no write through a link; links are kept,
even those pointing out, so a path through one is refused as on the live tree), applies
the very `runner.workspace_files` function standalone mode uses on its disk (no link
followed, escapes refused before anything is written), and packs the tree again
(`pack_workspace`). The caller stores the result only when the edit succeeded: a refused
edit leaves the stored state as it was.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from runner.workspace_state import pack_workspace, restore_workspace

T = TypeVar("T")


def edit_state(state: bytes, scratch: Path, edit: Callable[[Path], T]) -> tuple[bytes, T]:
    """`edit` run on the unpacked `state`; the state packed again, and what `edit` returned.
    Blocking: call it in a thread."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".edit-") as directory:
        root = Path(directory) / "workspace"
        root.mkdir()
        restore_workspace(root, state, every_link=True)
        result = edit(root)
        return pack_workspace(root), result
