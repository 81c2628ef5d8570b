"""Start and stop a real `ash-gateway` process for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.sse_client import SseEvent, parse_sse

TEST_API_KEY = "ash_test_key_0123456789"
TEST_CREDENTIAL_KEY = "dGVzdC1jcmVkZW50aWFsLWtleS0zMi1ieXRlcy0hISE="
"""ASH_CREDENTIAL_KEY of test gateways (32 bytes, base64): the credentials routes work in
every test unless its `extra_env` sets it empty."""
STARTUP_TIMEOUT = 30.0
NO_WARM_POOL = {"ASH_WARM_POOL": "0"}
"""Test gateways and runners start without a warm pool unless a test asks for one
(tests/test_warm_pool.py): `bridge_pids` finds a session's bridge by the ASH_SESSION_ID
it was started with, which a warm-pool bridge (bound after it started) does not have,
and a suite that starts hundreds of gateways should not start two idle sandboxes with each."""


@dataclass
class GatewayProcess:
    data_dir: Path
    api_key: str | None = TEST_API_KEY
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    data_dir_flag: bool = True
    """Pass --data-dir; when False the test gives ASH_DATA_DIR in `extra_env` instead."""
    module: str = "gateway"
    """What `python -m` runs: the gateway, or a test's wrapper of it."""
    process: subprocess.Popen[str] | None = None
    url: str = ""
    banner: list[str] = field(default_factory=list)

    def start(self) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
        env.update(NO_WARM_POOL)
        env["ASH_CREDENTIAL_KEY"] = TEST_CREDENTIAL_KEY
        env.update(self.extra_env)
        if self.api_key is not None:
            env["ASH_API_KEY"] = self.api_key
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.banner = []
        with open(self.stderr_path, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--port", "0",
                 *(["--data-dir", str(self.data_dir)] if self.data_dir_flag else []),
                 *self.extra_args],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
            )
        assert self.process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                self.process.wait(5)
                raise RuntimeError(
                    f"gateway exited {self.process.returncode}: {self.stderr_path.read_text()}"
                )
            self.banner.append(line.rstrip("\n"))
            match = re.search(r"listening on (\S+)", line)
            if match:
                self.url = match.group(1)
            if line.startswith("API key"):
                return self
        raise RuntimeError(f"gateway did not start in {STARTUP_TIMEOUT}s: {self.banner}")

    @property
    def stderr_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.gateway.log"

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        return stop_process(self.process, sig, timeout)


def stop_process(process: subprocess.Popen[str], sig: int = signal.SIGTERM,
                 timeout: float = 15.0) -> int:
    """Signal `process` and wait for it (killing it after `timeout`); its exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    return process.returncode


def bridge_pids(session_id: str) -> list[int]:
    """PIDs of bridge processes serving `session_id`, found through /proc."""
    needle = f"ASH_SESSION_ID={session_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def kill_bridge(session_id: str) -> None:
    pids = bridge_pids(session_id)
    assert pids, f"no bridge process found for session {session_id}"
    for pid in pids:
        # A sandbox is several processes (bubblewrap's two, the bridge): killing the first
        # may already have taken the others.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # /proc/<pid>/environ empties before the kernel closes the dead process's
    # sockets; only once the gateway has reaped the pid has it seen the death.
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"bridge {pids} was not reaped"
        time.sleep(0.01)


def turn_with_bridge_killed(client: Any, session_id: str) -> list[SseEvent]:
    """A slow turn whose bridge is SIGKILLed once its first `text_delta` has arrived; every
    event the client then reads."""
    with client.stream("POST", f"/api/sessions/{session_id}/messages",
                       json={"content": "slow", "options": {"tokenIntervalMs": 200,
                                                            "tokens": 50}}) as response:
        chunks = response.iter_raw()
        seen = [next(chunks)]
        while b"text_delta" not in b"".join(seen):
            seen.append(next(chunks))
        kill_bridge(session_id)
        return parse_sse([*seen, *chunks])
