#!/usr/bin/env python3
"""Generate the Python code for wire/runner.proto.

Usage: python scripts/gen_proto.py [OUTPUT_DIR]   (default: the repository root)

Equivalent to running, from the repository root:
    python -m grpc_tools.protoc -I . --python_out=. --pyi_out=. --grpc_python_out=. \
        wire/runner.proto
The files land in OUTPUT_DIR/wire/. tests/test_proto_fresh.py calls `generate`
with a temporary directory and compares the result with the committed files.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO = "wire/runner.proto"
GENERATED = ("wire/runner_pb2.py", "wire/runner_pb2_grpc.py", "wire/runner_pb2.pyi")
"""Generated files, relative to the output directory."""


def well_known_types_include() -> str:
    """grpc_tools' bundled include dir (google/protobuf/*.proto)."""
    return str(resources.files("grpc_tools") / "_proto")


def generate(out_dir: Path | str = REPO_ROOT) -> list[Path]:
    """Run protoc on PROTO into out_dir; return the generated files' paths."""
    out = Path(out_dir).resolve()
    (out / "wire").mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known_types_include()}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(REPO_ROOT / PROTO),
    ]
    status = protoc.main(args)
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status} on {PROTO}")
    return [out / name for name in GENERATED]


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"usage: {Path(__file__).name} [OUTPUT_DIR]", file=sys.stderr)
        return 2
    for path in generate(argv[0] if argv else REPO_ROOT):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
