"""The `ash` CLI, run as a user runs it (a subprocess), against a real gateway."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway_process import GatewayProcess

pytestmark = pytest.mark.timeout(120)

SLOW_MOCK = {"backend": "mock", "mock": {"first_token_delay_ms": 50, "token_interval_ms": 60}}


def ash_env(gateway: GatewayProcess, config_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env.update(ASH_SERVER_URL=gateway.url, ASH_CONFIG_DIR=str(config_dir))
    if gateway.api_key:
        env["ASH_API_KEY"] = gateway.api_key
    return env


@pytest.fixture
def env(gateway: GatewayProcess, tmp_path: Path) -> dict[str, str]:
    return ash_env(gateway, tmp_path / "ash-config")


def ash(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "ash_cli", *args], env=env, text=True,
                            capture_output=True, timeout=60)
    if check:
        assert result.returncode == 0, (result.stdout, result.stderr)
    return result


def user_agent_folder(config: dict) -> Path:
    """A folder as a user makes one: `mktemp -d` (mode 0700), with a `.env`."""
    folder = Path(tempfile.mkdtemp(prefix="ash-cli-agent-"))
    (folder / "CLAUDE.md").write_text("# cli\nYou are a test agent.\n")
    (folder / "agent.json").write_text(json.dumps(config))
    (folder / ".env").write_text("GREETING=from-dotenv\n")
    return folder


@pytest.fixture
def session_id(env: dict[str, str]) -> str:
    ash(env, "deploy", str(user_agent_folder(SLOW_MOCK)), "--name", "cli")
    created = ash(env, "session", "create", "cli")
    return created.stdout.strip().split()[-1]


def test_deploy_uploads_the_folder_and_its_env_file(env: dict[str, str], session_id: str) -> None:
    listed = ash(env, "agent", "list")
    assert "cli" in listed.stdout
    result = ash(env, "session", "exec", session_id, "echo $GREETING")
    assert result.stdout.strip() == "from-dotenv"


def test_send_prints_the_reply_while_the_turn_is_still_streaming(
        env: dict[str, str], session_id: str) -> None:
    process = subprocess.Popen([sys.executable, "-m", "ash_cli", "session", "send", session_id,
                                "one two three four five six seven eight nine ten"],
                               env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    first = process.stdout.read(1)
    assert first, process.stderr.read() if process.stderr else ""
    assert process.poll() is None, "the first text arrived only once the turn had ended"
    rest = process.stdout.read()
    assert process.wait(timeout=30) == 0
    assert "ten" in first + rest


def test_exec_files_fork_and_end(env: dict[str, str], session_id: str) -> None:
    ash(env, "session", "exec", session_id, "echo hello > notes.txt")
    assert "notes.txt" in ash(env, "session", "files", session_id).stdout
    assert ash(env, "session", "files", session_id, "notes.txt").stdout == "hello\n"
    forked = ash(env, "session", "fork", session_id).stdout.strip().split()[-1]
    assert forked != session_id
    ash(env, "session", "resume", forked)
    assert ash(env, "session", "files", forked, "notes.txt").stdout == "hello\n"
    ash(env, "session", "end", session_id)
    info = ash(env, "session", "info", session_id, "--json")
    assert json.loads(info.stdout)["status"] == "ended"


class CuttableProxy:
    """A loopback TCP proxy whose open connections the test can cut mid-stream."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.open += [client, upstream]
            self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        for s in self.open:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open.clear()

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy(gateway: GatewayProcess) -> Iterator[CuttableProxy]:
    port = int(gateway.url.rsplit(":", 1)[1])
    proxy = CuttableProxy(port)
    yield proxy
    proxy.close()


def event_ids(output: str) -> list[int]:
    return [int(line.split()[0]) for line in output.splitlines() if line.split()[:1] != []
            and line.split()[0].isdigit()]


def test_tail_resumes_after_a_cut_connection_with_no_lost_or_repeated_event(
        env: dict[str, str], session_id: str, proxy: CuttableProxy) -> None:
    ash(env, "session", "send", session_id, "warm up the event log")
    tail_env = {**env, "ASH_SERVER_URL": f"http://127.0.0.1:{proxy.port}"}
    tail = subprocess.Popen([sys.executable, "-m", "ash_cli", "session", "tail", session_id],
                            env=tail_env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while proxy.accepted == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        proxy.cut()
        ash(env, "session", "send", session_id, "a turn sent while tail was cut off")
        deadline = time.monotonic() + 20
        while proxy.accepted < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.accepted >= 2, "tail did not reconnect"
        ash(env, "session", "send", session_id, "and one after it reconnected")
        time.sleep(2)
    finally:
        tail.terminate()
        out, err = tail.communicate(timeout=10)
    ids = event_ids(out)
    assert ids, (out, err)
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids
    assert len(ids) == len(set(ids))


def test_link_saves_the_server_in_the_config_file(gateway: GatewayProcess, tmp_path: Path) -> None:
    config_dir = tmp_path / "linked"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env["ASH_CONFIG_DIR"] = str(config_dir)
    ash(env, "link", gateway.url, "--api-key", gateway.api_key or "")
    saved = json.loads((config_dir / "config.json").read_text())
    assert saved["serverUrl"] == gateway.url
    assert (config_dir / "config.json").stat().st_mode & 0o077 == 0
    assert "ok" in ash(env, "health").stdout


@pytest.mark.parametrize("args", [
    ("session", "info", "no-such-session"),
    ("session", "create", "cli", "-e", "NOEQUALS"),
    ("session", "frobnicate"),
    ("deploy", "/no/such/folder"),
])
def test_bad_input_gives_one_line_and_exit_1(env: dict[str, str], args: tuple[str, ...]) -> None:
    result = ash(env, *args, check=False)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_no_server_gives_one_line_and_exit_1(tmp_path: Path) -> None:
    quiet = socket.socket()
    quiet.bind(("127.0.0.1", 0))
    port = quiet.getsockname()[1]
    quiet.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASH_")}
    env.update(ASH_SERVER_URL=f"http://127.0.0.1:{port}", ASH_CONFIG_DIR=str(tmp_path))
    result = ash(env, "agent", "list", check=False)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
