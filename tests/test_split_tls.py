"""The gRPC listeners of both sides can serve TLS; each side verifies the other's
certificate against the CA it is given."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme

from tests.conftest import create_session, deploy, make_agent_folder, send_message
from tests.split_cluster import Cluster
from tests.sse_client import reply_text
from wire import runner_pb2 as pb
from wire import runner_pb2_grpc as pb_grpc


def tls_files(root: Path, ca: trustme.CA) -> list[str]:
    """`--grpc-certfile`, `--grpc-keyfile` and `--grpc-cafile` flags with their files."""
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = root / "cert.pem", root / "key.pem", root / "ca.pem"
    certfile.write_bytes(b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return ["--grpc-certfile", str(certfile), "--grpc-keyfile", str(keyfile),
            "--grpc-cafile", str(cafile)]


def test_gateway_and_runner_talk_over_tls_only(tmp_path: Path) -> None:
    ca = trustme.CA()
    (tmp_path / "gateway-tls").mkdir()
    (tmp_path / "runner-tls").mkdir()
    gateway_tls = tls_files(tmp_path / "gateway-tls", ca)
    runner_tls = tls_files(tmp_path / "runner-tls", ca)
    with Cluster(tmp_path, gateway_args=gateway_tls).start() as cluster:
        assert any("Runner registry (gRPC, TLS)" in line for line in cluster.gateway.banner)
        cluster.add_runners("r1", extra_args=runner_tls)
        with cluster.client() as client:
            deploy(client, "echo", make_agent_folder(tmp_path))
            session_id = create_session(client, "echo")["id"]
            assert "over tls" in reply_text(send_message(client, session_id, "over tls"))

        with grpc.insecure_channel(cluster.runners["r1"].address) as plain:
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.RunnerStub(plain).Stats(pb.StatsRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
