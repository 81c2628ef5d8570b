"""The committed generated code matches wire/runner.proto, and it works."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def _load_gen_proto() -> ModuleType:
    """Import scripts/gen_proto.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "gen_proto", REPO_ROOT / "scripts" / "gen_proto.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_proto = _load_gen_proto()


@pytest.fixture(scope="module")
def fresh_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated code, regenerated from wire/runner.proto into a temp dir."""
    out = tmp_path_factory.mktemp("proto")
    gen_proto.generate(out)
    return out


@pytest.mark.parametrize("name", gen_proto.GENERATED)
def test_committed_generated_code_matches_proto(fresh_dir: Path, name: str) -> None:
    committed = REPO_ROOT / name
    assert committed.exists(), f"{name} is missing: run `just proto`"
    fresh = (fresh_dir / name).read_bytes()
    assert committed.read_bytes() == fresh, (
        f"{name} is stale against wire/runner.proto: run `just proto`"
    )


def test_generated_modules_import() -> None:
    from wire import runner_pb2, runner_pb2_grpc

    assert runner_pb2.DESCRIPTOR.package == "ash.runner.v1"
    assert hasattr(runner_pb2_grpc, "RunnerRegistryStub")
    assert hasattr(runner_pb2_grpc, "RunnerServicer")


def test_session_command_round_trips() -> None:
    from wire import runner_pb2

    command = runner_pb2.SessionCommand(
        query=runner_pb2.SessionCommand.Query(
            prompt="hello", options_json=b'{"max_turns":1}', turn_id="t1"
        )
    )
    decoded = runner_pb2.SessionCommand.FromString(command.SerializeToString())
    assert decoded == command
    assert decoded.WhichOneof("command") == "query"
    assert decoded.query.options_json == b'{"max_turns":1}'


def test_event_payload_bytes_round_trip_unchanged() -> None:
    from wire import runner_pb2

    payload = b'{"text":"caf\xc3\xa9\\n"}\x00\xff'
    event = runner_pb2.SessionEvent(type="text_delta", data=payload, seq_hint=7, turn_id="t1")
    decoded = runner_pb2.SessionEvent.FromString(event.SerializeToString())
    assert decoded.data == payload
    assert decoded.seq_hint == 7


def test_create_sandbox_state_presence_round_trips() -> None:
    from wire import runner_pb2

    fresh = runner_pb2.CreateSandboxRequest(session_id="s1", agent_name="a", agent_path="/agents/a")
    restore = runner_pb2.CreateSandboxRequest(session_id="s1", agent_bundle=b"tar", state=b"")
    fresh_decoded = runner_pb2.CreateSandboxRequest.FromString(fresh.SerializeToString())
    restore_decoded = runner_pb2.CreateSandboxRequest.FromString(restore.SerializeToString())
    assert not fresh_decoded.HasField("state")
    assert restore_decoded.HasField("state")
    assert fresh_decoded.WhichOneof("agent_source") == "agent_path"
    assert restore_decoded.WhichOneof("agent_source") == "agent_bundle"
