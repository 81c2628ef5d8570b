"""`ash-runner`: the data plane's entry point (a placeholder until the gRPC split)."""

from __future__ import annotations

import argparse
import sys

NOT_YET = (
    "ash-runner: coordinator mode arrives with the split (gateway <-> runner over gRPC). "
    "Until then, run `ash-gateway` (standalone mode runs sandboxes in-process)."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ash-runner",
        description="Ash runner: owns sandboxes on this machine and serves them to a "
        "gateway over gRPC. Not available yet; see the message it prints.",
    )
    parser.parse_args(argv)
    print(NOT_YET, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
