"""The control plane: HTTP API, SSE streams, the store and routing to backends."""

from importlib import metadata

try:
    VERSION = metadata.version("ash-gateway")
except metadata.PackageNotFoundError:
    VERSION = "0.0.0"
"""The gateway's version, as every turn's `session_start` frame names it."""
