"""The root `ash` command group; each command group lives in its own module under `ash_cli/`."""

from __future__ import annotations

import importlib
import sys

import click

from ash_cli.client import ApiClient, AshError

# Modules that add their commands to `cli` when imported (one per command group).
COMMAND_MODULES: tuple[str, ...] = (
    "ash_cli.agents",
    "ash_cli.sessions",
    "ash_cli.tail",
    "ash_cli.chat",
    "ash_cli.links",
)
EXIT_ERROR = 1


@click.group(name="ash", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ash-gateway", prog_name="ash")
def cli() -> None:
    """Drive an Ash gateway: deploy agents, run sessions, stream their work."""


def api(timeout: float | None = None) -> ApiClient:
    """The command's client of the configured server, closed when the command ends."""
    ctx = click.get_current_context()
    client = ApiClient() if timeout is None else ApiClient(timeout=timeout)
    ctx.call_on_close(client.close)
    return client


def fail(message: str) -> None:
    click.echo(f"ash: {message}", err=True)
    sys.exit(EXIT_ERROR)


def run(args: list[str] | None = None) -> int:
    """Run `ash`; every error is one line on stderr and exit 1 (usage errors too, where
    click would exit 2), never a traceback."""
    for module in COMMAND_MODULES:
        importlib.import_module(module)
    try:
        result = cli.main(args=args, prog_name="ash", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.format_message(), err=True)
        return EXIT_ERROR
    except click.UsageError as exc:
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"ash: {exc.format_message()}{hint}", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        click.echo(f"ash: {exc.format_message()}", err=True)
        return EXIT_ERROR
    except AshError as exc:
        click.echo(f"ash: {exc}", err=True)
        return EXIT_ERROR
    except (click.Abort, KeyboardInterrupt):
        click.echo("ash: interrupted", err=True)
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())
