"""The real bridge process over a real socketpair: handshake, environment, failures, exit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from runner.backend import AgentSpec, SandboxStartError
from runner.bridge_client import BridgeClient
from runner.isolation import NoIsolation
from runner.local import LocalBackend
from runner.sandbox import (
    HOST_ENV_ALLOWLIST,
    BridgeProcess,
    BridgeSettings,
    SandboxSpec,
    spawn_bridge,
)
from tests.runner_fixtures import first_of, make_agent, payload
from wire.events import DONE, ERROR, INTERRUPT, QUERY, READY, SHUTDOWN, TOOL_RESULT, Event

SHELL_VARIABLES = {"PWD", "OLDPWD", "SHLVL", "_"}
"""Variables /bin/sh sets on its own when it runs a `/bash` command."""


@dataclass
class Bridge:
    process: BridgeProcess
    client: BridgeClient
    spec: SandboxSpec

    async def turn(self, prompt: str, **options: Any) -> list[Event]:
        self.client.send(QUERY, orjson.dumps({"prompt": prompt, "options": options}))
        return await self.read_turn()

    async def read_turn(self) -> list[Event]:
        turn: list[Event] = []
        async with asyncio.timeout(10):
            while (event := await self.client.next_event()) is not None:
                turn.append(event)
                if event.type == DONE:
                    break
        return turn

    async def exit_code(self) -> int:
        async with asyncio.timeout(10):
            return await self.process.process.wait()


async def start_bridge(spec: SandboxSpec) -> tuple[Bridge, Event]:
    process = await spawn_bridge(spec)
    client = await BridgeClient.connect(process.sock)
    async with asyncio.timeout(10):
        ready = await client.next_event()
    assert ready is not None, process.log_tail()
    return Bridge(process, client, spec), ready


@pytest.fixture
async def bridge_for(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Bridge] = []

    async def start(agent: AgentSpec) -> tuple[Bridge, Event]:
        spec = SandboxSpec("sess-1", agent, tmp_path / "sandbox", BridgeSettings())
        bridge, ready = await start_bridge(spec)
        started.append(bridge)
        return bridge, ready

    yield start
    for bridge in started:
        bridge.client.close()
        if bridge.process.process.returncode is None:
            bridge.process.process.kill()
        await bridge.process.process.wait()


async def test_bridge_sends_ready_with_its_backend_and_pid(tmp_path: Path, bridge_for: Any) -> None:
    bridge, ready = await bridge_for(make_agent(tmp_path))
    assert ready.type == READY
    assert payload(ready) == {"backend": "mock", "pid": bridge.process.pid}


async def test_bridge_environment_holds_only_allowlisted_variables(
    tmp_path: Path, bridge_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPER_SECRET", "hunter2")
    monkeypatch.setenv("PYTHONPATH", "/nowhere")
    bridge, _ = await bridge_for(make_agent(tmp_path, config={"env": {"AGENT_FLAVOUR": "mint"}}))
    output = first_of(await bridge.turn("/bash env"), TOOL_RESULT)["content"]
    env = dict(line.split("=", 1) for line in output.splitlines() if "=" in line)
    assert "SUPER_SECRET" not in env and "hunter2" not in output
    assert env["HOME"] == str(bridge.spec.workspace)
    assert env["AGENT_FLAVOUR"] == "mint"
    assert env["ASH_SESSION_ID"] == "sess-1"
    allowed = {*HOST_ENV_ALLOWLIST, "HOME", "AGENT_FLAVOUR", *SHELL_VARIABLES,
               "ASH_SESSION_ID", "ASH_AGENT_DIR", "ASH_BACKEND"}
    assert set(env) <= allowed
    assert "ASH_BRIDGE_FD" not in env  # the bridge took its socket and forgot the name


async def test_bridge_runs_in_its_workspace(tmp_path: Path, bridge_for: Any) -> None:
    bridge, _ = await bridge_for(make_agent(tmp_path))
    output = first_of(await bridge.turn("/bash pwd"), TOOL_RESULT)["content"]
    assert output == f"{bridge.spec.workspace}\n"
    assert bridge.spec.log_path.parent != bridge.spec.workspace


async def test_configured_mock_timing_reaches_the_bridge(tmp_path: Path) -> None:
    settings = BridgeSettings(mock_tokens=3)
    spec = SandboxSpec("sess-1", make_agent(tmp_path), tmp_path / "sandbox", settings)
    bridge, _ = await start_bridge(spec)
    try:
        turn = await bridge.turn("one two three four five six seven")
        assert [e.type for e in turn].count("text_delta") == 3
    finally:
        bridge.client.close()
        await bridge.exit_code()


async def test_bad_query_gets_an_error_then_done(tmp_path: Path, bridge_for: Any) -> None:
    bridge, _ = await bridge_for(make_agent(tmp_path))
    bridge.client.send(QUERY, b"not json")
    turn = await bridge.read_turn()
    assert [e.type for e in turn] == [ERROR, DONE]
    assert payload(turn[0])["code"] == "bad_request"
    assert payload(turn[1])["status"] == "error"


async def test_interrupt_while_idle_does_not_touch_the_next_turn(
    tmp_path: Path, bridge_for: Any
) -> None:
    bridge, _ = await bridge_for(make_agent(tmp_path))
    bridge.client.send(INTERRUPT)
    turn = await bridge.turn("hello")
    assert payload(turn[-1])["status"] == "ok"


async def test_interrupt_sent_right_after_the_query_stops_that_turn(
    tmp_path: Path, bridge_for: Any
) -> None:
    bridge, _ = await bridge_for(make_agent(tmp_path))
    bridge.client.send(QUERY, orjson.dumps({"prompt": "slow", "options": {"tokenIntervalMs": 500,
                                                                           "tokens": 20}}))
    bridge.client.send(INTERRUPT)
    turn = await bridge.read_turn()
    assert payload(turn[-1])["status"] == "interrupted"


async def test_bridge_exits_when_the_runner_closes_the_socket(
    tmp_path: Path, bridge_for: Any
) -> None:
    bridge, _ = await bridge_for(make_agent(tmp_path))
    bridge.client.close()
    assert await bridge.exit_code() == 0


async def test_bridge_exits_mid_turn_when_the_runner_closes_the_socket(
    tmp_path: Path, bridge_for: Any
) -> None:
    bridge, _ = await bridge_for(make_agent(tmp_path))
    bridge.client.send(QUERY, orjson.dumps({"prompt": "/bash sleep 30"}))
    await bridge.client.next_event()
    bridge.client.close()
    assert await bridge.exit_code() == 0


async def test_bridge_exits_on_shutdown(tmp_path: Path, bridge_for: Any) -> None:
    bridge, _ = await bridge_for(make_agent(tmp_path))
    bridge.client.send(SHUTDOWN)
    assert await bridge.exit_code() == 0


async def test_claude_backend_fails_start_with_exit_code_2_and_its_reason(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "data", settings=BridgeSettings())
    agent = make_agent(tmp_path, config={"backend": "claude"})
    with pytest.raises(SandboxStartError) as failure:
        await backend.create("sess-1", agent)
    assert str(failure.value) == (
        "bridge exited with code 2: ash-bridge: the claude backend needs model credentials: "
        "ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for another endpoint) in the agent's env, "
        "or the runner's"
    )


async def test_missing_agent_folder_fails_start_with_exit_code_and_stderr(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "data", settings=BridgeSettings(), isolation=NoIsolation())
    agent = AgentSpec(name="ghost", path=str(tmp_path / "no-such-agent"))
    with pytest.raises(SandboxStartError, match=r"^bridge exited with code 2: .*agent folder "
                                                 r"not found: .*no-such-agent"):
        await backend.create("sess-1", agent)
