"""Deploying an agent from a folder only its owner can read (`mktemp -d` makes one: 0700,
files 0600) still gives the sandbox's user (uid 100000 on the host) a readable copy, in
standalone mode and on a runner; a folder the gateway cannot copy is refused with a 400."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from runner.agent_cache import AgentCache
from runner.workspace_state import pack_workspace
from tests.conftest import create_session, deploy, send_message
from tests.sandbox_helpers import run
from tests.split_cluster import Cluster
from tests.sse_client import reply_text


@pytest.fixture
def private_folder() -> Iterator[Path]:
    """An agent folder as `mktemp -d` and a umask of 077 leave it: nobody but root reads it."""
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "CLAUDE.md").write_text("# private\nYou are a test agent.\n")
        (folder / "agent.json").write_text(json.dumps({"backend": "mock"}))
        (folder / "tool.sh").write_text("#!/bin/sh\necho tool ran\n")
        (folder / "sub").mkdir()
        (folder / "sub" / "file").write_text("secret sauce\n")
        for path, mode in [("CLAUDE.md", 0o600), ("agent.json", 0o600), ("tool.sh", 0o700),
                           ("sub/file", 0o600), ("sub", 0o700)]:
            os.chmod(folder / path, mode)
        assert os.stat(folder).st_mode & 0o777 == 0o700
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def assert_agent_readable(client: httpx.Client, folder: Path) -> None:
    deploy(client, "private", folder)
    session_id = str(create_session(client, "private")["id"])
    events = send_message(client, session_id, "hello")
    assert reply_text(events), [e.event for e in events]
    result = run(client, session_id, "cat /agent/sub/file && /agent/tool.sh")
    assert result["exitCode"] == 0, result
    assert result["stdout"] == "secret sauce\ntool ran\n", result


def test_agent_from_private_folder_is_readable_in_its_sandbox(client, private_folder) -> None:
    assert_agent_readable(client, private_folder)


def test_agent_from_private_folder_is_readable_on_a_runner(tmp_path, private_folder) -> None:
    with Cluster(tmp_path).start() as cluster:
        cluster.add_runners("r1")
        with cluster.client() as client:
            assert_agent_readable(client, private_folder)


def test_deploy_of_a_folder_holding_a_fifo_is_a_400(client, private_folder) -> None:
    os.mkfifo(private_folder / "pipe")
    response = client.post("/api/agents", json={"name": "private", "path": str(private_folder)})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["statusCode"] == 400
    assert "pipe" in body["error"], body
    assert client.get("/api/agents/private").status_code == 404


def test_deploy_changes_no_mode_through_a_symbolic_link(client, private_folder, tmp_path) -> None:
    """A link in the folder is copied as a link; its target's mode stays as it was."""
    outside = tmp_path / "host-secret"
    outside.write_text("host only\n")
    os.chmod(outside, 0o600)
    (private_folder / "link").symlink_to(outside)
    agent = deploy(client, "private", private_folder)
    assert os.readlink(Path(agent["path"]) / "link") == str(outside)
    assert os.stat(outside).st_mode & 0o777 == 0o600


def test_runner_unpacks_a_bundle_of_private_modes_readable(private_folder, tmp_path) -> None:
    """A runner given a bundle whose members are 0700/0600 (an older gateway packed the
    folder as it was) still unpacks a folder the sandbox's user can read."""
    bundle = pack_workspace(private_folder)
    folder = asyncio.run(AgentCache(tmp_path / "cache").folder("private", "1", bundle))
    modes = {str(path.relative_to(folder)): path.stat().st_mode & 0o7777
             for path in [folder, *folder.rglob("*")]}
    assert modes == {".": 0o755, "CLAUDE.md": 0o644, "agent.json": 0o644, "tool.sh": 0o755,
                     "sub": 0o755, "sub/file": 0o644}
