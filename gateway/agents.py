"""Agent deployment: validate a folder, copy it into the data dir, record it."""

from __future__ import annotations

import os
import re
import shutil
import stat
import uuid
from pathlib import Path
from typing import Any

import orjson

from gateway.http import ApiError
from gateway.store import DEFAULT_TENANT, AgentRow, Store
from gateway.timestamps import iso_utc
from runner.agent_cache import open_to_sandbox
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
    """Copy `source` to `agents_dir/name`, replacing any earlier copy atomically; the copy
    is made readable to the sandbox's user (see `open_to_sandbox`), whoever may read the
    source. ApiError 400 when the gateway cannot copy it (an unreadable or special file).

    Runs in a worker thread: a folder may be large.
    """
    agents_dir.mkdir(parents=True, exist_ok=True)
    target = agents_dir / name
    staging = agents_dir / f".staging-{name}-{uuid.uuid4().hex}"
    try:
        shutil.copytree(source, staging, symlinks=True, copy_function=_copy_regular_file)
        open_to_sandbox(staging)
    except shutil.Error as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ApiError(400, f"cannot copy the agent folder: {_first_copy_error(exc)}") from None
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ApiError(400, f"cannot copy the agent folder: {exc}") from None
    retired = agents_dir / f".retired-{name}-{uuid.uuid4().hex}"
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def _copy_regular_file(source: str, target: str) -> None:
    """`shutil.copy2` for regular files only: a FIFO would block the copy and a device
    would be read without end (`copytree` has already made symbolic links as links)."""
    if not stat.S_ISREG(os.lstat(source).st_mode):
        raise shutil.SpecialFileError(f"{source} is not a regular file or directory")
    shutil.copy2(source, target)


def _first_copy_error(exc: shutil.Error) -> str:
    """The first failure `copytree` collected (it gathers (source, target, why) triples)."""
    errors = exc.args[0] if exc.args else []
    if isinstance(errors, list) and errors and isinstance(errors[0], tuple):
        return str(errors[0][-1])
    return str(exc)


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
