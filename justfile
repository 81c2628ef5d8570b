# Everyday recipes for Ash gateway. `just --list` shows them.

# Recipe arguments reach commands as "$@", so quoted arguments keep their spaces.
set positional-arguments := true

# Run the gateway (standalone mode unless told otherwise).
run *ARGS:
    ash-gateway "$@"

# Run the test suite; arguments go to pytest.
test *ARGS:
    python -m pytest "$@"

# The benchmarks (docs/benchmarks.md): hop cost (mock agent; arguments go to bench.hop), spawn, stream.
bench *ARGS:
    python -m bench.hop "$@"
    python -m bench.spawn --rounds 15
    python -m bench.stream --via-runner

# The hop benchmark with the real Claude Agent SDK against the model stub.
bench-claude *ARGS:
    python -m bench.hop --agent claude "$@"

# Regenerate wire/runner_pb2*.py(i) from wire/runner.proto.
proto:
    python scripts/gen_proto.py

# Lint the whole tree.
lint:
    ruff check .

# Apply ruff's automatic fixes.
fmt:
    ruff check --fix .
