"""`ash-runner`: the data plane's entry point.

Serves the Runner gRPC service over the runner library, registers with a gateway
in coordinator mode and keeps its heartbeat. SIGTERM (or SIGINT) shuts it down
in order: deregister (the gateway pauses this runner's sessions at once), let the
running turns finish within the grace period (their state is shipped before
their `done`), then stop the sandboxes and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import uvloop

from runner.agent_cache import AgentCache
from runner.backend import DEFAULT_MAX_SANDBOXES, MAX_SANDBOXES_ENV
from runner.grpc_server import RunnerService, start_server
from runner.grpc_transport import (
    DEFAULT_STATE_MAX_BYTES,
    STATE_MAX_ENV,
    TlsConfigError,
    add_message_limit_argument,
    add_tls_arguments,
    check_tls_arguments,
    join_address,
    runner_max_message_bytes,
    split_address,
)
from runner.isolation import (
    DEFAULT_MODE,
    MODES,
    NONE_WARNING,
    SandboxUnavailable,
    create_isolation,
)
from runner.local import LocalBackend
from runner.metrics import METRICS_PORT_ENV, serve_metrics
from runner.registration import Registration, RegistrationConfig, RegistrationRefused
from runner.sandbox import BridgeSettings
from runner.warm_pool import add_warm_pool_argument
from wire.internal_auth import SECRET_ENV

log = logging.getLogger("ash.runner")

DEFAULT_LISTEN = "127.0.0.1:4200"
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    gateway: str
    listen: str
    advertise: str | None
    runner_id: str
    max_sandboxes: int
    heartbeat_interval: float
    data_dir: Path
    certfile: str | None
    keyfile: str | None
    cafile: str | None
    shutdown_grace: float
    log_level: str
    secret: str
    sandbox: str = DEFAULT_MODE
    warm_pool: int = 0
    grpc_max_message_bytes: int = 0
    """The listener's receive limit; 0 = sized for the default state cap."""
    metrics_port: int = 0
    """Serve Prometheus /metrics on this port (0: off); `metrics_host` is its address."""
    metrics_host: str = "127.0.0.1"


def parse_args(argv: list[str] | None = None) -> RunnerConfig:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="ash-runner",
        description="Ash runner: owns sandboxes on this machine and serves them to an "
        f"ash-gateway in coordinator mode over gRPC. Needs {SECRET_ENV}, the secret the "
        "gateway was started with. Every flag has an ASH_* environment equivalent.",
    )
    parser.add_argument("--gateway", default=env("ASH_GATEWAY"),
                        help="HOST:PORT of the gateway's gRPC registry (ASH_GATEWAY, required)")
    parser.add_argument("--listen", default=env("ASH_RUNNER_LISTEN", DEFAULT_LISTEN),
                        help="HOST:PORT for this runner's gRPC service, port 0 = any free "
                        f"port (ASH_RUNNER_LISTEN, default {DEFAULT_LISTEN})")
    parser.add_argument("--advertise", default=env("ASH_RUNNER_ADVERTISE"),
                        help="HOST[:PORT] at which the gateway reaches this runner "
                        "(ASH_RUNNER_ADVERTISE, default: the listen address; the host name "
                        "when listening on all interfaces)")
    parser.add_argument("--runner-id", default=env("ASH_RUNNER_ID") or socket.gethostname(),
                        help="stable unique id (ASH_RUNNER_ID, default the host name)")
    parser.add_argument("--max-sandboxes", type=int,
                        default=int(env(MAX_SANDBOXES_ENV, str(DEFAULT_MAX_SANDBOXES))),
                        help="most live sandboxes at once, warm-pool ones included; a create "
                        f"beyond it is refused ({MAX_SANDBOXES_ENV}, default "
                        f"{DEFAULT_MAX_SANDBOXES})")
    parser.add_argument("--heartbeat-interval", type=float,
                        default=float(env("ASH_HEARTBEAT_INTERVAL", "10")),
                        help="seconds between heartbeats, at least 0.1; three missed ones "
                        "make the gateway count the runner lost (ASH_HEARTBEAT_INTERVAL, "
                        "default 10)")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(env("ASH_DATA_DIR", "./runner-data")),
                        help="sandboxes and unpacked agents (ASH_DATA_DIR, default ./runner-data)")
    add_tls_arguments(parser, listener="this runner's gRPC listener", peer="the gateway's")
    state_max = int(env(STATE_MAX_ENV) or DEFAULT_STATE_MAX_BYTES)
    add_message_limit_argument(parser, runner_max_message_bytes(state_max),
                               f"a CreateSandbox restoring a session state of up to "
                               f"{STATE_MAX_ENV} (the gateway's cap, {state_max} bytes) "
                               "beside its agent bundle")
    parser.add_argument("--shutdown-grace", type=float,
                        default=float(env("ASH_SHUTDOWN_GRACE", "30")),
                        help="seconds running turns get to finish on SIGTERM before they are "
                        "interrupted (ASH_SHUTDOWN_GRACE, default 30)")
    parser.add_argument("--sandbox", choices=MODES, default=env("ASH_SANDBOX", DEFAULT_MODE),
                        help="bwrap: bubblewrap namespaces + cgroup limits (needs root, "
                        "bubblewrap and cgroups); none: plain processes, development only "
                        "(ASH_SANDBOX, default bwrap)")
    add_warm_pool_argument(parser)
    parser.add_argument("--log-level", default=env("ASH_LOG_LEVEL", "info"),
                        choices=["debug", "info", "warning", "error"])
    parser.add_argument("--metrics-port", type=int, default=int(env(METRICS_PORT_ENV, "0")),
                        help="serve Prometheus /metrics on this port, no auth; 0 for off "
                        f"({METRICS_PORT_ENV}, default 0)")
    parser.add_argument("--metrics-host", default=env("ASH_METRICS_HOST", "127.0.0.1"),
                        help="address of the metrics port (ASH_METRICS_HOST, default 127.0.0.1)")
    args = parser.parse_args(argv)
    secret = env(SECRET_ENV, "")
    if not args.gateway:
        parser.error("--gateway HOST:PORT (or ASH_GATEWAY) is required")
    if not secret:
        parser.error(f"{SECRET_ENV} must hold the secret the gateway was started with")
    check_tls_arguments(parser, args)
    if args.max_sandboxes < 1:
        parser.error("--max-sandboxes must be at least 1")
    try:
        BridgeSettings.from_env()  # ASH_BACKEND, ASH_MOCK_*, ASH_BRIDGE_* limits
    except ValueError as exc:
        parser.error(str(exc))
    if args.heartbeat_interval < 0.1:
        parser.error("--heartbeat-interval must be at least 0.1 seconds")
    if args.grpc_max_message_bytes < 1:
        parser.error("--grpc-max-message-bytes must be positive")
    for flag, value in (("--gateway", args.gateway), ("--listen", args.listen)):
        try:
            split_address(value)
        except ValueError as exc:
            parser.error(f"{flag}: {exc}")
    return RunnerConfig(
        gateway=args.gateway, listen=args.listen, advertise=args.advertise,
        runner_id=args.runner_id, max_sandboxes=args.max_sandboxes,
        heartbeat_interval=args.heartbeat_interval, data_dir=args.data_dir.resolve(),
        certfile=args.grpc_certfile, keyfile=args.grpc_keyfile, cafile=args.grpc_cafile,
        shutdown_grace=args.shutdown_grace, log_level=args.log_level, secret=secret,
        sandbox=args.sandbox, warm_pool=args.warm_pool,
        grpc_max_message_bytes=args.grpc_max_message_bytes,
        metrics_port=args.metrics_port, metrics_host=args.metrics_host,
    )


def advertised(config: RunnerConfig, bound_port: int) -> tuple[str, int]:
    """Where the gateway should connect: --advertise, else the listen address as bound."""
    listen_host, _ = split_address(config.listen)
    if config.advertise:
        host, port = split_address(config.advertise, default_port=bound_port)
        return host, port or bound_port
    host = socket.gethostname() if listen_host in _WILDCARD_HOSTS else listen_host
    return host, bound_port


async def serve(config: RunnerConfig) -> int:
    config.data_dir.mkdir(parents=True, exist_ok=True)
    backend = LocalBackend(config.data_dir,
                           isolation=create_isolation(config.sandbox, config.data_dir),
                           warm_pool=config.warm_pool, max_sandboxes=config.max_sandboxes)
    backend.start_warm_pool()
    service = RunnerService(backend, AgentCache(config.data_dir / "agents"), config.max_sandboxes)
    server, port = await start_server(service, config.listen, config.secret,
                                      config.certfile, config.keyfile,
                                      config.grpc_max_message_bytes or None)
    host, advertised_port = advertised(config, port)
    if config.metrics_port:
        serve_metrics(config.metrics_port, config.metrics_host, config.runner_id, backend,
                      service)
    listen_host, _ = split_address(config.listen)
    tls = " + TLS" if config.certfile else ""
    print(f"Ash runner {config.runner_id} listening on {join_address(listen_host, port)} "
          f"(gRPC{tls}), advertised as {join_address(host, advertised_port)}; "
          f"gateway {config.gateway}", flush=True)
    if config.sandbox == "none":
        print(f"WARNING: {NONE_WARNING}", flush=True)
    registration = Registration(RegistrationConfig(
        gateway=config.gateway, runner_id=config.runner_id, advertise_host=host,
        advertise_port=advertised_port, max_sandboxes=config.max_sandboxes,
        heartbeat_interval=config.heartbeat_interval, secret=config.secret,
        cafile=config.cafile,
    ), service)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    registered = loop.create_task(registration.run())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({registered, stopping}, return_when=asyncio.FIRST_COMPLETED)
    status = 0
    if registered.done():
        exc = registered.exception()
        if isinstance(exc, RegistrationRefused):
            print(f"ash-runner: the gateway refused registration: {exc}", file=sys.stderr)
            status = 2
        elif exc is not None:
            raise exc
    else:
        if await registration.leave():
            log.info("deregistered; the gateway paused this runner's sessions")
        await service.leave()
        await service.finish_turns(config.shutdown_grace)
    stopping.cancel()
    registered.cancel()
    await server.stop(grace=1.0)
    await backend.close()
    return status


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return uvloop.run(serve(config))
    except SandboxUnavailable as exc:
        print(f"ash-runner: cannot start sandboxes: {exc}", file=sys.stderr)
        return 2
    except (TlsConfigError, OSError) as exc:
        print(f"ash-runner: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
