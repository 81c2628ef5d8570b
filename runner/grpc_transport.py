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

MAX_MESSAGE_BYTES = MAX_FRAME_SIZE + 1024 * 1024
"""Largest message either side receives: a bridge frame (one agent event) plus framing."""

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", -1),
    # One connection per peer: never share a subchannel pool with other channels.
    ("grpc.use_local_subchannel_pool", 1),
]
SERVER_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
    # A second process binding the same port must fail, not share it.
    ("grpc.so_reuseport", 0),
]
"""Servers accept any size: only authenticated peers get past the interceptor, and
a restored session state may be as large as the gateway's configured cap."""


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
