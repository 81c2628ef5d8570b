"""Both gRPC ports against a peer that is not the deployment: real `ash-gateway
--mode coordinator` and `ash-runner` processes, a raw grpc.aio client on loopback.

A call without the secret is refused before its body is read (the server's peak
memory does not move by the message), and an authenticated message over the
listener's receive limit fails with RESOURCE_EXHAUSTED. Both listeners run with a
256 MiB limit here (the gateway's by flag, the runner's by environment), so a
200 MiB message is one the server would take from an authenticated peer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from runner.grpc_transport import (
    AGENT_BUNDLE_ALLOWANCE,
    MAX_MESSAGE_BYTES,
    MESSAGE_MARGIN,
    REGISTRY_MAX_MESSAGE_BYTES,
    MiB,
    runner_max_message_bytes,
)
from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.split_cluster import SECRET, Cluster
from wire import runner_pb2 as pb
from wire.internal_auth import call_metadata

LIMIT = 256 * MiB
UNDER_LIMIT = 200 * MiB
OVER_LIMIT = 300 * MiB
RSS_BOUND = 50 * MiB
"""Most the server's peak resident memory may grow by one refused call."""
CALL_BOUND = 30.0
"""Seconds a refused call may take at most (it is refused at once, the rest is loopback)."""


@dataclass(frozen=True)
class Memory:
    rss: int
    peak: int


def memory(pid: int) -> Memory:
    """VmRSS and VmHWM (peak resident) of a process, bytes."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) * 1024
    return Memory(rss=fields["VmRSS"], peak=fields["VmHWM"])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("grpc-limits")
    with Cluster(root, gateway_args=["--grpc-max-message-bytes", str(LIMIT)]).start() as cluster:
        cluster.add_runners("r1", extra_env={"ASH_GRPC_MAX_MESSAGE_BYTES": str(LIMIT)})
        yield cluster


async def raw_call(address: str, method: str, payload: bytes,
                   secret: str | None = None) -> tuple[grpc.StatusCode, float]:
    """Send `payload` as the one request message of `method`; the status and seconds taken.

    Sent as a unary call whatever the method's shape: on the wire a stream of one
    message is the same, and grpc.aio reports a unary call's status faithfully (a
    stream whose write the server cut short reports a local INTERNAL instead)."""
    metadata = call_metadata(secret) if secret else None
    options = [("grpc.max_send_message_length", -1)]
    started = time.monotonic()
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        try:
            await channel.unary_unary(method)(payload, metadata=metadata, timeout=CALL_BOUND)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
    return code, time.monotonic() - started


def big_create(size: int) -> bytes:
    return pb.CreateSandboxRequest(session_id="attack", agent_name="a",
                                   agent_bundle=b"x" * size).SerializeToString()


def big_register(size: int) -> bytes:
    return pb.RegisterRequest(runner_id="attacker", host="127.0.0.1", port=1,
                              labels={"pad": "x" * size}).SerializeToString()


async def attack(pid: int, address: str, method: str, payload: bytes, *,
                 secret: str | None = None) -> grpc.StatusCode:
    before = memory(pid)
    code, seconds = await raw_call(address, method, payload, secret)
    after = memory(pid)
    print(f"\n{method} {len(payload) // MiB} MiB, secret={'yes' if secret else 'no'}: "
          f"{code.name} in {seconds:.2f} s; server RSS {before.rss // MiB} -> "
          f"{after.rss // MiB} MiB, peak {before.peak // MiB} -> {after.peak // MiB} MiB")
    assert after.peak - before.peak < RSS_BOUND
    return code


def runner_pid(cluster: Cluster) -> int:
    process = cluster.runners["r1"].process
    assert process is not None
    return process.pid


def gateway_pid(cluster: Cluster) -> int:
    assert cluster.gateway.process is not None
    return cluster.gateway.process.pid


async def test_runner_refuses_a_unary_call_without_the_secret_before_reading_it(
    cluster: Cluster,
) -> None:
    code = await attack(runner_pid(cluster), cluster.runners["r1"].address,
                        "/ash.runner.v1.Runner/CreateSandbox", big_create(UNDER_LIMIT))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_runner_refuses_a_stream_without_the_secret_before_reading_it(
    cluster: Cluster,
) -> None:
    payload = pb.SessionCommand(query=pb.SessionCommand.Query(
        prompt="x" * UNDER_LIMIT)).SerializeToString()
    code = await attack(runner_pid(cluster), cluster.runners["r1"].address,
                        "/ash.runner.v1.Runner/Session", payload)
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_coordinator_refuses_a_unary_call_without_the_secret_before_reading_it(
    cluster: Cluster,
) -> None:
    code = await attack(gateway_pid(cluster), cluster.grpc_address,
                        "/ash.runner.v1.RunnerRegistry/Register", big_register(UNDER_LIMIT))
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_coordinator_refuses_a_stream_without_the_secret_before_reading_it(
    cluster: Cluster,
) -> None:
    payload = pb.HeartbeatRequest(runner_id="x" * UNDER_LIMIT).SerializeToString()
    code = await attack(gateway_pid(cluster), cluster.grpc_address,
                        "/ash.runner.v1.RunnerRegistry/Heartbeat", payload)
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_runner_refuses_an_oversized_call_without_the_secret(cluster: Cluster) -> None:
    """The issue's attack: a message bigger than any limit, no secret."""
    code = await attack(runner_pid(cluster), cluster.runners["r1"].address,
                        "/ash.runner.v1.Runner/CreateSandbox", big_create(OVER_LIMIT))
    assert code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.RESOURCE_EXHAUSTED)


async def test_runner_fails_an_authenticated_message_over_its_limit(cluster: Cluster) -> None:
    code = await attack(runner_pid(cluster), cluster.runners["r1"].address,
                        "/ash.runner.v1.Runner/CreateSandbox", big_create(OVER_LIMIT),
                        secret=SECRET)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_coordinator_fails_an_authenticated_message_over_its_limit(
    cluster: Cluster,
) -> None:
    code = await attack(gateway_pid(cluster), cluster.grpc_address,
                        "/ash.runner.v1.RunnerRegistry/Register", big_register(OVER_LIMIT),
                        secret=SECRET)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_sessions_still_work_through_the_limited_ports(cluster: Cluster,
                                                      tmp_path: Path) -> None:
    with cluster.client() as client:
        deploy(client, "echo", make_agent_folder(tmp_path))
        session_id = create_session(client, "echo")["id"]
        events = send_message(client, session_id, "hello")
        assert events[-1].event == "done"


def test_runner_limit_fits_a_restored_state_beside_its_agent_bundle() -> None:
    assert runner_max_message_bytes() == 64 * MiB + AGENT_BUNDLE_ALLOWANCE + MESSAGE_MARGIN
    assert runner_max_message_bytes(1) == MAX_MESSAGE_BYTES
    assert REGISTRY_MAX_MESSAGE_BYTES < runner_max_message_bytes()
