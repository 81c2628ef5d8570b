"""The runner's turn relay: numbering, acknowledgement, and a turn that outlives its stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from runner import turn_relay
from runner.turn_relay import TurnRelay
from wire import runner_pb2 as pb


class Stream:
    """A stand-in for the gateway's end of a Session stream (unit test only)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, int]] = []
        self.broken = False

    async def write(self, message: pb.SessionEvent) -> None:
        if self.broken:
            raise asyncio.InvalidStateError("stream is over")
        await asyncio.sleep(0)
        hint = message.seq_hint
        self.received.append((message.type or "state", hint))
        for offset, more in enumerate(message.more, start=1):
            self.received.append((more.type, hint + offset))

    def events(self) -> list[tuple[str, int]]:
        return [r for r in self.received if r[0] != "state"]


class Gate:
    """Holds a turn halfway through until opened."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()


async def turn(count: int, pulled: list[int] | None = None,
               gate: Gate | None = None) -> AsyncIterator[pb.SessionEvent]:
    for index in range(count):
        if gate is not None and index == count // 2:
            gate.reached.set()
            await gate.opened.wait()
        if pulled is not None:
            pulled.append(index)
        yield pb.SessionEvent(type="text_delta", data=b'{"text":"x"}')
    yield pb.SessionEvent(state=pb.StateChunk(data=b"tar", last=True))
    yield pb.SessionEvent(type="done", data=b'{"status":"ok"}')


async def no_interrupt() -> None:
    return None


async def test_events_are_numbered_consecutively_across_turns() -> None:
    relay, stream = TurnRelay("s", no_interrupt), Stream()
    await relay.attach(stream.write, 0)
    await relay.start(turn(3))
    await relay.start(turn(2))
    hints = [hint for _, hint in stream.events()]
    assert hints == list(range(1, 8))


async def test_acknowledged_events_are_forgotten() -> None:
    relay, stream = TurnRelay("s", no_interrupt), Stream()
    await relay.attach(stream.write, 0)
    await relay.start(turn(3))
    assert relay.unfinished
    relay.ack(3)
    assert relay.unfinished, "the state chunk and done are not acknowledged yet"
    relay.ack(4)
    assert not relay.unfinished


async def test_a_turn_goes_on_when_its_stream_breaks_and_the_next_stream_gets_the_rest() -> None:
    relay, first = TurnRelay("s", no_interrupt), Stream()
    gate = Gate()
    await relay.attach(first.write, 0)
    pump = relay.start(turn(10, gate=gate))
    await gate.reached.wait()
    first.broken = True
    gate.opened.set()
    await pump
    assert relay.unfinished and relay.pending_turns(3) == 1

    second = Stream()
    await relay.attach(second.write, 3)
    assert second.received[0] == ("text_delta", 4)
    assert [h for _, h in second.events()] == list(range(4, 12))
    assert second.received[-2:] == [("state", 0), ("done", 11)], \
        "the state chunk comes again, before its done"


async def test_a_detached_turn_stops_pulling_at_the_cap_until_a_stream_attaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(turn_relay, "DETACHED_MAX_EVENTS", 4)
    relay, stream = TurnRelay("s", no_interrupt), Stream()
    pulled: list[int] = []
    pump = relay.start(turn(50, pulled))
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(pulled) == 4
    assert relay.running

    await relay.attach(stream.write, 0)
    await pump
    assert len(pulled) == 50
    assert [h for _, h in stream.events()] == list(range(1, 52))


async def test_a_turn_nobody_takes_over_is_interrupted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turn_relay, "DETACHED_TIMEOUT", 0.01)
    interrupted = asyncio.Event()

    async def interrupt() -> None:
        interrupted.set()

    relay, stream = TurnRelay("s", interrupt), Stream()
    gate = Gate()
    await relay.attach(stream.write, 0)
    pump = relay.start(turn(10, gate=gate))
    await gate.reached.wait()
    relay.detach(stream.write)
    await asyncio.wait_for(interrupted.wait(), 5)
    gate.opened.set()
    await pump


async def test_close_stops_the_turn_and_forgets_the_tail() -> None:
    relay = TurnRelay("s", no_interrupt)
    gate = Gate()
    relay.start(turn(10, gate=gate))
    await gate.reached.wait()
    await relay.close()
    assert not relay.unfinished



async def test_every_turns_first_event_is_written_by_the_turn_itself_not_a_writer_task() -> None:
    relay = TurnRelay("s", no_interrupt)
    writers: dict[int, asyncio.Task[object] | None] = {}

    async def write(message: pb.SessionEvent) -> None:
        writers.setdefault(message.seq_hint, asyncio.current_task())
        await asyncio.sleep(0)

    await relay.attach(write, 0)
    first_turn = relay.start(turn(3))
    await first_turn
    second_turn = relay.start(turn(3))
    await second_turn
    assert writers[1] is first_turn
    assert writers[5] is second_turn, "the second turn's first event waited for a writer task"


async def test_a_burst_of_large_events_is_coalesced_into_messages_of_bounded_size() -> None:
    written: list[pb.SessionEvent] = []
    release = asyncio.Event()

    async def slow_write(message: pb.SessionEvent) -> None:
        written.append(message)
        await release.wait()

    writer = turn_relay.CoalescingWriter(slow_write)
    payload = b'"' + b"x" * (400 * 1024) + b'"'
    puts = asyncio.gather(*(
        writer.put(pb.SessionEvent(type="text_delta", data=payload, seq_hint=hint))
        for hint in range(1, 21)))
    await asyncio.sleep(0)
    release.set()
    await puts
    await writer.flush()

    beyond_first = [sum(len(more.data) for more in message.more) for message in written]
    assert max(beyond_first) <= turn_relay.MAX_COALESCED_BYTES
    hints = [hint for message in written
             for hint in range(message.seq_hint, message.seq_hint + 1 + len(message.more))]
    assert hints == list(range(1, 21))
