"""Schemathesis against a real gateway: generated requests from /docs/json never get a 5xx,
and every response matches the schema the document declares for it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.gateway_process import GatewayProcess

SCHEMATHESIS = shutil.which("schemathesis")
MAX_EXAMPLES = 10
"""Per operation: the whole run stays well under two minutes."""


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed")
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
