"""`KEY=VAL` pairs: `-e` options and the `.env` / `.env.local` files `ash deploy` reads."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import click

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_FILES = (".env", ".env.local")
"""Read in this order; a later file wins (as in the reference's deploy)."""


def parse_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not ENV_NAME.fullmatch(key):
        raise click.BadParameter(f"{text!r} is not KEY=VALUE", param_hint="-e")
    return key, value


def env_option_values(values: Iterable[str]) -> dict[str, str]:
    return dict(parse_pair(value) for value in values)


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        return inner.replace("\\n", "\n") if value[0] == '"' else inner
    return value.split(" #", 1)[0].rstrip()


def read_env_file(path: Path) -> dict[str, str]:
    """A dotenv file's variables: `KEY=VALUE`, optional `export `, quotes, `#` comments."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        if not sep or not ENV_NAME.fullmatch(key.strip()):
            raise click.ClickException(f"{path}:{number}: not KEY=VALUE")
        env[key.strip()] = _unquote(value)
    return env


def folder_env(folder: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in ENV_FILES:
        if (folder / name).is_file():
            env.update(read_env_file(folder / name))
    return env
