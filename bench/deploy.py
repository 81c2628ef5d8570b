"""The benchmarks' deployments: an `ash-gateway` (and an `ash-runner`) as processes on loopback."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

API_KEY = "ash_bench_key"
SECRET = "bench-internal-secret"
STARTUP_TIMEOUT = 30.0


@dataclass
class Deployment:
    name: str
    url: str = ""
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()


@dataclass(frozen=True, slots=True)
class Banner:
    """What a gateway prints when it is ready."""

    url: str
    registry: str | None


def parse_banner(text: str) -> Banner:
    """The gateway's URL and, in coordinator mode, its runner registry address."""
    url = re.search(r"listening on (\S+)", text)
    if url is None:
        raise RuntimeError(f"no 'listening on URL' in the gateway's banner: {text!r}")
    registry = re.search(r"Runner registry \(gRPC, [^)]*\) on (\S+)", text)
    return Banner(url.group(1), registry.group(1) if registry else None)


def _spawn(args: list[str], env: dict[str, str], log: Path,
           ready: re.Pattern[str]) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a process; returns it with the stdout lines up to and including `ready`."""
    with open(log, "ab") as stderr:
        process = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE,
                                   stderr=stderr, text=True, env=env)
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            process.wait()
            raise RuntimeError(f"{args[:2]} exited: {log.read_text()[-2000:]}")
        lines.append(line)
        if ready.search(line):
            return process, lines
    process.kill()
    raise RuntimeError(f"{args[:2]} did not start: {lines}")


def start(name: str, root: Path, turn_rpc: str | None, *, extra_env: dict[str, str] | None = None,
          gateway_args: list[str] | None = None,
          runner_args: list[str] | None = None) -> Deployment:
    """A deployment: the gateway, plus a runner unless `turn_rpc` is None (standalone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env.update(ASH_API_KEY=API_KEY, ASH_INTERNAL_SECRET=SECRET, **(extra_env or {}))
    deployment = Deployment(name)
    args = ["-m", "gateway", "--port", "0", "--data-dir", str(root / name / "gateway"),
            "--log-level", "warning", *(gateway_args or [])]
    if turn_rpc is not None:
        args += ["--mode", "coordinator", "--grpc-port", "0", "--turn-rpc", turn_rpc]
    (root / name).mkdir(parents=True)
    try:
        gateway, lines = _spawn(args, env, root / name / "gateway.log",
                                re.compile("^API key"))
        deployment.processes.append(gateway)
        banner = parse_banner("".join(lines))
        deployment.url = banner.url
        if turn_rpc is not None:
            if banner.registry is None:
                raise RuntimeError(f"the coordinator printed no runner registry: {lines}")
            runner, _ = _spawn(
                ["-m", "runner", "--gateway", banner.registry, "--listen", "127.0.0.1:0",
                 "--runner-id", f"{name}-1", "--data-dir", str(root / name / "runner"),
                 "--heartbeat-interval", "1", "--log-level", "warning", *(runner_args or [])],
                env, root / name / "runner.log", re.compile("listening on"))
            deployment.processes.append(runner)
    except BaseException:
        deployment.stop()
        raise
    return deployment


def supports_flag(module: str, flag: str) -> bool:
    """Whether `python -m module --help` lists `flag` (e.g. a feature still being built)."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                          text=True, check=False, timeout=60)
    listed = re.search(rf"(^|\s){re.escape(flag)}\b", done.stdout)
    return done.returncode == 0 and listed is not None
