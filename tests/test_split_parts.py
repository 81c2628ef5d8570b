"""The split's building blocks on their own: state store, secret check, state chunks,
reconnect backoff, addresses, the runner's agent cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.state_store import StateStore
from runner.agent_cache import AgentCache
from runner.grpc_server import STATE_CHUNK_BYTES, state_chunks
from runner.grpc_transport import join_address, split_address
from runner.registration import Backoff
from runner.turn_relay import MAX_COALESCED, CoalescingWriter
from runner.workspace_state import pack_workspace
from wire import runner_pb2 as pb
from wire.internal_auth import METADATA_KEY, SecretCheck


async def test_state_store_replaces_a_session_state_whole(tmp_path: Path) -> None:
    for fsync in (False, True):
        store = StateStore(tmp_path / f"state-{fsync}", fsync=fsync)
        assert await store.load("s1") is None
        await store.save("s1", b"first")
        await store.save("s1", b"second")
        assert await store.load("s1") == b"second"
        assert [p.name for p in store.path("s1").iterdir()] == ["2"]
        assert await StateStore(tmp_path / f"state-{fsync}").load("s1") == b"second"
        store.delete("s1")
        assert await store.load("s1") is None


async def test_state_store_ignores_a_save_cut_short(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    await store.save("s1", b"complete")
    (store.path("s1") / ".2.partial").write_bytes(b"half of a st")
    assert store.read("s1") == b"complete"


def test_state_store_refuses_a_session_id_that_is_a_path(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    for bad in ("../ash.db", "a/b", ""):
        with pytest.raises(ValueError):
            store.path(bad)


def test_secret_check_admits_only_the_exact_secret() -> None:
    check = SecretCheck("s3cret")
    assert check.allows(((METADATA_KEY, "s3cret"),))
    assert not check.allows(((METADATA_KEY, "s3cret!"),))
    assert not check.allows((("authorization", "s3cret"),))
    assert not check.allows(None)
    with pytest.raises(ValueError):
        SecretCheck("")


def test_state_chunks_carry_the_state_in_order_and_mark_the_last() -> None:
    state = bytes(range(256)) * (STATE_CHUNK_BYTES // 128 + 3)
    chunks = state_chunks(state)
    assert len(chunks) == 3
    assert b"".join(c.data for c in chunks) == state
    assert [c.last for c in chunks] == [False, False, True]
    assert [(c.data, c.last) for c in state_chunks(b"")] == [(b"", True)]


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_reset() -> None:
    backoff = Backoff(initial=0.1, cap=1.0)
    delays = [backoff.next() for _ in range(6)]
    assert 0.08 <= delays[0] <= 0.12
    assert all(d <= 1.2 for d in delays) and delays[-1] >= 0.8
    backoff.reset()
    assert backoff.next() <= 0.12


def test_addresses_split_and_join() -> None:
    assert split_address("127.0.0.1:4101") == ("127.0.0.1", 4101)
    assert split_address("[::1]:0") == ("::1", 0)
    assert split_address("runner-3", default_port=4200) == ("runner-3", 4200)
    assert join_address("::1", 5) == "[::1]:5"
    for bad in ("no-port", "host:port", ":80", "host:99999"):
        with pytest.raises(ValueError):
            split_address(bad)


async def test_agent_cache_unpacks_each_content_once(tmp_path: Path) -> None:
    source = tmp_path / "agent"
    source.mkdir()
    (source / "CLAUDE.md").write_text("# v1\n")
    cache = AgentCache(tmp_path / "cache")
    bundle = pack_workspace(source)
    first = await cache.folder("echo", "1", bundle)
    again = await cache.folder("echo", "1", bundle)
    (source / "CLAUDE.md").write_text("# v2\n")
    changed = await cache.folder("echo", "1", pack_workspace(source))
    assert first == again != changed
    assert (first / "CLAUDE.md").read_text() == "# v1\n"
    assert (changed / "CLAUDE.md").read_text() == "# v2\n"


async def test_coalescing_writer_sends_at_once_then_the_burst_behind_it_together() -> None:
    written: list[list[str]] = []
    release = asyncio.Event()

    async def write(message: pb.SessionEvent) -> None:
        written.append([message.type, *(more.type for more in message.more)])
        await release.wait()

    writer = CoalescingWriter(write)
    await writer.put(pb.SessionEvent(type="e0"))
    await asyncio.sleep(0)
    assert written == [["e0"]]
    for index in range(1, 5):
        await writer.put(pb.SessionEvent(type=f"e{index}"))
    assert written == [["e0"]]
    release.set()
    await writer.flush()
    assert written == [["e0"], ["e1", "e2", "e3", "e4"]]


async def test_coalescing_writer_holds_the_producer_at_its_bound() -> None:
    sizes: list[int] = []
    release = asyncio.Event()

    async def write(message: pb.SessionEvent) -> None:
        sizes.append(1 + len(message.more))
        await release.wait()

    writer = CoalescingWriter(write)

    async def produce() -> None:
        for index in range(2 * MAX_COALESCED):
            await writer.put(pb.SessionEvent(type=f"e{index}"))

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.01)
    assert not producer.done()
    release.set()
    await producer
    await writer.flush()
    assert sum(sizes) == 2 * MAX_COALESCED
    assert max(sizes) <= MAX_COALESCED
