"""The data plane: sandboxes, bridges and the backend interface the gateway drives."""

import os

# gRPC's process-wide settings, read once when gRPC is first imported. The package
# init runs before any module here (or in gateway/, which imports this package
# first) imports gRPC. An explicit environment value wins. A bridge (it has
# ASH_BRIDGE_FD) never uses gRPC: its environment stays exactly what it was given.
#
# * Fork handlers: gRPC core's can crash a child forked while gRPC threads run, and
#   every bridge is forked (by libuv, under uvloop) from a process serving gRPC;
#   nothing here forks a process that goes on using gRPC.
# * The EventEngine client and listener add a thread hop to every message received
#   (I/O thread -> completion-queue poller -> event loop). Without them the poller
#   does the I/O itself: a message round trip on an open stream measured 170 us
#   against 300 us on this 2-core machine (grpcio 1.85, uvloop).
if "ASH_BRIDGE_FD" not in os.environ:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")
    os.environ.setdefault("GRPC_EXPERIMENTS", "-event_engine_client,-event_engine_listener")
