"""Schemathesis against a real gateway: generated requests from /docs/json never get a 5xx,
and every response matches the schema the document declares for it."""

from __future__ import annotations

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


@pytest.mark.timeout(300)
def test_generated_requests_get_no_server_error_and_match_the_schemas(
    gateway: GatewayProcess, tmp_path: Path,
) -> None:
    assert SCHEMATHESIS is not None
    run = subprocess.run(
        [SCHEMATHESIS, "run", f"{gateway.url}/docs/json",
         "--header", f"Authorization: Bearer {gateway.api_key}",
         "--checks", "not_a_server_error,response_schema_conformance",
         "--max-examples", str(MAX_EXAMPLES), "--seed", "1", "--no-color",
         "--generation-database", "none", "--request-timeout", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=280,
    )
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
    (tmp_path / "schemathesis.toml").write_text(
        f'[parameters]\n"path.id" = "{session["id"]}"\n"path.name" = "fuzzed"\n')
    run = subprocess.run(
        [SCHEMATHESIS, "run", f"{gateway.url}/docs/json",
         "--header", f"Authorization: Bearer {gateway.api_key}",
         "--checks", "not_a_server_error,response_schema_conformance",
         "--max-examples", "3", "--seed", "1", "--no-color",
         "--generation-database", "none", "--request-timeout", "30"],
        cwd=tmp_path, capture_output=True, text=True, timeout=280,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
