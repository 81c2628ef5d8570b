"""What every benchmark reports besides its figures: the machine, a progress line, the files.

* `machine()` — CPU, cores, RAM, kernel, Python, the versions of the packages on the hot
  path, bubblewrap and the cgroup version: a figure means little without them;
* `Progress` — one line on stderr, rewritten in place while a bench runs;
* `write_json` / `write_chart` — `bench/results/<name>-<UTC timestamp>.<ext>` plus a
  `<name>-latest.<ext>` copy (the one the docs show; the timestamped ones are ignored by git).

matplotlib is an optional dependency (`pip install -e '.[bench]'`): without it the chart
is skipped with a message and everything else is still written.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

RESULTS_DIR = Path(__file__).parent / "results"
PACKAGES = ("h2", "hypercorn", "grpcio", "uvloop", "orjson", "apsw", "claude-agent-sdk")


@dataclass(frozen=True, slots=True)
class Machine:
    cpu: str
    cores: int
    ram_gib: float
    kernel: str
    python: str
    packages: dict[str, str]
    bwrap: str
    cgroup: str
    commit: str
    load: tuple[float, float, float]
    """The 1/5/15-minute load averages when the bench started: this machine is shared."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Markdown bullet lines for a report's header."""
        versions = ", ".join(f"{name} {version}" for name, version in self.packages.items())
        load = " / ".join(f"{value:.1f}" for value in self.load)
        return [f"- machine: {self.cpu}, {self.cores} cores, {self.ram_gib:.1f} GiB RAM, "
                f"load average {load} at the start",
                f"- kernel {self.kernel}, Python {self.python}, {self.bwrap}, "
                f"cgroup {self.cgroup}, commit {self.commit}",
                f"- packages: {versions}"]


def _first_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command_output(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def machine() -> Machine:
    memory = _first_field("/proc/meminfo", "MemTotal")
    bwrap = shutil.which("bwrap")
    commit = _command_output(["git", "-C", str(Path(__file__).parent), "rev-parse",
                              "--short", "HEAD"])
    dirty = _command_output(["git", "-C", str(Path(__file__).parent), "status",
                             "--porcelain", "--untracked-files=no"])
    return Machine(
        cpu=_first_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown",
        cores=os.cpu_count() or 0,
        ram_gib=int(memory.split()[0]) / 2**20 if memory else 0.0,
        kernel=platform.release(),
        python=platform.python_version(),
        packages={name: _version(name) for name in PACKAGES},
        bwrap=(_command_output([bwrap, "--version"]) or "bwrap ?") if bwrap
        else "bwrap not installed",
        cgroup="v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1",
        commit=(commit + ("+changes" if dirty else "")) if commit else "unknown",
        load=os.getloadavg(),
    )


def machine_lines() -> list[str]:
    return machine().lines()


class Progress:
    """A status line on stderr, rewritten in place (`\\r`); `done()` clears it."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._started = time.monotonic()

    def update(self, text: str) -> None:
        elapsed = time.monotonic() - self._started
        self._stream.write(f"\r\x1b[2K[{elapsed:5.1f} s] {text}")
        self._stream.flush()

    def done(self) -> None:
        self._stream.write("\r\x1b[2K")
        self._stream.flush()


def timestamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    latest: Path


def _write_pair(directory: Path, name: str, stamp: str, ext: str, data: bytes) -> Written:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{stamp}.{ext}"
    latest = directory / f"{name}-latest.{ext}"
    path.write_bytes(data)
    latest.write_bytes(data)
    return Written(path, latest)


def write_json(payload: Mapping[str, Any], name: str, stamp: str,
               directory: Path = RESULTS_DIR) -> Written:
    """The full results (raw samples included) as `<name>-<stamp>.json` and `-latest.json`."""
    data = json.dumps(payload, indent=1, sort_keys=False).encode() + b"\n"
    return _write_pair(directory, name, stamp, "json", data)


def write_chart(samples: Mapping[str, Mapping[str, Sequence[float]]], title: str, name: str,
                stamp: str, directory: Path = RESULTS_DIR) -> Written | None:
    """One panel per metric, one empirical CDF per configuration (milliseconds).

    `samples` is configuration → metric → values. Returns None (and says why on stderr)
    when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib is not installed (pip install -e '.[bench]'): no chart; "
              "the JSON has every sample", file=sys.stderr)
        return None
    metrics: list[str] = []
    for table in samples.values():
        metrics += [m for m, values in table.items() if values and m not in metrics]
    if not metrics:
        raise ValueError("no samples to chart")
    columns = min(3, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows),
                                squeeze=False)
    for index, metric in enumerate(metrics):
        axis = axes[index // columns][index % columns]
        for config, table in samples.items():
            values = sorted(table.get(metric, ()))
            if values:
                fractions = [i / len(values) for i in range(len(values) + 1)]
                axis.step([values[0], *values], fractions, where="post",
                          label=f"{config} (n={len(values)})")
        axis.set_title(metric)
        axis.set_ylim(0, 1.02)
        shown = [v for table in samples.values() for v in table.get(metric, ())]
        if min(shown) > 0 and max(shown) / min(shown) > 20:
            axis.set_xscale("log")  # long tails would squeeze the body of the distribution
        axis.set_xlabel("ms")
        axis.set_ylabel("fraction of samples ≤ x")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small", loc="lower right")
    for index in range(len(metrics), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle(title)
    figure.tight_layout()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{stamp}.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)
    latest = directory / f"{name}-latest.png"
    shutil.copyfile(path, latest)
    return Written(path, latest)
