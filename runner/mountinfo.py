"""Reading /proc/self/mountinfo: where things are mounted (cgroup hierarchies, workspaces)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True, slots=True)
class Mount:
    path: Path
    fstype: str
    source: str
    super_options: frozenset[str]


def parse(text: str) -> list[Mount]:
    """The mounts a mountinfo text lists, in order."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        if not sep or len(fields) < 5:
            continue
        fstype, source, super_options = [*tail.split(), "", ""][:3]
        mounts.append(Mount(Path(unescape(fields[4])), fstype, unescape(source),
                            frozenset(super_options.split(","))))
    return mounts


def read() -> list[Mount]:
    return parse(Path("/proc/self/mountinfo").read_text())


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash in paths as octal."""
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)
