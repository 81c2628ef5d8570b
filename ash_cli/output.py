"""How commands print: JSON for `--json`, aligned columns and short lines for people."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import click

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def when(value: Any) -> str:
    """A timestamp (unix seconds or ISO text) as local `YYYY-MM-DD HH:MM:SS`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return "" if value is None else str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                   .rstrip())


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        click.echo(f"{name.ljust(width)}  {value}")
