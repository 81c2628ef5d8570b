"""Schemathesis against a real gateway: generated requests from /docs/json never get a 5xx,
and every response matches the schema the document declares for it."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import create_session, deploy, make_client
from tests.gateway_process import GatewayProcess

SCHEMATHESIS = shutil.which("schemathesis")
"""In the test extras: a missing CLI fails the test (no skip)."""
MAX_EXAMPLES = 10
"""Per operation: the whole run stays well under two minutes."""
REJECTED_STATUSES = ["400", "401", "404", "405", "409", "410", "413", "415", "422"]
"""What a request the schema calls invalid may get (`negative_data_rejection`)."""


def schemathesis_run(gateway: GatewayProcess, cwd: Path, *options: str,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert SCHEMATHESIS is not None
    return subprocess.run(
        [SCHEMATHESIS, "run", f"{gateway.url}/docs/json",
         "--header", f"Authorization: Bearer {gateway.api_key}",
         "--seed", "1", "--no-color", "--generation-database", "none",
         "--request-timeout", "30", *options],
        cwd=cwd, capture_output=True, text=True, timeout=280,
        env=None if env is None else {**os.environ, **env},
    )


def pin_to(cwd: Path, session_id: str, agent: str, extra: str = "") -> None:
    """Every `{id}` and `{name}` in generated requests names this session and agent."""
    (cwd / "schemathesis.toml").write_text(
        f'[parameters]\n"path.id" = "{session_id}"\n"path.name" = "{agent}"\n{extra}')




@pytest.mark.timeout(300)
def test_generated_requests_get_no_server_error_and_match_the_schemas(
    gateway: GatewayProcess, tmp_path: Path,
) -> None:
    run = schemathesis_run(gateway, tmp_path,
                           "--checks", "not_a_server_error,response_schema_conformance",
                           "--max-examples", str(MAX_EXAMPLES))
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


@pytest.mark.timeout(300)
def test_generated_requests_on_a_real_agent_and_session_get_no_server_error(
    gateway: GatewayProcess, tmp_path: Path, agent_folder: Path,
) -> None:
    """The same run with every `{id}` and `{name}` pinned to a live session and its agent,
    so the operations are exercised past their 404s."""
    with make_client(gateway) as client:
        deploy(client, "fuzzed", agent_folder)
        session = create_session(client, "fuzzed")
    pin_to(tmp_path, session["id"], "fuzzed")
    run = schemathesis_run(gateway, tmp_path,
                           "--checks", "not_a_server_error,response_schema_conformance",
                           "--max-examples", "3")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


@pytest.mark.timeout(300)
def test_invalid_requests_are_rejected_and_change_nothing(
    gateway: GatewayProcess, tmp_path: Path, agent_folder: Path,
) -> None:
    """Generated invalid input only (`--mode negative`) on a live session and its agent:
    every request is rejected with a 4xx, and the hooks in tests/schemathesis_state_hooks.py
    check that the agents, sessions and the session's files read the same before and after
    each rejected one. Operations whose only input is the pinned id (the lifecycle verbs,
    DELETE) have nothing invalid to generate but a missing key: test_auth covers those."""
    with make_client(gateway) as client:
        deploy(client, "fuzzed", agent_folder)
        session = create_session(client, "fuzzed")
        written = client.post(f"/api/sessions/{session['id']}/files", json={"files": [
            {"path": "notes/kept.txt", "content": base64.b64encode(b"kept").decode()}]})
        assert written.status_code == 200, written.text
    statuses = ", ".join(f'"{status}"' for status in REJECTED_STATUSES)
    pin_to(tmp_path, session["id"], "fuzzed",
           f"[checks.negative_data_rejection]\nexpected-statuses = [{statuses}]\n")
    run = schemathesis_run(
        gateway, tmp_path, "--mode", "negative", "--phases", "coverage,fuzzing",
        "--checks", "not_a_server_error,negative_data_rejection,rejected_request_changes_nothing",
        "--exclude-method", "DELETE",
        "--exclude-path-regex", "/(pause|resume|stop|fork|interrupt|drain)$",
        "--max-examples", "3",
        env={"SCHEMATHESIS_HOOKS": "tests.schemathesis_state_hooks",
             "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
             "ASH_FUZZ_URL": gateway.url, "ASH_FUZZ_KEY": gateway.api_key,
             "ASH_FUZZ_SESSION": session["id"]},
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    with make_client(gateway) as client:
        kept = client.get(f"/api/sessions/{session['id']}/files/notes/kept.txt")
        assert kept.content == b"kept"
