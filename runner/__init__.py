"""The data plane: sandboxes, bridges and the backend interface the gateway drives."""
