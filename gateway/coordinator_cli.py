"""The `ash-gateway` flags of coordinator mode, each with its ASH_* environment equivalent."""

from __future__ import annotations

import argparse
import os

from gateway.coordinator import CoordinatorSettings
from gateway.remote_backend import TURN_RPCS
from gateway.state_store import DEFAULT_MAX_BYTES
from runner.grpc_transport import (
    REGISTRY_MAX_MESSAGE_BYTES,
    add_message_limit_argument,
    add_tls_arguments,
    check_tls_arguments,
)
from wire.internal_auth import SECRET_ENV

DEFAULT_GRPC_PORT = 4101


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    group = parser.add_argument_group(
        "coordinator mode",
        f"runners register over gRPC; both sides need the same {SECRET_ENV}",
    )
    group.add_argument("--grpc-host", default=env("ASH_GRPC_HOST"),
                       help="address of the gRPC registry listener (ASH_GRPC_HOST, "
                       "default: --host)")
    group.add_argument("--grpc-port", type=int,
                       default=int(env("ASH_GRPC_PORT", str(DEFAULT_GRPC_PORT))),
                       help="its port, 0 for any free port (ASH_GRPC_PORT, "
                       f"default {DEFAULT_GRPC_PORT})")
    add_tls_arguments(group, listener="the registry listener", peer="the runners'")
    add_message_limit_argument(group, REGISTRY_MAX_MESSAGE_BYTES,
                               "a runner's Register (its session ids) and Heartbeat")
    group.add_argument("--heartbeat-interval", type=float,
                       default=float(env("ASH_HEARTBEAT_INTERVAL", "10")),
                       help="heartbeat interval for runners that ask for none, seconds; a "
                       "runner silent for three of its intervals is lost "
                       "(ASH_HEARTBEAT_INTERVAL, default 10)")
    group.add_argument("--state-max-bytes", type=int,
                       default=int(env("ASH_STATE_MAX_BYTES", str(DEFAULT_MAX_BYTES))),
                       help="largest session state (workspace archive) kept for failover; a "
                       "turn whose state is bigger ends with a state_too_large error "
                       f"(ASH_STATE_MAX_BYTES, default {DEFAULT_MAX_BYTES})")
    group.add_argument("--state-fsync", action="store_true",
                       default=env("ASH_STATE_FSYNC", "").lower() in ("1", "true", "yes", "on"),
                       help="fsync each stored state before the turn's done: survives power "
                       "loss, costs a disk flush per turn (ASH_STATE_FSYNC)")
    group.add_argument("--turn-rpc", choices=TURN_RPCS, default=env("ASH_TURN_RPC", TURN_RPCS[0]),
                       help="how a turn reaches its runner: on the session's long-lived "
                       "stream (default), or one RPC per turn, kept for benchmarks (ASH_TURN_RPC)")


def settings_from_args(args: argparse.Namespace,
                       parser: argparse.ArgumentParser) -> CoordinatorSettings:
    """Coordinator settings from parsed flags; a usage error for what cannot work."""
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        parser.error(f"coordinator mode needs {SECRET_ENV}: the secret runners present")
    check_tls_arguments(parser, args)
    if args.heartbeat_interval < 0.1:
        parser.error("--heartbeat-interval must be at least 0.1 seconds")
    if args.state_max_bytes < 1:
        parser.error("--state-max-bytes must be positive")
    if args.grpc_max_message_bytes < 1:
        parser.error("--grpc-max-message-bytes must be positive")
    return CoordinatorSettings(
        secret=secret, grpc_host=args.grpc_host or args.host, grpc_port=args.grpc_port,
        certfile=args.grpc_certfile, keyfile=args.grpc_keyfile, cafile=args.grpc_cafile,
        heartbeat_interval=args.heartbeat_interval, state_max_bytes=args.state_max_bytes,
        state_fsync=args.state_fsync, turn_rpc=args.turn_rpc,
        grpc_max_message_bytes=args.grpc_max_message_bytes,
    )
