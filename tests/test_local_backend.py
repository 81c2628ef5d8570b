"""LocalBackend with real bridge processes: turns, memory, interrupts, crashes, resume, state."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from runner.backend import AgentSpec, BackendError, BackendStats, SandboxGone
from runner.local import LocalBackend, restore_workspace
from runner.sandbox import BridgeSettings
from tests.runner_fixtures import collect, first_of, make_agent, message_text, payload, types
from wire.events import DONE, ERROR, MESSAGE, TEXT_DELTA, TURN_COMPLETE

SID = "sess-1"
SLOW = {"tokenIntervalMs": 50, "tokens": 40}
"""A turn that takes two seconds unless something stops it."""


@pytest.fixture
def agent(tmp_path: Path) -> AgentSpec:
    return make_agent(tmp_path)


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(tmp_path / "data", settings=BridgeSettings())
    yield backend
    await backend.close()


async def wait_until_dead(backend: LocalBackend, session_id: str = SID) -> None:
    """Poll, so the test sees what `is_alive` reports on its own."""
    for _ in range(500):
        if not backend.is_alive(session_id):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{session_id} still alive after 5 s")


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_create_starts_a_fresh_sandbox_in_the_data_dir(
    backend: LocalBackend, agent: AgentSpec, tmp_path: Path
) -> None:
    info = await backend.create(SID, agent)
    assert info.session_id == SID and not info.restored
    assert info.workspace == str(tmp_path / "data" / "sandboxes" / SID / "workspace")
    assert backend.is_alive(SID) and process_exists(info.pid)
    assert backend.stats() == BackendStats(sandboxes=1, busy=0, capacity=backend.max_sandboxes)


async def test_turn_streams_deltas_message_turn_complete_then_done(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    turn = await collect(backend.send(SID, "hello", {"tokens": 3}))
    assert types(turn) == [TEXT_DELTA] * 3 + [MESSAGE, TURN_COMPLETE, MESSAGE, DONE]
    assert payload(turn[-1])["status"] == "ok"


async def test_second_turn_remembers_the_first(backend: LocalBackend, agent: AgentSpec) -> None:
    await backend.create(SID, agent)
    await collect(backend.send(SID, "my name is Ada"))
    second = await collect(backend.send(SID, "what is my name?"))
    assert message_text(second) == (
        "Turn 2. You said: what is my name?. Earlier you said: my name is Ada."
    )


async def test_interrupt_stops_a_slow_turn(backend: LocalBackend, agent: AgentSpec) -> None:
    await backend.create(SID, agent)
    started = time.monotonic()
    turn = []
    async for event in backend.send(SID, "take your time", SLOW):
        turn.append(event)
        if len(turn) == 2:
            await backend.interrupt(SID)
    assert time.monotonic() - started < 1.5
    assert types(turn).count(TEXT_DELTA) < SLOW["tokens"]
    assert first_of(turn, TURN_COMPLETE)["stop_reason"] == "interrupted"
    assert payload(turn[-1]) ["status"] == "interrupted"


async def test_a_turn_closed_early_is_drained_so_the_next_turn_starts_clean(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    stream = backend.send(SID, "abandoned", SLOW)
    await anext(stream)
    await stream.aclose()
    started = time.monotonic()
    turn = await collect(backend.send(SID, "next"))
    assert time.monotonic() - started < 1.5
    assert message_text(turn).startswith("Turn 2. You said: next.")
    assert types(turn)[0] == TEXT_DELTA and types(turn).count(DONE) == 1
    assert payload(turn[-1])["status"] == "ok"


async def test_concurrent_send_is_refused_as_busy(backend: LocalBackend, agent: AgentSpec) -> None:
    await backend.create(SID, agent)
    first = backend.send(SID, "slow one", SLOW)
    await anext(first)
    assert backend.stats().busy == 1
    with pytest.raises(BackendError, match="session busy"):
        await collect(backend.send(SID, "impatient"))
    await backend.interrupt(SID)
    assert payload((await collect(first))[-1]) ["status"] == "interrupted"


async def test_sigkill_mid_turn_yields_error_then_done_and_marks_dead(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    stream = backend.send(SID, "doomed", SLOW)
    await anext(stream)
    backend.kill(SID)
    rest = await collect(stream)
    assert types(rest)[-2:] == [ERROR, DONE]
    assert payload(rest[-2]) == {
        "error": "sandbox exited unexpectedly (exit code -9)",
        "code": "sandbox_exited",
    }
    assert payload(rest[-1]) ["status"] == "error"
    assert not backend.is_alive(SID)


async def test_idle_bridge_death_is_detected(backend: LocalBackend, agent: AgentSpec) -> None:
    await backend.create(SID, agent)
    backend.kill(SID)
    await wait_until_dead(backend)
    assert backend.stats() == BackendStats(sandboxes=0, busy=0, capacity=backend.max_sandboxes)
    with pytest.raises(SandboxGone):
        await collect(backend.send(SID, "anyone there?"))


async def test_cold_resume_after_a_kill_keeps_memory(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    first = await backend.create(SID, agent)
    await collect(backend.send(SID, "remember apples"))
    backend.kill(SID)
    await wait_until_dead(backend)
    resumed = await backend.create(SID, agent)
    assert resumed.restored and resumed.pid != first.pid
    turn = await collect(backend.send(SID, "what fruit?"))
    assert message_text(turn) == "Turn 2. You said: what fruit?. Earlier you said: remember apples."


async def test_snapshot_restores_memory_in_another_data_dir(
    backend: LocalBackend, agent: AgentSpec, tmp_path: Path
) -> None:
    await backend.create(SID, agent)
    await collect(backend.send(SID, "remember pears"))
    state = await backend.snapshot(SID)
    elsewhere = LocalBackend(tmp_path / "elsewhere", settings=BridgeSettings())
    try:
        info = await elsewhere.create(SID, agent, state=state)
        assert info.restored
        turn = await collect(elsewhere.send(SID, "what fruit?"))
        assert "Earlier you said: remember pears." in message_text(turn)
    finally:
        await elsewhere.close()


async def test_snapshot_carries_workspace_files(
    backend: LocalBackend, agent: AgentSpec, tmp_path: Path
) -> None:
    await backend.create(SID, agent)
    await collect(backend.send(SID, "/bash mkdir -p notes && echo kept > notes/todo.txt"))
    state = await backend.snapshot(SID)
    elsewhere = LocalBackend(tmp_path / "elsewhere", settings=BridgeSettings())
    try:
        info = await elsewhere.create(SID, agent, state=state)
        assert (Path(info.workspace) / "notes" / "todo.txt").read_text() == "kept\n"
    finally:
        await elsewhere.close()


def test_restore_skips_members_that_would_escape_the_workspace(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("ok.txt", "../escape.txt"):
            member = tarfile.TarInfo(name)
            member.size = 2
            tar.addfile(member, io.BytesIO(b"hi"))
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    restore_workspace(workspace, buffer.getvalue())
    assert sorted(p.name for p in workspace.iterdir()) == ["ok.txt"]
    assert not (tmp_path / "escape.txt").exists()


async def test_destroy_stops_the_bridge_and_deletes_the_sandbox_dir(
    backend: LocalBackend, agent: AgentSpec, tmp_path: Path
) -> None:
    info = await backend.create(SID, agent)
    await backend.destroy(SID)
    assert not backend.is_alive(SID) and not process_exists(info.pid)
    assert not (tmp_path / "data" / "sandboxes" / SID).exists()


async def test_destroy_can_keep_the_workspace(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    await collect(backend.send(SID, "hello"))
    await backend.destroy(SID, keep_workspace=True)
    with tarfile.open(fileobj=io.BytesIO(await backend.snapshot(SID))) as kept:
        assert ".ash/mock/conversation.json" in kept.getnames()


async def test_close_stops_every_bridge_and_keeps_workspaces(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    infos = [await backend.create(sid, agent) for sid in ("sess-a", "sess-b")]
    await backend.close()
    assert not any(process_exists(info.pid) for info in infos)
    workspaces = [Path(info.workspace) for info in infos]
    assert all(workspace.is_dir() for workspace in workspaces)
    assert backend.stats() == BackendStats(sandboxes=0, busy=0, capacity=backend.max_sandboxes)


async def test_create_for_a_session_with_a_live_sandbox_is_refused(
    backend: LocalBackend, agent: AgentSpec
) -> None:
    await backend.create(SID, agent)
    with pytest.raises(BackendError, match="already has a sandbox"):
        await backend.create(SID, agent)


async def test_failed_fresh_start_leaves_no_sandbox_dir(
    backend: LocalBackend, tmp_path: Path
) -> None:
    with pytest.raises(BackendError):
        await backend.create(SID, make_agent(tmp_path, config={"backend": "claude"}))
    assert not (tmp_path / "data" / "sandboxes" / SID).exists()


@pytest.mark.parametrize("session_id", ["../escape", "a/b", ".hidden", ""])
async def test_session_ids_that_are_not_plain_names_are_refused(
    backend: LocalBackend, agent: AgentSpec, session_id: str
) -> None:
    with pytest.raises(BackendError, match="invalid session id"):
        await backend.create(session_id, agent)


def test_backend_works_on_uvloop_as_the_gateway_runs_it(agent: AgentSpec, tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], list[str], bool]:
        backend = LocalBackend(tmp_path / "data", settings=BridgeSettings())
        try:
            await backend.create(SID, agent)
            await backend.create("idle", agent)
            first = await collect(backend.send(SID, "hello", {"tokens": 2}))
            abandoned = backend.send(SID, "abandoned", SLOW)
            await anext(abandoned)
            await abandoned.aclose()
            stream = backend.send(SID, "doomed", SLOW)
            await anext(stream)
            backend.kill(SID)
            backend.kill("idle")
            await wait_until_dead(backend, "idle")
            return types(first), types(await collect(stream))[-2:], backend.is_alive(SID)
        finally:
            await backend.close()

    first, last, alive = uvloop.run(scenario())
    assert first == [TEXT_DELTA, TEXT_DELTA, MESSAGE, TURN_COMPLETE, MESSAGE, DONE]
    assert last == [ERROR, DONE]
    assert not alive
