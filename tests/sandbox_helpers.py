"""Helpers for the sandbox tests: run a command as the agent would, find a bridge on the host."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner import mountinfo
from tests.conftest import create_session, deploy, make_agent_folder, make_client
from tests.gateway_process import GatewayProcess, bridge_pids

PYTHON = os.path.realpath(sys.executable)
"""The runtime the bridge runs on: mounted at the same path in every sandbox, so attacks
written in Python can use it (its site-packages hidden)."""


@contextlib.contextmanager
def running_gateway(data_dir: Path, **options: Any) -> Iterator[GatewayProcess]:
    """A real gateway on `data_dir` (GatewayProcess options), stopped on exit."""
    gateway = GatewayProcess(data_dir, **options).start()
    try:
        yield gateway
    finally:
        gateway.stop()


def module_gateway(name: str, **options: Any) -> tuple[Any, Any]:
    """`gateway` and `client` fixtures for a test module that shares one real gateway
    (GatewayProcess options) among its tests: `gateway, client = module_gateway(...)`."""

    @pytest.fixture(scope="module")
    def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
        with running_gateway(tmp_path_factory.mktemp(name) / "data", **options) as process:
            yield process

    @pytest.fixture(scope="module")
    def client(gateway: GatewayProcess) -> Iterator[httpx.Client]:
        with make_client(gateway) as c:
            yield c

    return gateway, client


def run(client: httpx.Client, session_id: str, command: str, timeout: float = 30) -> dict[str, Any]:
    """POST /exec: the command runs in the session's sandbox, as the agent's Bash would;
    `timeout` in seconds (the API takes milliseconds)."""
    response = client.post(f"/api/sessions/{session_id}/exec",
                           json={"command": command, "timeout": round(timeout * 1000)},
                           timeout=timeout + 30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def python(client: httpx.Client, session_id: str, program: str) -> dict[str, Any]:
    """Run a Python program in the sandbox (stdin-free, via a heredoc)."""
    return run(client, session_id, f"{PYTHON} - <<'ASH_EOF'\n{program}\nASH_EOF")


def new_session(client: httpx.Client, root: Path, agent: str,
                config: dict[str, Any] | None = None) -> str:
    """Deploy `agent` (mock backend, optional extra config) and open a session on it."""
    folder = make_agent_folder(root, agent, {"backend": "mock", **(config or {})})
    deploy(client, agent, folder)
    return str(create_session(client, agent)["id"])


def bridge_host_pid(session_id: str) -> int:
    """The host pid of the session's bridge (the Python process, not bubblewrap's)."""
    for pid in bridge_pids(session_id):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if "python" in os.path.basename(exe):
            return pid
    raise AssertionError(f"no bridge process for session {session_id}")


def session_status(client: httpx.Client, session_id: str) -> str:
    status: str = client.get(f"/api/sessions/{session_id}").json()["session"]["status"]
    return status


def cgroup_dir(pid: int, controller: str) -> Path:
    """Where the process `pid` sits in the hierarchy holding `controller` (v1), or in the
    unified hierarchy (v2), as a host path."""
    memberships = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else ["unified"]:
            memberships[name] = path
    for mount in mountinfo.read():
        if mount.fstype == "cgroup" and controller in mount.super_options:
            return mount.path / memberships[controller].lstrip("/")
    unified = next(m for m in mountinfo.read() if m.fstype == "cgroup2")
    return unified.path / memberships["unified"].lstrip("/")


def loop_devices_backed_by(image: Path) -> list[str]:
    """Loop devices whose backing file is `image` (they free themselves when unmounted)."""
    devices = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        if backing.read_text().strip().removesuffix(" (deleted)") == str(image):
            devices.append(backing.parent.parent.name)
    return devices


POOL_WAIT = 60.0
"""How long a warm pool may take to fill (sandboxes start one at a time)."""


def pool_of(client: httpx.Client) -> dict[str, int]:
    health = client.get("/health").json()
    pool: dict[str, int] = health["warmPool"]
    return pool


def wait_for_pool(client: httpx.Client, ready: int) -> dict[str, int]:
    deadline = time.monotonic() + POOL_WAIT
    while (pool := pool_of(client))["ready"] < ready:
        assert time.monotonic() < deadline, f"pool never had {ready} ready: {pool}"
        time.sleep(0.05)
    return pool
