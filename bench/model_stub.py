"""An Anthropic Messages API stub, so the real Claude Agent SDK and its CLI run offline.

`python -m bench.model_stub --port 0` prints `model-stub listening on http://HOST:PORT`.

It serves `POST /v1/messages` (SSE when the body says `"stream": true`, else one JSON
message) and `POST /v1/messages/count_tokens`, with the event shapes the real API
sends. Replies are derived from the conversation, so a test can tell what was sent:

* a prompt is answered `Turn N. You said: <prompt>. Earlier you said: <p1> | <p2>.`,
  where N counts the user's prompts in the request (turn 1 sent back in turn 2 shows);
* `WRITE_FILE <path> <content>` in the prompt is answered with a `Write` tool call and
  `RUN_BASH <command>` with a `Bash` tool call (when the request offers that tool); once
  the tool result comes back, a final text quotes it;
* `THINK` in the prompt puts a thinking block before the text.

Control endpoints, all JSON:

* `GET` / `DELETE /_stub/requests` — every request received: path, headers, body, timings;
* `GET` / `PUT /_stub/pacing` — `{"first_token_delay_ms", "token_interval_ms"}`;
* `POST` / `DELETE /_stub/failures` — queue a failure for the next Messages requests:
  `{"kind": "status", "status": 500}`, `{"kind": "drop", "after_tokens": 1}` (connection
  closed mid-stream), `{"kind": "slow_first_byte", "delay_ms": 5000}`,
  `{"kind": "error_event", "after_tokens": 1}`; `"times"` is how many requests it hits
  (default 1, 0 = until cleared).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

SYSTEM_REMINDER = "<system-reminder>"
INTERRUPT_MARK = "[Request interrupted"
SIGNATURE = "stub-signature"
TOOL_RESULT_QUOTE = 200
FAILURE_KINDS = frozenset({"status", "drop", "slow_first_byte", "error_event"})
LISTENING = "model-stub listening on "
_WORD = re.compile(r"\s*\S+\s*")
_WRITE_FILE = re.compile(r"WRITE_FILE\s+(\S+)\s+(.+)")
_RUN_BASH = re.compile(r"RUN_BASH\s+(.+)")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# --- what to answer -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Thinking:
    thinking: str
    signature: str = SIGNATURE


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


Block = Text | Thinking | ToolUse


@dataclass(frozen=True, slots=True)
class Reply:
    blocks: tuple[Block, ...]
    stop_reason: str


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        return []
    return [b["text"] for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)]


def user_prompts(messages: list[Any]) -> list[str]:
    """The user's prompts, oldest first: user text that is not a reminder the CLI added."""
    prompts = []
    for message in messages:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        for text in _texts(message.get("content")):
            text = text.strip()
            if text and not text.startswith((SYSTEM_REMINDER, INTERRUPT_MARK)):
                prompts.append(text)
    return prompts


def _tool_names(messages: list[Any]) -> dict[str, str]:
    names = {}
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                names[str(block.get("id"))] = str(block.get("name"))
    return names


def tool_results(messages: list[Any]) -> list[tuple[str, str]]:
    """(tool name, result text) for each tool result in the last message, if it is the user's."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return []
    content = messages[-1].get("content")
    names = _tool_names(messages)
    results = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            raw = block.get("content")
            text = raw if isinstance(raw, str) else " ".join(_texts(raw))
            results.append((names.get(str(block.get("tool_use_id")), "tool"), text.strip()))
    return results


def compose_text(prompts: list[str]) -> str:
    if not prompts:
        return "Turn 0. Nothing was said."
    turn, prompt, earlier = len(prompts), prompts[-1], prompts[:-1]
    if not earlier:
        return f"Turn {turn}. You said: {prompt}. This is the start of our conversation."
    return f"Turn {turn}. You said: {prompt}. Earlier you said: {' | '.join(earlier)}."


def _tool_call(prompt: str, offered: set[str], turn: int) -> ToolUse | None:
    write = _WRITE_FILE.search(prompt)
    if write and "Write" in offered:
        return ToolUse(f"toolu_stub_{turn:04d}", "Write",
                       {"file_path": write.group(1), "content": write.group(2)})
    bash = _RUN_BASH.search(prompt)
    if bash and "Bash" in offered:
        return ToolUse(f"toolu_stub_{turn:04d}", "Bash",
                       {"command": bash.group(1), "description": "Run the requested command"})
    return None


def plan_reply(body: Mapping[str, Any]) -> Reply:
    """The deterministic answer to a Messages request."""
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    prompts = user_prompts(messages)
    turn = len(prompts)
    results = tool_results(messages)
    if results:
        quoted = "; ".join(f"{name} returned: {text[:TOOL_RESULT_QUOTE]}" for name, text in results)
        return Reply((Text(f"Turn {turn}. {quoted}"),), "end_turn")
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    offered = {t.get("name") for t in tools if isinstance(t, dict)}
    prompt = prompts[-1] if prompts else ""
    call = _tool_call(prompt, offered, turn)
    if call is not None:
        return Reply((Text(f"Using {call.name}."), call), "tool_use")
    blocks: list[Block] = []
    if "THINK" in prompt:
        blocks.append(Thinking(f"Thinking about turn {turn}: {prompt}"))
    blocks.append(Text(compose_text(prompts)))
    return Reply(tuple(blocks), "end_turn")


# --- how to say it --------------------------------------------------------------------


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def words(text: str) -> list[str]:
    return _WORD.findall(text) or [text]


def _json_pieces(value: dict[str, Any]) -> list[str]:
    text = orjson.dumps(value).decode()
    third = max(1, len(text) // 3)
    return [text[i:i + third] for i in range(0, len(text), third)]


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": output_tokens}


@dataclass(frozen=True, slots=True)
class Frame:
    data: bytes
    token: bool
    """A content delta: pacing applies before it, and failures count it."""


def stream_frames(reply: Reply, message_id: str, model: str, input_tokens: int) -> Iterator[Frame]:
    """The SSE events of `reply`, in the order the real API sends them."""
    yield Frame(sse("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": _usage(input_tokens, 1)}}), False)
    output_tokens = 0
    for index, block in enumerate(reply.blocks):
        deltas: list[dict[str, Any]]
        if isinstance(block, Text):
            start: dict[str, Any] = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": w} for w in words(block.text)]
        elif isinstance(block, Thinking):
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": w} for w in words(block.thinking)]
            deltas.append({"type": "signature_delta", "signature": block.signature})
        else:
            start = {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p}
                      for p in _json_pieces(block.input)]
        yield Frame(sse("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": start}), False)
        if index == 0:
            yield Frame(sse("ping", {"type": "ping"}), False)
        for delta in deltas:
            output_tokens += 1
            yield Frame(sse("content_block_delta", {"type": "content_block_delta",
                                                    "index": index, "delta": delta}), True)
        yield Frame(sse("content_block_stop", {"type": "content_block_stop", "index": index}),
                    False)
    yield Frame(sse("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens}}), False)
    yield Frame(sse("message_stop", {"type": "message_stop"}), False)


def message_json(reply: Reply, message_id: str, model: str, input_tokens: int) -> dict[str, Any]:
    """The non-streaming response: the whole message at once."""
    content: list[dict[str, Any]] = []
    output_tokens = 0
    for block in reply.blocks:
        if isinstance(block, Text):
            content.append({"type": "text", "text": block.text})
            output_tokens += len(words(block.text))
        elif isinstance(block, Thinking):
            content.append({"type": "thinking", "thinking": block.thinking,
                            "signature": block.signature})
            output_tokens += len(words(block.thinking))
        else:
            content.append({"type": "tool_use", "id": block.id, "name": block.name,
                            "input": block.input})
            output_tokens += 1
    return {"id": message_id, "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": reply.stop_reason, "stop_sequence": None,
            "usage": _usage(input_tokens, output_tokens)}


def error_json(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _error_kind(status: int) -> str:
    return {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")


# --- state: pacing, failures, the record ----------------------------------------------


@dataclass(slots=True)
class Pacing:
    first_token_delay_ms: float = 0.0
    token_interval_ms: float = 0.0


@dataclass(slots=True)
class Failure:
    kind: str
    status: int = 500
    after_tokens: int = 1
    delay_ms: float = 0.0
    times: int = 1
    """How many Messages requests it hits; 0 = every one until cleared."""


@dataclass(slots=True)
class RecordedRequest:
    id: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float
    """time.time() when the body was read; the other times are on the same clock."""
    first_token_at: float | None = None
    finished_at: float | None = None
    failure: str | None = None
    disconnected: bool = False
    """The client went away before the response was complete."""
    usage: dict[str, int] | None = None
    """The usage the response reported (its final figures), once it was sent whole."""


class BadRequest(ValueError):
    pass


def _number(value: Any, name: str, *, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest(f"{name} must be a non-negative number")
    return int(value) if integer else float(value)


def parse_pacing(raw: Any, current: Pacing) -> Pacing:
    if not isinstance(raw, dict):
        raise BadRequest("pacing must be an object")
    pacing = Pacing(current.first_token_delay_ms, current.token_interval_ms)
    for name in ("first_token_delay_ms", "token_interval_ms"):
        if name in raw:
            setattr(pacing, name, _number(raw[name], name))
    return pacing


def parse_failure(raw: Any) -> Failure:
    if not isinstance(raw, dict) or raw.get("kind") not in FAILURE_KINDS:
        raise BadRequest(f"a failure needs a kind, one of {sorted(FAILURE_KINDS)}")
    failure = Failure(raw["kind"])
    for name, integer in (("status", True), ("after_tokens", True), ("delay_ms", False),
                          ("times", True)):
        if name in raw:
            setattr(failure, name, _number(raw[name], name, integer=integer))
    if not 400 <= failure.status <= 599:
        raise BadRequest("status must be an HTTP error status")
    return failure


# --- the ASGI app ---------------------------------------------------------------------


class ModelStub:
    """The raw ASGI application: Messages API, count_tokens and the control endpoints."""

    def __init__(self, pacing: Pacing | None = None) -> None:
        self.pacing = pacing or Pacing()
        self.requests: list[RecordedRequest] = []
        self.failures: list[Failure] = []
        self._ids = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        path, method = scope["path"], scope["method"]
        if path.startswith("/_stub/"):
            await self._control(method, path, body, send)
            return
        record = RecordedRequest(
            id=next(self._ids), method=method, path=path,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            body=_decode(body), received_at=time.time())
        self.requests.append(record)
        if method != "POST" or path not in ("/v1/messages", "/v1/messages/count_tokens"):
            await _json(send, 404, error_json("not_found_error", f"no route {method} {path}"))
        elif not isinstance(record.body, dict):
            await _json(send, 400, error_json("invalid_request_error", "body must be JSON"))
        elif path == "/v1/messages/count_tokens":
            await _json(send, 200, {"input_tokens": _input_tokens(body)})
        else:
            disconnected = asyncio.Event()
            watcher = asyncio.create_task(_watch_disconnect(receive, disconnected))
            try:
                await self._messages(record, len(body), send, disconnected)
            finally:
                watcher.cancel()
                record.disconnected = disconnected.is_set()
        record.finished_at = time.time()

    def _next_failure(self) -> Failure | None:
        if not self.failures:
            return None
        failure = self.failures[0]
        if failure.times:
            failure.times -= 1
            if failure.times == 0:
                self.failures.pop(0)
        return failure

    async def _messages(self, record: RecordedRequest, size: int, send: Send,
                        disconnected: asyncio.Event) -> None:
        body = record.body
        failure = self._next_failure()
        record.failure = failure.kind if failure else None
        if failure and failure.kind == "slow_first_byte":
            if await _sleep(failure.delay_ms, disconnected):
                return
        if failure and failure.kind == "status":
            await _json(send, failure.status,
                        error_json(_error_kind(failure.status), "stub: injected failure"))
            return
        reply = plan_reply(body)
        message_id = f"msg_stub_{record.id:06d}"
        model = str(body.get("model") or "claude-stub")
        input_tokens = max(1, size // 4)
        pacing = Pacing(self.pacing.first_token_delay_ms, self.pacing.token_interval_ms)
        if not body.get("stream"):
            if await _sleep(pacing.first_token_delay_ms, disconnected):
                return
            record.first_token_at = time.time()
            payload = message_json(reply, message_id, model, input_tokens)
            if failure and failure.kind == "drop":
                await _start_json(send, 200, orjson.dumps(payload))
                return  # headers promise a body that never comes: the connection drops
            await _json(send, 200, payload)
            record.usage = payload["usage"]
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"request-id", f"req_stub_{record.id:06d}".encode())]})
        tokens = 0
        for frame in stream_frames(reply, message_id, model, input_tokens):
            if frame.token:
                if failure and tokens == failure.after_tokens:
                    if failure.kind == "drop":
                        return  # no closing chunk: the server drops the connection
                    if failure.kind == "error_event":
                        await _chunk(send, sse("error", error_json("overloaded_error",
                                                                   "stub: injected error")))
                        break
                delay = pacing.first_token_delay_ms if tokens == 0 else pacing.token_interval_ms
                if await _sleep(delay, disconnected):
                    return
                tokens += 1
                if record.first_token_at is None:
                    record.first_token_at = time.time()
            await _chunk(send, frame.data)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        record.usage = _usage(input_tokens, tokens)

    async def _control(self, method: str, path: str, body: bytes, send: Send) -> None:
        try:
            raw = orjson.loads(body) if body else None
            if path == "/_stub/requests" and method == "GET":
                await _json(send, 200, {"requests": [asdict(r) for r in self.requests]})
            elif path == "/_stub/requests" and method == "DELETE":
                self.requests.clear()
                await _json(send, 200, {"cleared": True})
            elif path == "/_stub/pacing" and method == "GET":
                await _json(send, 200, asdict(self.pacing))
            elif path == "/_stub/pacing" and method in ("PUT", "POST"):
                self.pacing = parse_pacing(raw, self.pacing)
                await _json(send, 200, asdict(self.pacing))
            elif path == "/_stub/failures" and method == "GET":
                await _json(send, 200, {"failures": [asdict(f) for f in self.failures]})
            elif path == "/_stub/failures" and method == "POST":
                self.failures.append(parse_failure(raw))
                await _json(send, 201, {"failures": [asdict(f) for f in self.failures]})
            elif path == "/_stub/failures" and method == "DELETE":
                self.failures.clear()
                await _json(send, 200, {"failures": []})
            elif path == "/_stub/health":
                await _json(send, 200, {"ok": True})
            else:
                await _json(send, 404, {"error": f"no control route {method} {path}"})
        except (BadRequest, orjson.JSONDecodeError) as exc:
            await _json(send, 400, {"error": str(exc)})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _watch_disconnect(receive: Receive, disconnected: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.set()


async def _sleep(ms: float, disconnected: asyncio.Event) -> bool:
    """Wait `ms` unless the client leaves first; True when it left."""
    if ms > 0:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ms / 1000):
                await disconnected.wait()
    return disconnected.is_set()


def _decode(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")


def _input_tokens(body: bytes) -> int:
    return max(1, len(body) // 4)


async def _chunk(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _start_json(send: Send, status: int, data: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})


async def _json(send: Send, status: int, payload: Any) -> None:
    data = orjson.dumps(payload)
    await _start_json(send, status, data)
    await send({"type": "http.response.body", "body": data})


# --- running it -----------------------------------------------------------------------


def env_ms(name: str, environ: Mapping[str, str] = os.environ) -> float:
    raw = environ.get(name) or "0"
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise SystemExit(f"{name} must be a number of milliseconds, not {raw!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.model_stub",
                                     description="Anthropic Messages API stub.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    parser.add_argument("--first-token-ms", type=float,
                        default=env_ms("ASH_STUB_FIRST_TOKEN_MS"),
                        help="delay before the first content delta (env ASH_STUB_FIRST_TOKEN_MS)")
    parser.add_argument("--token-interval-ms", type=float,
                        default=env_ms("ASH_STUB_TOKEN_INTERVAL_MS"),
                        help="delay between content deltas (env ASH_STUB_TOKEN_INTERVAL_MS)")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    import hypercorn.asyncio
    from hypercorn.config import Config

    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    sock.set_inheritable(True)
    host, port = sock.getsockname()[:2]
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.accesslog = None
    config.errorlog = "-"
    config.keep_alive_timeout = 300
    config.graceful_timeout = 1
    stub = ModelStub(Pacing(args.first_token_ms, args.token_interval_ms))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"{LISTENING}http://{shown}:{port}", flush=True)
    await hypercorn.asyncio.serve(stub, config, shutdown_trigger=stop.wait)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


# --- driving it from tests and benchmarks ---------------------------------------------


@dataclass
class StubProcess:
    """`python -m bench.model_stub` as a child process, with a client for its control API."""

    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    process: subprocess.Popen[str] | None = None
    url: str = ""

    def start(self, timeout: float = 20.0) -> StubProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.model_stub", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env)
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"model stub exited {self.process.wait(5)}")
            if line.startswith(LISTENING):
                self.url = line[len(LISTENING):].strip()
                return self
        raise RuntimeError(f"model stub did not start in {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> StubProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else orjson.dumps(payload)
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return orjson.loads(response.read())

    def requests(self, path: str | None = "/v1/messages") -> list[dict[str, Any]]:
        """The recorded requests to `path` (None: all), oldest first."""
        recorded = self.call("GET", "/_stub/requests")["requests"]
        return [r for r in recorded if path is None or r["path"] == path]

    def clear_requests(self) -> None:
        self.call("DELETE", "/_stub/requests")

    def set_pacing(self, **pacing: float) -> dict[str, Any]:
        return self.call("PUT", "/_stub/pacing", pacing)

    def inject(self, kind: str, **fields: Any) -> None:
        self.call("POST", "/_stub/failures", {"kind": kind, **fields})

    def clear_failures(self) -> None:
        self.call("DELETE", "/_stub/failures")


if __name__ == "__main__":
    sys.exit(main())
