"""Agent deployment: validate a folder, copy it into the data dir, record it."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import orjson

from gateway.http import ApiError
from gateway.store import DEFAULT_TENANT, AgentRow, Store
from gateway.timestamps import iso_utc
from runner.backend import AgentSpec
from runner.limits import SandboxLimits

AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
SYSTEM_PROMPT_FILE = "CLAUDE.md"
CONFIG_FILE = "agent.json"


def validate_agent_name(name: str) -> str:
    if not AGENT_NAME.fullmatch(name) or ".." in name:
        raise ApiError(
            400,
            "agent name must be 1-64 characters of letters, digits, '.', '_' or '-', "
            "start with a letter or digit, and contain no '..'",
        )
    return name


def read_agent_config(folder: Path) -> dict[str, Any]:
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        return {}
    try:
        config = orjson.loads(config_path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"{CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ApiError(400, f"{CONFIG_FILE} must hold a JSON object")
    return config


def check_agent_folder(source: Path) -> dict[str, Any]:
    """Validate a folder to deploy; returns its parsed config."""
    if not source.is_absolute():
        raise ApiError(400, "`path` must be an absolute path on the gateway host")
    if not source.is_dir():
        raise ApiError(400, f"agent folder not found: {source}")
    if not (source / SYSTEM_PROMPT_FILE).is_file():
        raise ApiError(400, f"agent folder has no {SYSTEM_PROMPT_FILE}: {source}")
    config = read_agent_config(source)
    try:
        SandboxLimits().with_config(config)
    except ValueError as exc:
        raise ApiError(400, f"{CONFIG_FILE}: {exc}") from None
    return config


def copy_agent_folder(source: Path, agents_dir: Path, name: str) -> Path:
    """Copy `source` to `agents_dir/name`, replacing any earlier copy atomically.

    Runs in a worker thread: a folder may be large.
    """
    agents_dir.mkdir(parents=True, exist_ok=True)
    target = agents_dir / name
    staging = agents_dir / f".staging-{name}-{uuid.uuid4().hex}"
    shutil.copytree(source, staging, symlinks=True)
    retired = agents_dir / f".retired-{name}-{uuid.uuid4().hex}"
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def remove_agent_folder(agents_dir: Path, name: str) -> None:
    target = agents_dir / name
    if target.exists():
        retired = agents_dir / f".retired-{name}-{uuid.uuid4().hex}"
        target.rename(retired)
        shutil.rmtree(retired, ignore_errors=True)


def record_agent(store: Store, name: str, target: Path, config: dict[str, Any]) -> AgentRow:
    return store.upsert_agent(name, str(target), orjson.dumps(config).decode())


def agent_spec(row: AgentRow) -> AgentSpec:
    return AgentSpec(name=row.name, path=row.path, version=row.version,
                     config=orjson.loads(row.config))


REDACTED = "***"
"""What an env value reads as in a response (the reference's redaction): names only."""


def agent_json(row: AgentRow) -> dict[str, Any]:
    """The reference's Agent (`id`, `name`, `tenantId`, `version`, `path`, `env` with
    values redacted, ISO `createdAt`/`updatedAt`) and our `config` beside it, whose
    `env` is redacted too: a response never carries an agent's secrets."""
    config = orjson.loads(row.config)
    env = config.get("env")
    redacted = {name: REDACTED for name in env} if isinstance(env, dict) else {}
    if env is not None:
        config["env"] = redacted
    return {
        "id": row.id,
        "name": row.name,
        "tenantId": DEFAULT_TENANT,
        "version": row.version,
        "path": row.path,
        "env": redacted,
        "config": config,
        "createdAt": iso_utc(row.created_at),
        "updatedAt": iso_utc(row.updated_at),
    }
