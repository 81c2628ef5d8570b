"""`ash deploy` and `ash agent list|info|delete`."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import click

from ash_cli.app import api, cli
from ash_cli.client import AshError, segment
from ash_cli.envfile import ENV_FILES, env_option_values, folder_env
from ash_cli.output import JSON_OPTION, print_fields, print_json, print_table, when

SKIPPED_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv"})
"""Never uploaded: tooling state, not the agent (as the reference's bundles skip them)."""
ENV_OPTION = click.option("-e", "--env", "env_pairs", multiple=True, metavar="KEY=VALUE",
                          help="An environment variable (repeatable).")


def folder_files(folder: Path) -> list[dict[str, str]]:
    """Every file under `folder` as `{path, content(base64)}`, but the env files (they go
    as `env`) and SKIPPED_DIRS."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(names):
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if relative in ENV_FILES or not path.is_file():
                continue
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise AshError(f"cannot read {path}: {exc.strerror}") from None
            files.append({"path": relative, "content": base64.b64encode(content).decode()})
    return files


def agent_fields(agent: dict[str, Any]) -> list[tuple[str, Any]]:
    return [("name", agent.get("name")), ("version", agent.get("version")),
            ("path", agent.get("path")), ("created", when(agent.get("createdAt"))),
            ("updated", when(agent.get("updatedAt")))]


@cli.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-n", "--name", help="The agent's name (default: the folder's name).")
@ENV_OPTION
@JSON_OPTION
def deploy(path: Path, name: str | None, env_pairs: tuple[str, ...], as_json: bool) -> None:
    """Upload the agent folder PATH (every file, and its .env/.env.local as env)."""
    options_env = env_option_values(env_pairs)
    folder = path.resolve()
    env = {**folder_env(folder), **options_env}
    files = folder_files(folder)
    if not files:
        raise AshError(f"{path} holds no files to deploy")
    body: dict[str, Any] = {"name": name or folder.name, "files": files}
    if env:
        body["env"] = env
    agent = api().call("POST", "/api/agents", json=body)["agent"]
    if as_json:
        print_json(agent)
        return
    click.echo(f"Deployed agent {agent['name']} (version {agent.get('version')}, "
               f"{len(files)} files, {len(env)} env vars)")


@cli.group()
def agent() -> None:
    """List, inspect and delete agents."""


@agent.command("list")
@JSON_OPTION
def list_agents(as_json: bool) -> None:
    """List the deployed agents."""
    agents = api().call("GET", "/api/agents")["agents"]
    if as_json:
        print_json(agents)
    elif not agents:
        click.echo("No agents deployed.")
    else:
        print_table(["NAME", "VERSION", "UPDATED"],
                    [[a["name"], a.get("version", ""), when(a.get("updatedAt"))]
                     for a in agents])


@agent.command()
@click.argument("name")
@JSON_OPTION
def info(name: str, as_json: bool) -> None:
    """Show one agent."""
    found = api().call("GET", f"/api/agents/{segment(name)}")["agent"]
    if as_json:
        print_json(found)
    else:
        print_fields(agent_fields(found))


@agent.command()
@click.argument("name")
def delete(name: str) -> None:
    """Delete an agent (it must have no live sessions)."""
    api().call("DELETE", f"/api/agents/{segment(name)}")
    click.echo(f"Deleted agent {name}")
