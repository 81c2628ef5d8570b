"""The root `ash` command group; each command group lives in its own module under `ash_cli/`."""

from __future__ import annotations

import importlib

import click

# Modules that add their commands to `cli` when imported (one per command group).
COMMAND_MODULES: tuple[str, ...] = ()


@click.group(name="ash", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ash-gateway", prog_name="ash")
def cli() -> None:
    """Drive an Ash gateway: deploy agents, run sessions, stream their work."""


def main() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    cli()
