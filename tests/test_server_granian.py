"""The gateway under granian (`ash-gateway --server granian`), held to hypercorn's properties.

Every test runs a real gateway process with `--server granian`: the `server_args`
fixture below overrides conftest's, so the `gateway` and `tls_gateway` fixtures
start granian, and the property tests of test_streams.py, test_protocols.py and
test_hypercorn_h2.py are run here against it unchanged. docs/servers.md has the
findings and the measurements.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests import test_hypercorn_h2, test_protocols, test_streams
from tests.conftest import TlsGateway, create_session, deploy, make_client, send_message
from tests.gateway_process import GatewayProcess, bridge_pids
from tests.sse_client import reply_text


@pytest.fixture
def server_args() -> list[str]:
    return ["--server", "granian"]


def test_banner_names_granian_and_the_port_it_bound(gateway: GatewayProcess) -> None:
    assert "granian" in gateway.banner[0]
    assert "no Upgrade: h2c" in gateway.banner[0]
    assert any(line.startswith("WARNING: --server granian is experimental")
               for line in gateway.banner)
    port = int(gateway.url.rsplit(":", 1)[1])
    assert port > 0
    assert httpx.get(f"{gateway.url}/health").json()["status"] == "ok"


def test_granian_logs_go_to_stderr_not_the_banner(gateway: GatewayProcess) -> None:
    assert not any("_granian:" in line for line in gateway.banner)
    assert httpx.get(f"{gateway.url}/health").status_code == 200
    assert "Started worker-1" in gateway.stderr_path.read_text()


@pytest.mark.parametrize(("protocol", "version"), [("h2", "HTTP/2"), ("http1.1", "HTTP/1.1")])
def test_a_full_turn_streams_over_each_protocol(
    gateway: GatewayProcess, agent_folder: Path, protocol: str, version: str
) -> None:
    with make_client(gateway, protocol) as client:
        assert client.get("/health").http_version == version
        deploy(client, "echo", agent_folder)
        sid = create_session(client, "echo")["id"]
        first = send_message(client, sid, "hello granian")
        second = send_message(client, sid, "again")
    assert first[-1].event == "done" and second[-1].event == "done"
    assert "hello granian" in reply_text(first)
    ids = [e.id for e in first + second]
    assert ids == list(range(1, len(ids) + 1))


@pytest.mark.parametrize(("http2", "expected"), [(True, "HTTP/2"), (False, "HTTP/1.1")])
def test_tls_negotiates_protocol_with_alpn_and_streams(
    tls_gateway: TlsGateway, agent_folder: Path, http2: bool, expected: str
) -> None:
    test_protocols.test_tls_negotiates_protocol_with_alpn_and_streams(
        tls_gateway, agent_folder, http2, expected)


def test_curl_prior_knowledge_streams_a_reply(gateway: GatewayProcess, agent_folder) -> None:
    test_protocols.test_curl_prior_knowledge_streams_a_reply(gateway, agent_folder)


def test_h2c_upgrade_is_answered_over_http1(gateway: GatewayProcess) -> None:
    """granian does not do `Upgrade: h2c` (hypercorn does): the client stays on HTTP/1.1."""
    result = test_protocols.curl("-v", "--http2", f"{gateway.url}/health")
    assert result.returncode == 0, result.stderr
    assert "HTTP/1.1 200" in result.stderr
    assert '"status":"ok"' in result.stdout


def test_held_reader_pauses_its_session_with_bounded_memory_while_another_streams(
    gateway: GatewayProcess, client: httpx.Client, agent_folder: Path
) -> None:
    test_streams.test_held_reader_pauses_its_session_with_bounded_memory_while_another_streams(
        gateway, client, agent_folder)


def test_http1_reader_gets_tcp_backpressure_then_everything(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    test_streams.test_http1_reader_gets_tcp_backpressure_then_everything(gateway, client, session)


def test_reset_of_a_held_stream_releases_the_pending_write_at_once(
    tmp_path: Path, agent_folder: Path, server_args: list[str]
) -> None:
    test_streams.test_reset_of_a_held_stream_releases_the_pending_write_at_once(
        tmp_path, agent_folder, server_args)


def test_vanished_client_does_not_leave_the_turn_stuck(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    test_streams.test_vanished_client_does_not_leave_the_turn_stuck(gateway, client, session)


def test_on_disconnect_interrupt_stops_the_turn_when_the_client_leaves(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    test_streams.test_on_disconnect_interrupt_stops_the_turn_when_the_client_leaves(
        gateway, client, session)


WRITE_TIMEOUT_DEFECT = (
    "granian: a pending send that the app cancels (our write timeout) keeps the HTTP/2 "
    "stream open; the app then returning does not reset it (it does when no send was "
    "pending), so the cut reader is never told (docs/servers.md)")


@pytest.mark.xfail(strict=True, reason=WRITE_TIMEOUT_DEFECT)
def test_reader_that_stops_is_cut_after_the_write_timeout_and_the_turn_completes(
    tmp_path: Path, agent_folder: Path, server_args: list[str]
) -> None:
    test_streams.test_reader_that_stops_is_cut_after_the_write_timeout_and_the_turn_completes(
        tmp_path, agent_folder, server_args)


def test_reader_cut_by_the_write_timeout_is_left_open_but_its_turn_completes(
    tmp_path: Path, agent_folder: Path, server_args: list[str]
) -> None:
    """What granian does today (see WRITE_TIMEOUT_DEFECT): the gateway side is sound."""
    with test_streams.held_turn(tmp_path, agent_folder, server_args, write_timeout=1) as turn:
        logged = test_streams.wait_for_done(turn.client, turn.sid)
        assert sum(e["type"] == "text_delta" for e in logged) == 20_000
        turn.raw.pump_for(3)
        stalled = turn.raw.streams[turn.stream]
        assert not stalled.reset and not stalled.ended
        health = turn.raw.request("GET", "/health")
        assert turn.raw.wait_response(health).status == 200
    assert "cut a reader" in turn.gateway.stderr_path.read_text()


def test_rejoin_with_last_event_id_reads_every_event_exactly_once(
    gateway: GatewayProcess, client: httpx.Client, session: dict
) -> None:
    test_streams.test_rejoin_with_last_event_id_reads_every_event_exactly_once(
        gateway, client, session)


def test_body_sent_after_an_early_413_leaves_the_connection_usable(
    gateway: GatewayProcess,
) -> None:
    test_hypercorn_h2.test_body_sent_after_an_early_413_leaves_the_connection_usable(gateway)


def test_unread_body_of_a_401_does_not_kill_other_streams(gateway: GatewayProcess) -> None:
    test_hypercorn_h2.test_unread_body_of_a_401_does_not_kill_other_streams(gateway)


def test_sigterm_runs_the_lifespan_shutdown(gateway: GatewayProcess, client: httpx.Client,
                                            session: dict) -> None:
    """A graceful stop ends the sandboxes and releases the reserved event ids (lifespan)."""
    sid = session["id"]
    before = send_message(client, sid, "before the stop")
    assert bridge_pids(sid)
    assert gateway.stop() == 0
    assert not bridge_pids(sid)
    reopened = GatewayProcess(gateway.data_dir, extra_args=["--server", "granian"]).start()
    try:
        with make_client(reopened) as again:
            assert again.post(f"/api/sessions/{sid}/resume").status_code == 200
            after = send_message(again, sid, "after the stop")
    finally:
        reopened.stop()
    assert after[0].id == before[-1].id + 1


def test_missing_granian_is_a_clear_error(tmp_path: Path) -> None:
    hide = ("import sys; sys.modules['granian'] = None; "
            "from gateway.cli import main; sys.exit(main())")
    result = subprocess.run(
        [sys.executable, "-c", hide, "--server", "granian", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "pip install 'ash-gateway[granian]'" in result.stderr
