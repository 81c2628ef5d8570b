"""`ash-gateway`: the control plane's entry point."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import uvloop

from gateway import agents, coordinator_cli, queue_cli, servers
from gateway.api.metrics import gateway_metrics
from gateway.app import GatewayApp
from gateway.auth import KEY_SECRET_ENV, KeyRing, KeySecretError, load_key_secret
from gateway.context import Gateway
from gateway.coordinator import Coordinator, CoordinatorSettings
from gateway.cors import CorsPolicy
from gateway.credentials import CredentialCipher, CredentialKeyError
from gateway.event_log import EventLog
from gateway.queue import QueueSettings
from gateway.rate_limit import ConfigError, RateLimitSettings
from gateway.servers import ServeOptions, ServerUnavailable
from gateway.sessions import DEFAULT_IDLE_TIMEOUT, SessionService
from gateway.sse_stream import StreamSettings
from gateway.store import Store
from runner.backend import DEFAULT_MAX_SANDBOXES, MAX_SANDBOXES_ENV, Backend
from runner.isolation import (
    DEFAULT_MODE,
    NONE_WARNING,
    SandboxUnavailable,
    add_sandbox_argument,
    create_isolation,
)
from runner.local import LocalBackend
from runner.sandbox import BridgeSettings
from runner.warm_pool import add_warm_pool_argument
from wire.internal_auth import SECRET_ENV

log = logging.getLogger("ash.gateway")

DEMO_AGENT_NAME = "demo"
DEMO_AGENT_DIR = Path(__file__).parent / "demo_agent"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str
    port: int
    data_dir: Path
    api_key: str | None
    certfile: str | None
    keyfile: str | None
    demo: bool
    mode: str
    log_level: str
    stream: StreamSettings = field(default_factory=StreamSettings)
    event_retention_days: float = 7.0
    coordinator: CoordinatorSettings | None = None
    """Set in coordinator mode."""
    sandbox: str = DEFAULT_MODE
    """How standalone mode isolates sandboxes: bwrap, or none (development only)."""
    server: str = servers.DEFAULT_SERVER
    """The HTTP server that runs the app: hypercorn, or granian (see docs/servers.md)."""
    warm_pool: int = 0
    """Standalone mode: sandboxes kept started ahead of their sessions."""
    max_sandboxes: int = DEFAULT_MAX_SANDBOXES
    """Standalone mode: most live sandboxes at once, warm-pool ones included."""
    request_head_timeout: float = servers.REQUEST_HEAD_TIMEOUT
    request_body_timeout: float = servers.REQUEST_BODY_TIMEOUT
    queue: QueueSettings = field(default_factory=QueueSettings)
    key_secret: str | None = None
    """ASH_KEY_SECRET: the HMAC key of stored API keys (else one kept in the data dir)."""
    internal_secret: str | None = None
    """ASH_INTERNAL_SECRET: what runners and the internal routes (/api/internal/) present."""
    credential_cipher: CredentialCipher | None = field(default=None, repr=False)
    """ASH_CREDENTIAL_KEY's (gateway/credentials.py); None: no credentials can be stored."""
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    """Seconds untouched before a session is paused and its sandbox freed; 0: never."""
    rate_limits: RateLimitSettings = field(default_factory=RateLimitSettings)
    """Off unless ASH_RATE_LIMIT* is set (`gateway.rate_limit`)."""
    cors: CorsPolicy = field(default_factory=CorsPolicy)
    """ASH_ALLOWED_ORIGINS (`gateway.cors`)."""


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _idle_timeout_default() -> float:
    if (seconds := os.environ.get("ASH_IDLE_TIMEOUT")):
        return float(seconds)
    if (millis := os.environ.get("ASH_IDLE_TIMEOUT_MS")):
        return float(millis) / 1000
    return DEFAULT_IDLE_TIMEOUT


def parse_args(argv: list[str] | None = None) -> GatewayConfig:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="ash-gateway",
        description="Ash gateway: host AI agents as HTTP/2 SSE APIs. Every flag has an ASH_* "
        "environment equivalent (e.g. --data-dir / ASH_DATA_DIR).",
    )
    parser.add_argument("--host", default=env("ASH_HOST", "127.0.0.1"),
                        help="address to listen on (ASH_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(env("ASH_PORT", "4100")),
                        help="port to listen on, 0 for any free port (ASH_PORT, default 4100)")
    parser.add_argument("--data-dir", type=Path, default=Path(env("ASH_DATA_DIR", "./data")),
                        help="database, agents and session state (ASH_DATA_DIR, default ./data)")
    parser.add_argument("--certfile", default=env("ASH_CERTFILE"),
                        help="TLS certificate (PEM); with --keyfile, serves HTTPS with ALPN h2")
    parser.add_argument("--keyfile", default=env("ASH_KEYFILE"), help="TLS private key (PEM)")
    parser.add_argument("--demo", action="store_true", default=_env_flag("ASH_DEMO"),
                        help="deploy the built-in demo agent (mock backend, no API key needed)")
    parser.add_argument("--mode", choices=["standalone", "coordinator"],
                        default=env("ASH_MODE", "standalone"),
                        help="standalone runs sandboxes in-process (ASH_MODE)")
    parser.add_argument("--write-timeout", type=float,
                        default=float(env("ASH_WRITE_TIMEOUT", "30")),
                        help="cut an SSE client that reads nothing for this many seconds; "
                        "its turn goes on (ASH_WRITE_TIMEOUT, default 30)")
    parser.add_argument("--keepalive-interval", type=float,
                        default=float(env("ASH_KEEPALIVE_INTERVAL", "15")),
                        help="seconds between keep-alive comments on an idle SSE stream "
                        "(ASH_KEEPALIVE_INTERVAL, default 15)")
    parser.add_argument("--request-head-timeout", type=float,
                        default=float(env("ASH_REQUEST_HEAD_TIMEOUT",
                                          str(servers.REQUEST_HEAD_TIMEOUT))),
                        help="seconds an HTTP/1.1 request head may take from its first byte; "
                        "then 408 and the connection closes (ASH_REQUEST_HEAD_TIMEOUT, "
                        f"default {servers.REQUEST_HEAD_TIMEOUT:g})")
    parser.add_argument("--request-body-timeout", type=float,
                        default=float(env("ASH_REQUEST_BODY_TIMEOUT",
                                          str(servers.REQUEST_BODY_TIMEOUT))),
                        help="seconds an HTTP/1.1 request body may pause; then the connection "
                        "closes (ASH_REQUEST_BODY_TIMEOUT, default "
                        f"{servers.REQUEST_BODY_TIMEOUT:g})")
    parser.add_argument("--event-retention-days", type=float,
                        default=float(env("ASH_EVENT_RETENTION_DAYS", "7")),
                        help="keep an ended session's event log this long "
                        "(ASH_EVENT_RETENTION_DAYS, default 7)")
    parser.add_argument("--log-level", default=env("ASH_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--server", choices=servers.SERVERS,
                        default=env("ASH_SERVER", servers.DEFAULT_SERVER),
                        help="HTTP server: hypercorn (default) or granian, experimental "
                        "(needs the granian extra; docs/servers.md) (ASH_SERVER)")
    add_sandbox_argument(parser)
    add_warm_pool_argument(parser)
    parser.add_argument("--idle-timeout", type=float, default=_idle_timeout_default(),
                        help="pause a session untouched for this many seconds and free its "
                        "sandbox, 0 for never (ASH_IDLE_TIMEOUT, or the reference's "
                        f"ASH_IDLE_TIMEOUT_MS; default {DEFAULT_IDLE_TIMEOUT:g})")
    parser.add_argument("--max-sandboxes", type=int,
                        default=int(env(MAX_SANDBOXES_ENV, str(DEFAULT_MAX_SANDBOXES))),
                        help="standalone mode: most live sandboxes at once, warm-pool ones "
                        "included; a session create beyond it frees the least recently used "
                        "idle sandbox, or gets 503 when none is idle "
                        f"({MAX_SANDBOXES_ENV}, default {DEFAULT_MAX_SANDBOXES})")
    coordinator_cli.add_arguments(parser)
    queue_cli.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.max_sandboxes < 1:
        parser.error("--max-sandboxes must be at least 1")
    if not 0 <= args.idle_timeout < float("inf"):
        parser.error("--idle-timeout must be a number of seconds, 0 or more")
    for flag, value in (("--request-head-timeout", args.request_head_timeout),
                        ("--request-body-timeout", args.request_body_timeout)):
        if not 0 < value <= 3600:
            parser.error(f"{flag} must be a number of seconds in (0, 3600]")
    if args.mode != "coordinator":
        try:
            BridgeSettings.from_env()  # ASH_BACKEND, ASH_MOCK_*, ASH_BRIDGE_* limits
        except ValueError as exc:
            parser.error(str(exc))
    try:
        credential_cipher = CredentialCipher.from_env()
    except CredentialKeyError as exc:
        parser.error(str(exc))
    if bool(args.certfile) != bool(args.keyfile):
        parser.error("--certfile and --keyfile go together")
    if args.server not in servers.SERVERS:  # argparse does not check a default (ASH_SERVER)
        parser.error(f"--server must be one of {', '.join(servers.SERVERS)}")
    if (reason := servers.missing(args.server)) is not None:
        parser.error(reason)
    try:
        rate_limits = RateLimitSettings.from_env()
    except ConfigError as exc:
        parser.error(str(exc))
    return GatewayConfig(
        host=args.host, port=args.port, data_dir=args.data_dir.resolve(),
        api_key=env("ASH_API_KEY") or None, certfile=args.certfile, keyfile=args.keyfile,
        demo=args.demo, mode=args.mode, log_level=args.log_level,
        stream=StreamSettings(write_timeout=args.write_timeout,
                              keepalive_interval=args.keepalive_interval),
        event_retention_days=args.event_retention_days,
        coordinator=coordinator_cli.settings_from_args(args, parser)
        if args.mode == "coordinator" else None,
        sandbox=args.sandbox, server=args.server,
        warm_pool=args.warm_pool, max_sandboxes=args.max_sandboxes,
        request_head_timeout=args.request_head_timeout,
        request_body_timeout=args.request_body_timeout,
        queue=queue_cli.settings_from_args(args, parser),
        key_secret=env(KEY_SECRET_ENV) or None, internal_secret=env(SECRET_ENV) or None,
        credential_cipher=credential_cipher,
        idle_timeout=args.idle_timeout, rate_limits=rate_limits, cors=CorsPolicy.from_env(),
    )


INITIAL_API_KEY_FILE = "initial-api-key"


def write_initial_api_key(data_dir: Path, key: str) -> None:
    """Keep the key generated at first start in the data dir (mode 0600), as the reference
    does, so a launcher (`ash start`) reads it without scraping the banner."""
    path = data_dir / INITIAL_API_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    path.chmod(0o600)


def build_gateway(config: GatewayConfig) -> tuple[Gateway, KeyRing, str | None]:
    """Open the store, settle the API key, recover sessions, deploy the demo agent."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(config.data_dir / "ash.db")
    keys = KeyRing(store, load_key_secret(config.data_dir, config.key_secret))
    new_key = keys.settle_env_key(config.api_key)
    if new_key:
        write_initial_api_key(config.data_dir, new_key)
    backend: Backend = (
        Coordinator(store, config.data_dir, config.coordinator) if config.coordinator
        else LocalBackend(config.data_dir,
                          isolation=create_isolation(config.sandbox, config.data_dir),
                          warm_pool=config.warm_pool, max_sandboxes=config.max_sandboxes))
    event_log = EventLog(store)
    sessions = SessionService(store, backend, event_log,
                              credential_cipher=config.credential_cipher,
                              idle_timeout=config.idle_timeout)
    if isinstance(backend, Coordinator):
        backend.on_unfinished_turn = sessions.adopt_unfinished_turn
    recovered = sessions.recover_after_restart()
    if recovered:
        log.info("paused %d session(s) whose sandbox ended with the last run", recovered)
    agents_dir = config.data_dir / "agents"
    if config.demo and store.get_agent(DEMO_AGENT_NAME) is None:
        demo_config = agents.check_agent_folder(DEMO_AGENT_DIR)
        target = agents.copy_agent_folder(DEMO_AGENT_DIR, agents_dir, DEMO_AGENT_NAME)
        agents.record_agent(store, DEMO_AGENT_NAME, target, demo_config)
    gateway = Gateway(store, backend, sessions, event_log, agents_dir, mode=config.mode,
                      stream_settings=config.stream,
                      event_retention_seconds=config.event_retention_days * 86400,
                      queue_settings=config.queue,
                      sandbox=backend.sandbox_status()
                      if isinstance(backend, LocalBackend) else None, keys=keys)
    gateway_metrics(gateway)
    return gateway, keys, new_key


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this (Linux). asyncio sets it on each connection
    # anyway; granian does not, and without it every SSE frame after the first
    # waits ~40 ms for the client's delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def banner(config: GatewayConfig, sock: socket.socket, new_key: str | None,
           registry_address: str | None = None) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.certfile else "http"
    shown_host = f"[{host}]" if ":" in host else host
    url = f"{scheme}://{shown_host}:{port}"
    protocols = servers.protocols(config.server, tls=bool(config.certfile))
    server = "" if config.server == servers.DEFAULT_SERVER else f", {config.server}"
    lines = [f"Ash gateway ({config.mode}{server}) listening on {url} — {protocols}",
             f"Data dir: {config.data_dir}"]
    if config.sandbox == "none" and config.coordinator is None:
        lines.append(f"WARNING: {NONE_WARNING}")
    if config.server in servers.EXPERIMENTAL:
        lines.append(f"WARNING: {servers.EXPERIMENTAL[config.server]}")
    if registry_address is not None:
        assert config.coordinator is not None
        tls = "TLS" if config.coordinator.certfile else "cleartext"
        lines.append(f"Runner registry (gRPC, {tls}) on {registry_address}")
    if new_key:
        lines.append(f"API key: {new_key}")
        lines.append("  (shown once; only its HMAC is stored. Set ASH_API_KEY to choose your own.)")
    elif config.api_key:
        lines.append("API key: from ASH_API_KEY")
    else:
        lines.append("API key: the one printed at first start (set ASH_API_KEY to replace it)")
    if config.demo:
        lines.append(f"Demo agent: {DEMO_AGENT_NAME} (mock backend; see the README's curl example)")
    return "\n".join(lines)


async def serve(config: GatewayConfig) -> None:
    gateway, auth, new_key = build_gateway(config)
    sock = listen_socket(config.host, config.port)
    app = GatewayApp(gateway, auth, config.internal_secret, rate_limits=config.rate_limits,
                     cors=config.cors)
    registry_address = None
    if isinstance(gateway.backend, Coordinator):
        registry_address = await gateway.backend.start()
    elif isinstance(gateway.backend, LocalBackend):
        gateway.backend.start_warm_pool()
    print(banner(config, sock, new_key, registry_address), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    options = ServeOptions(log_level=config.log_level, certfile=config.certfile,
                           keyfile=config.keyfile,
                           request_head_timeout=config.request_head_timeout,
                           request_body_timeout=config.request_body_timeout)
    await servers.load(config.server)(app, sock, options, stop)


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        uvloop.run(serve(config))
    except SandboxUnavailable as exc:
        print(f"ash-gateway: cannot start sandboxes: {exc}", file=sys.stderr)
        return 2
    except (ServerUnavailable, KeySecretError) as exc:
        print(f"ash-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
