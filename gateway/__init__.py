"""The control plane: HTTP API, SSE streams, the store and routing to backends."""
