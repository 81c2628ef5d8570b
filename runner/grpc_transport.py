"""gRPC transport settings shared by the gateway and the runner: channels, listeners, TLS.

Both ends of the split use these, so that one channel per peer, message-size
limits and TLS are configured in one place. grpc.aio must run on the event loop
it was first used with: call these from inside the (uvloop) loop.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import grpc

from wire.bridge import MAX_FRAME_SIZE

MiB = 1024 * 1024
MESSAGE_MARGIN = 1 * MiB
"""Room for a message's own fields and protobuf framing around its largest payload."""
MAX_MESSAGE_BYTES = MAX_FRAME_SIZE + MESSAGE_MARGIN
"""Largest message a channel receives: a bridge frame (one agent event) plus framing."""
DEFAULT_STATE_MAX_BYTES = 64 * MiB
"""Largest session state kept for failover (ASH_STATE_MAX_BYTES) unless configured."""
AGENT_BUNDLE_ALLOWANCE = 16 * MiB
"""Room for the packed agent folder that travels in the same CreateSandbox message."""
REGISTRY_MAX_MESSAGE_BYTES = 4 * MiB
"""The registry's messages (Register, Heartbeat) are small: a runner's session ids at most."""
MAX_MESSAGE_ENV = "ASH_GRPC_MAX_MESSAGE_BYTES"
STATE_MAX_ENV = "ASH_STATE_MAX_BYTES"


def runner_max_message_bytes(state_max_bytes: int = DEFAULT_STATE_MAX_BYTES) -> int:
    """The runner's receive limit: its largest message is a CreateSandbox that restores a
    session state (one message, up to the gateway's state cap) beside the agent bundle."""
    return max(MAX_MESSAGE_BYTES, state_max_bytes + AGENT_BUNDLE_ALLOWANCE + MESSAGE_MARGIN)


CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", -1),
    # One connection per peer: never share a subchannel pool with other channels.
    ("grpc.use_local_subchannel_pool", 1),
]


def server_options(max_message_bytes: int) -> list[tuple[str, int | str]]:
    """A server's options: a finite receive limit (a bigger message fails the call with
    RESOURCE_EXHAUSTED). A caller without the secret gets nothing read at all: see
    wire.internal_auth. Metadata stays at gRPC's own bound (8 KiB soft, 16 KiB hard)."""
    if max_message_bytes < 1:
        raise ValueError("the gRPC message limit must be positive")
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        # A second process binding the same port must fail, not share it.
        ("grpc.so_reuseport", 0),
    ]


def add_message_limit_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                               default: int, largest: str) -> None:
    """`--grpc-max-message-bytes` (ASH_GRPC_MAX_MESSAGE_BYTES): the listener's receive limit."""
    parser.add_argument("--grpc-max-message-bytes", type=int,
                        default=int(os.environ.get(MAX_MESSAGE_ENV, str(default))),
                        help=f"largest gRPC message the listener receives, bytes; a bigger "
                        f"one fails its call (RESOURCE_EXHAUSTED). Sized for {largest} "
                        f"({MAX_MESSAGE_ENV}, default {default})")


class TlsConfigError(ValueError):
    """A TLS file is missing or the flags do not go together."""


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def open_channel(target: str, cafile: str | Path | None = None) -> grpc.aio.Channel:
    """One channel to `target` (HOST:PORT); TLS verified against `cafile` when given."""
    if cafile:
        credentials = grpc.ssl_channel_credentials(root_certificates=_read(cafile, "CA file"))
        return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def add_listener(
    server: grpc.aio.Server,
    address: str,
    certfile: str | Path | None = None,
    keyfile: str | Path | None = None,
) -> int:
    """Listen on `address` (HOST:PORT, port 0 = any free port); returns the bound port."""
    if bool(certfile) != bool(keyfile):
        raise TlsConfigError("a gRPC certificate and its key go together")
    if certfile and keyfile:
        credentials = grpc.ssl_server_credentials(
            [(_read(keyfile, "private key"), _read(certfile, "certificate"))]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    return port


def split_address(address: str, default_port: int | None = None) -> tuple[str, int]:
    """`HOST:PORT` (or `[v6]:PORT`) into its parts; a bare host takes `default_port`."""
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        if default_port is None:
            raise ValueError(f"{address!r} is not HOST:PORT")
        host, port = address, str(default_port)
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{address!r} is not HOST:PORT")
    return host, int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def add_tls_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      listener: str, peer: str) -> None:
    """`--grpc-certfile`, `--grpc-keyfile` (TLS for `listener`) and `--grpc-cafile` (the CA
    that signed `peer`'s certificates, which are then verified), with ASH_GRPC_* defaults."""
    env = os.environ.get
    parser.add_argument("--grpc-certfile", default=env("ASH_GRPC_CERTFILE"),
                        help=f"TLS certificate (PEM) for {listener} (ASH_GRPC_CERTFILE)")
    parser.add_argument("--grpc-keyfile", default=env("ASH_GRPC_KEYFILE"),
                        help="its private key (PEM) (ASH_GRPC_KEYFILE)")
    parser.add_argument("--grpc-cafile", default=env("ASH_GRPC_CAFILE"),
                        help=f"CA (PEM) that signed {peer} certificates; given, they are "
                        "reached over TLS (ASH_GRPC_CAFILE)")


def check_tls_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if bool(args.grpc_certfile) != bool(args.grpc_keyfile):
        parser.error("--grpc-certfile and --grpc-keyfile go together")
