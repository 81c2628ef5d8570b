"""A real split deployment for tests: one `ash-gateway --mode coordinator` and real
`ash-runner` processes on loopback, with a short heartbeat."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import deploy, make_agent_folder, make_client
from tests.gateway_process import NO_WARM_POOL, STARTUP_TIMEOUT, GatewayProcess, stop_process

SECRET = "split-test-secret"
HEARTBEAT = 0.15
"""Seconds; a silent runner is lost after three of these."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunnerProcess:
    runner_id: str
    gateway: str
    data_dir: Path
    heartbeat: float = HEARTBEAT
    max_sandboxes: int = 20
    secret: str | None = SECRET
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    module: str = "runner"
    """What `python -m` runs: the runner, or a test's wrapper of it."""
    process: subprocess.Popen[str] | None = None
    address: str = ""

    def start(self) -> RunnerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
        env.update(NO_WARM_POOL)
        if self.secret is not None:
            env["ASH_INTERNAL_SECRET"] = self.secret
        env.update(self.extra_env)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--gateway", self.gateway,
                 "--listen", "127.0.0.1:0", "--runner-id", self.runner_id,
                 "--max-sandboxes", str(self.max_sandboxes),
                 "--heartbeat-interval", str(self.heartbeat),
                 "--data-dir", str(self.data_dir), *self.extra_args],
                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"listening on (\S+)", line)
        if match is None:
            self.process.wait(10)
            raise RuntimeError(f"runner {self.runner_id} exited {self.process.returncode}: "
                               f"{self.log_path.read_text()}")
        self.address = match.group(1)
        return self

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.process is not None
        return stop_process(self.process, sig, timeout)


class Cluster:
    """A coordinator gateway and the runners a test starts against it."""

    def __init__(self, root: Path, gateway_args: list[str] | None = None,
                 heartbeat: float = HEARTBEAT) -> None:
        """`heartbeat`: a longer interval for tests whose sandboxes load the machine."""
        self.root = root
        self.heartbeat = heartbeat
        self.grpc_port = free_port()
        self.gateway_args = gateway_args or []
        self.gateway = self._gateway()
        self.runners: dict[str, RunnerProcess] = {}

    def _gateway(self) -> GatewayProcess:
        return GatewayProcess(
            self.root / "gateway",
            extra_args=["--mode", "coordinator", "--grpc-port", str(self.grpc_port),
                        "--heartbeat-interval", str(self.heartbeat), *self.gateway_args],
            extra_env={"ASH_INTERNAL_SECRET": SECRET},
        )

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> Cluster:
        self.gateway.start()
        assert any(f"on {self.grpc_address}" in line for line in self.gateway.banner)
        return self

    def add_runners(self, *runner_ids: str, **options: Any) -> list[RunnerProcess]:
        """Start runners and wait until the gateway lists them healthy."""
        started = [self.add_runner(runner_id, **options) for runner_id in runner_ids]
        self.wait_for_runners(*runner_ids)
        return started

    def add_runner(self, runner_id: str, **options: Any) -> RunnerProcess:
        options.setdefault("heartbeat", self.heartbeat)
        runner = RunnerProcess(runner_id, self.grpc_address, self.root / runner_id, **options)
        self.runners[runner_id] = runner.start()
        return runner

    def restart_gateway(self, sig: int = signal.SIGTERM) -> None:
        """Stop the gateway (SIGKILL: a crash) and start it again on the same data dir."""
        self.gateway.stop(sig)
        self.gateway = self._gateway()
        self.gateway.start()

    def client(self) -> httpx.Client:
        return make_client(self.gateway)

    def runner_states(self) -> dict[str, dict[str, Any]]:
        with self.client() as client:
            response = client.get("/api/runners")
        assert response.status_code == 200, response.text
        return {r["id"]: r for r in response.json()["runners"]}

    def wait_for_runners(self, *runner_ids: str, state: str = "healthy",
                         timeout: float = STARTUP_TIMEOUT) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            runners = self.runner_states()
            if all(runners.get(r, {}).get("state") == state
                   and (runners[r]["connected"] or state != "healthy") for r in runner_ids):
                return runners
            assert time.monotonic() < deadline, f"runners never {state}: {runners}"
            time.sleep(0.05)

    def stop(self) -> None:
        for runner in self.runners.values():
            runner.stop(signal.SIGKILL)
        self.gateway.stop()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def session_of(client: httpx.Client, session_id: str) -> dict[str, Any]:
    response = client.get(f"/api/sessions/{session_id}")
    assert response.status_code == 200, response.text
    return response.json()["session"]


def echo_cluster_fixtures() -> tuple[Any, Any]:
    """`cluster` (a coordinator of its own per test, no runner yet) and `client` (with the
    `echo` agent deployed) fixtures for a split-mode test module:
    `cluster, client = echo_cluster_fixtures()`."""

    @pytest.fixture
    def cluster(tmp_path: Path) -> Iterator[Cluster]:
        with Cluster(tmp_path).start() as running:
            yield running

    @pytest.fixture
    def client(cluster: Cluster, tmp_path: Path) -> Iterator[httpx.Client]:
        with cluster.client() as c:
            deploy(c, "echo", make_agent_folder(tmp_path))
            yield c

    return cluster, client
