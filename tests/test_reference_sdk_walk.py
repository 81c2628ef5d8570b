"""A reference user's whole day with the published `ash-ai-sdk` (pinned in the test extras),
against a real gateway, standalone and via a runner over gRPC: every call succeeds and
returns sensible content. Its high-level `AshClient` for agents, sessions and streaming;
its generated low-level functions for what `AshClient` does not wrap (upload deploy,
files, exec, messages, events, logs, workspace)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ash_sdk import AshClient
from ash_sdk.api.agents import get_api_agents_name_files, post_api_agents
from ash_sdk.api.sessions import (
    get_api_sessions_id_events,
    get_api_sessions_id_files,
    get_api_sessions_id_logs,
    get_api_sessions_id_messages,
    get_api_sessions_id_workspace,
    post_api_sessions_id_exec,
    post_api_sessions_id_files,
)
from ash_sdk.client import AuthenticatedClient
from ash_sdk.models.post_api_agents_body import PostApiAgentsBody
from ash_sdk.models.post_api_sessions_id_exec_body import PostApiSessionsIdExecBody
from ash_sdk.models.post_api_sessions_id_files_body import PostApiSessionsIdFilesBody
from ash_sdk.models.post_api_sessions_id_files_body_files_item import (
    PostApiSessionsIdFilesBodyFilesItem,
)
from ash_sdk.streaming import (
    AshEvent,
    DoneEvent,
    MessageEvent,
    SessionStartEvent,
    TextDeltaEvent,
    TurnCompleteEvent,
)

from tests.conftest import make_agent_folder
from tests.gateway_process import GatewayProcess
from tests.split_cluster import Cluster


@dataclass
class Reference:
    """The reference's two clients, pointed at one of our gateways."""

    ash: AshClient
    low: AuthenticatedClient


@pytest.fixture(params=["standalone", "via-runner"])
def reference(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Reference]:
    def clients(gateway: GatewayProcess) -> Reference:
        return Reference(AshClient(gateway.url, token=gateway.api_key, timeout=60),
                         AuthenticatedClient(base_url=gateway.url, token=gateway.api_key,
                                             timeout=60, raise_on_unexpected_status=True))

    if request.param == "standalone":
        gateway = GatewayProcess(tmp_path / "data").start()
        try:
            yield clients(gateway)
        finally:
            gateway.stop()
    else:
        with Cluster(tmp_path).start() as cluster:
            cluster.add_runner("r1")
            cluster.wait_for_runners("r1")
            yield clients(cluster.gateway)


def turn(ash: AshClient, session_id: uuid.UUID, content: str,
         partials: bool = False) -> list[AshEvent]:
    return list(ash.send_message_stream(session_id, content,
                                        include_partial_messages=partials))


def assistant_text(events: list[AshEvent]) -> str:
    """The text of the assistant messages, as a reference client reads it."""
    return "".join(
        block.get("text", "")
        for event in events if isinstance(event, MessageEvent)
        and event.data.get("type") == "assistant"
        for block in event.data["message"]["content"])


def assert_whole_turn(events: list[AshEvent], session_id: uuid.UUID) -> None:
    assert isinstance(events[0], SessionStartEvent)
    assert events[0].session_id == str(session_id)
    assert any(isinstance(event, TurnCompleteEvent) and event.num_turns for event in events)
    assert isinstance(events[-1], DoneEvent) and events[-1].session_id == str(session_id)


def upload(path: str, content: bytes) -> dict[str, str]:
    return {"path": path, "content": base64.b64encode(content).decode()}


def test_the_reference_sdk_runs_a_whole_session_lifecycle(
    reference: Reference, tmp_path: Path,
) -> None:
    ash, low = reference.ash, reference.low

    deployed = ash.deploy_agent("echo", str(make_agent_folder(tmp_path)))
    uploaded = post_api_agents.sync_detailed(client=low, body=PostApiAgentsBody.from_dict({
        "name": "uploaded", "systemPrompt": "You are terse.",
        "files": [upload("agent.json", b'{"backend": "mock"}'),
                  upload("notes/hello.md", b"# hello\n")]}))
    assert uploaded.status_code == 201, uploaded.content
    assert {agent.name for agent in ash.list_agents()} == {"echo", "uploaded"}
    assert ash.get_agent("echo").id == deployed.id
    agent_files = get_api_agents_name_files.sync(client=low, name="uploaded")
    assert {"CLAUDE.md", "notes/hello.md"} <= {item.path for item in agent_files.files}

    session = ash.create_session("echo", extra_env={"WALK_GREETING": "hello from extraEnv"})
    assert (session.agent_name, session.status) == ("echo", "active")
    assert ash.get_session(session.id).id == session.id
    assert [s.id for s in ash.list_sessions(agent="echo")] == [session.id]

    whole = turn(ash, session.id, "my name is Ada")
    assert_whole_turn(whole, session.id)
    assert "my name is Ada" in assistant_text(whole)
    streamed = turn(ash, session.id, "say it in pieces", partials=True)
    assert_whole_turn(streamed, session.id)
    deltas = "".join(e.delta for e in streamed if isinstance(e, TextDeltaEvent))
    assert deltas and deltas == assistant_text(streamed)

    assert ash.pause_session(session.id).status == "paused"
    assert ash.resume_session(session.id).status == "active"
    assert "my name is Ada" in assistant_text(turn(ash, session.id, "who am I?"))

    written = post_api_sessions_id_files.sync_detailed(
        session.id, client=low, body=PostApiSessionsIdFilesBody(files=[
            PostApiSessionsIdFilesBodyFilesItem(**upload("work/plan.txt", b"step one\n"))]))
    assert written.status_code == 200, written.content
    listed = get_api_sessions_id_files.sync(session.id, client=low)
    assert "work/plan.txt" in {item.path for item in listed.files}
    ran = post_api_sessions_id_exec.sync(session.id, client=low, body=PostApiSessionsIdExecBody(
        command="cat work/plan.txt; printf %s \"$WALK_GREETING\"", timeout=10_000))
    assert (ran.exit_code, ran.stdout) == (0, "step one\nhello from extraEnv")

    fork = ash.fork_session(session.id)
    assert fork.id != session.id and fork.parent_session_id == session.id
    assert ash.resume_session(fork.id).status == "active"
    assert "my name is Ada" in assistant_text(turn(ash, fork.id, "who am I?"))
    forked_files = get_api_sessions_id_files.sync(fork.id, client=low)
    assert "work/plan.txt" in {item.path for item in forked_files.files}

    messages = get_api_sessions_id_messages.sync(session.id, client=low).messages
    assert [m.role for m in messages][:2] == ["user", "assistant"]
    assert "my name is Ada" in messages[0].content
    assert [m.sequence for m in messages] == sorted(m.sequence for m in messages)
    assert all(isinstance(json.loads(m.content), dict) for m in messages)
    timeline = get_api_sessions_id_events.sync(session.id, client=low).events
    assert {"text", "turn_complete"} <= {event.type_ for event in timeline}
    logs = get_api_sessions_id_logs.sync(session.id, client=low)
    assert logs.source == "sandbox" and all(entry.text for entry in logs.logs)

    workspace = get_api_sessions_id_workspace.sync_detailed(  # its spec declares no 200 body
        session.id, client=AuthenticatedClient(base_url=low._base_url, token=low.token))
    assert workspace.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(workspace.content))) as archive:
        assert archive.extractfile(archive.getmember("work/plan.txt")).read() == b"step one\n"

    assert ash.stop_session(session.id).status == "stopped"
    assert ash.resume_session(session.id).status == "active"
    assert "my name is Ada" in assistant_text(turn(ash, session.id, "who am I?"))
    assert ash.end_session(session.id).status == "ended"
    assert ash.end_session(fork.id).status == "ended"
    ash.delete_agent("uploaded")
    assert {agent.name for agent in ash.list_agents()} == {"echo"}
