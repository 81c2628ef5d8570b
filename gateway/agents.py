"""Agent deployment: validate a folder (or uploaded files), build the agent's copy in the
data dir, record it; and every later change of that copy (config, env, files).

Every change builds a new copy in a staging folder and renames it into place (see
`stage_agent_folder`): a change that fails leaves the previous version whole, and a
change recorded bumps the agent's version, which new sessions (and runners' caches) see."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gateway.http import ApiError
from gateway.store import DEFAULT_TENANT, AgentRow, Store
from gateway.timestamps import iso_utc
from runner.agent_cache import open_to_sandbox
from runner.backend import AgentSpec
from runner.limits import SandboxLimits
from runner.workspace_files import check_writable, delete_file, write_file

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
    return stage_agent_folder(agents_dir, name, lambda staging: copy_tree(source, staging))


def copy_tree(source: Path, target: Path) -> None:
    """Copy a folder, its symbolic links as links (never followed); ApiError 400 on a
    special or unreadable file."""
    try:
        shutil.copytree(source, target, symlinks=True, copy_function=_copy_regular_file)
    except shutil.Error as exc:
        raise ApiError(400, f"cannot copy the agent folder: {_first_copy_error(exc)}") from None


def stage_agent_folder(agents_dir: Path, name: str, build: Callable[[Path], None], *,
                       keep_previous: bool = False) -> Path:
    """Build agent `name`'s next folder with `build` (given a path to create) in a staging
    folder, open it to the sandbox's user, and rename it over `agents_dir/name`: a failed
    build (any exception) leaves the previous folder as it was.

    A running sandbox has the previous folder bound at /agent (by inode, not by path):
    with `keep_previous` (the agent has live sessions) it is kept aside, retired, and
    removed by a later change made while the agent has none (or by its delete)."""
    agents_dir.mkdir(parents=True, exist_ok=True)
    target = agents_dir / name
    staging = agents_dir / f".staging-{name}-{uuid.uuid4().hex}"
    try:
        build(staging)
        open_to_sandbox(staging)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ApiError(400, f"cannot copy the agent folder: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = _retired(agents_dir, name)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    if not keep_previous:
        remove_retired(agents_dir, name)
    return target


def _retired(agents_dir: Path, name: str) -> Path:
    """A retired folder's name: `+` is no character of an agent name, so the folders of
    agent `a` are never taken for those of agent `a-b`."""
    return agents_dir / f".retired-{name}+{uuid.uuid4().hex}"


def remove_retired(agents_dir: Path, name: str) -> None:
    for folder in agents_dir.glob(f".retired-{name}+*"):
        shutil.rmtree(folder, ignore_errors=True)


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
        target.rename(_retired(agents_dir, name))
    remove_retired(agents_dir, name)


def record_agent(store: Store, name: str, target: Path, config: dict[str, Any],
                 tenant_id: str = DEFAULT_TENANT) -> AgentRow:
    return store.upsert_agent(name, str(target), orjson.dumps(config).decode(), tenant_id)


TENANTS_FOLDER = ".tenants"
"""Under the agents folder, one folder per other tenant: its name starts with a dot, so no
agent's folder (nor a staging or retired one, see `_retired`) is ever taken for it."""


def tenant_agents_dir(agents_dir: Path, tenant_id: str) -> Path:
    """The folder of a tenant's agents: the agents folder itself for the default tenant
    (as before tenants), `<agents>/.tenants/<tenant>` for any other."""
    return agents_dir if tenant_id == DEFAULT_TENANT else agents_dir / TENANTS_FOLDER / tenant_id


def agent_spec(row: AgentRow) -> AgentSpec:
    return AgentSpec(name=row.name, path=row.path, version=row.version,
                     config=orjson.loads(row.config))


REDACTED = "***"
"""What an env value reads as in a response (the reference's redaction): names only."""


def agent_json(row: AgentRow) -> dict[str, Any]:
    """The reference's Agent (`id`, `name`, `tenantId`, `version`, `path`, `env` with
    values redacted, ISO `createdAt`/`updatedAt`) and our `config` beside it, whose
    `env` is redacted too: a response never carries an agent's secrets."""
    config = redacted_config(orjson.loads(row.config))
    return {
        "id": row.id,
        "name": row.name,
        "tenantId": row.tenant_id,
        "version": row.version,
        "path": row.path,
        "env": config.get("env", {}),
        "config": config,
        "createdAt": iso_utc(row.created_at),
        "updatedAt": iso_utc(row.updated_at),
    }


# deploy by upload, config edits, file edits

MAX_ENV_VARS = 256
MAX_ENV_NAME = 256
MAX_ENV_VALUE = 32 * 1024
MAX_SYSTEM_PROMPT = 1024 * 1024
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BACKENDS = ("mock", "claude")
PROTECTED_FILES = {CONFIG_FILE: "edit the config with PATCH /api/agents/{name}/config",
                   SYSTEM_PROMPT_FILE: "an agent folder must hold it; write a new one instead"}
"""Files the files routes do not write (agent.json) or delete (both), and why."""

_locks: dict[tuple[str, str], asyncio.Lock] = {}


def agent_lock(name: str, tenant_id: str = DEFAULT_TENANT) -> asyncio.Lock:
    """Held across one change of an agent (read its row, build its folder, record it):
    two concurrent edits would otherwise each build on the same old folder, one lost."""
    return _locks.setdefault((tenant_id, name), asyncio.Lock())


def placeholder_prompt(name: str) -> str:
    return f"# {name}\n\nYou are a helpful assistant.\n"


def check_env(env: Any, label: str = "`env`") -> dict[str, str]:
    """An env object: at most MAX_ENV_VARS variable names, each to a string."""
    if not isinstance(env, dict):
        raise ApiError(400, f"{label} must be an object of variable names to strings")
    if len(env) > MAX_ENV_VARS:
        raise ApiError(400, f"{label} holds more than {MAX_ENV_VARS} variables")
    for key, value in env.items():
        if len(key) > MAX_ENV_NAME or not ENV_NAME.fullmatch(key):
            raise ApiError(400, f"{label}: {key[:64]!r} is not a variable name "
                                f"([A-Za-z_][A-Za-z0-9_]*, at most {MAX_ENV_NAME} characters)")
        if not isinstance(value, str) or "\x00" in value or len(value) > MAX_ENV_VALUE:
            raise ApiError(400, f"{label}.{key} must be a string of at most {MAX_ENV_VALUE} "
                                "characters, without NUL")
    return env


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """What a new session needs to start from `config`: a known backend, valid limits,
    an env of strings; 400 otherwise."""
    if "backend" in config and config["backend"] not in BACKENDS:
        raise ApiError(400, f"{CONFIG_FILE}: `backend` must be one of {', '.join(BACKENDS)}")
    if "env" in config:
        check_env(config["env"], "`config.env`")
    try:
        SandboxLimits().with_config(config)
    except ValueError as exc:
        raise ApiError(400, f"{CONFIG_FILE}: {exc}") from None
    return config


def parse_config(data: bytes) -> dict[str, Any]:
    try:
        config = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"{CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ApiError(400, f"{CONFIG_FILE} must hold a JSON object")
    return config


def with_env(config: dict[str, Any], env: dict[str, str] | None) -> dict[str, Any]:
    """`config` whose env is `env` (a deploy's or PATCH's `env` replaces the whole env);
    a value of "***" (what a response shows) keeps the variable's stored value."""
    if env is None:
        return config
    stored = config.get("env") if isinstance(config.get("env"), dict) else {}
    kept = {key: stored[key] if value == REDACTED and key in stored else value
            for key, value in env.items()}
    return {**config, "env": kept}


def merged_config(config: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`patch` merged shallowly over `config`; its `env`, if any, as `with_env` sets it."""
    merged = {**config, **{key: value for key, value in patch.items() if key != "env"}}
    if "env" in patch:
        merged = with_env(merged, check_env(patch["env"], "`config.env`"))
    return check_config(merged)


def _write_config(folder: Path, config: dict[str, Any]) -> None:
    """Replace `folder`'s agent.json (a link there is removed, not followed)."""
    target = folder / CONFIG_FILE
    if os.path.lexists(target):
        if stat.S_ISDIR(os.lstat(target).st_mode):
            raise ApiError(400, f"{CONFIG_FILE} is a directory")
        target.unlink()
    write_file(folder, CONFIG_FILE, orjson.dumps(config, option=orjson.OPT_INDENT_2), None)


def upload_config(files: list[tuple[str, bytes]], env: dict[str, str] | None) -> dict[str, Any]:
    """The config an upload deploys: its agent.json (if any) with `env` set."""
    uploaded = dict(files).get(CONFIG_FILE)
    config = parse_config(uploaded) if uploaded is not None else {}
    return check_config(with_env(config, env))


def build_upload(staging: Path, name: str, files: list[tuple[str, bytes]],
                 config: dict[str, Any], system_prompt: str | None) -> None:
    """An agent folder from uploaded files: CLAUDE.md from the files, else `system_prompt`,
    else a placeholder; agent.json as uploaded, rewritten when `config` differs (an env)."""
    staging.mkdir(mode=0o755)
    for path, data in files:
        write_file(staging, path, data, None)
    uploaded = dict(files).get(CONFIG_FILE)
    if config and (uploaded is None or parse_config(uploaded) != config):
        _write_config(staging, config)
    prompt = staging / SYSTEM_PROMPT_FILE
    if not os.path.lexists(prompt):
        text = system_prompt if system_prompt is not None else placeholder_prompt(name)
        write_file(staging, SYSTEM_PROMPT_FILE, text.encode(), None)
    elif not stat.S_ISREG(os.lstat(prompt).st_mode):
        raise ApiError(400, f"{SYSTEM_PROMPT_FILE} must be a file")


def copy_with_env(source: Path, staging: Path, config: dict[str, Any],
                  env: dict[str, str] | None) -> None:
    """A deploy by path: the folder copied, its agent.json's env replaced by `env` if given."""
    copy_tree(source, staging)
    if env is not None:
        _write_config(staging, config)


def rebuild_with_config(row: AgentRow, staging: Path, config: dict[str, Any]) -> None:
    copy_tree(Path(row.path), staging)
    _write_config(staging, config)


def protected(path: str, action: str) -> None:
    """400 for a files-route write or delete of a file the agent's routes own."""
    if path == CONFIG_FILE or (action == "delete" and path == SYSTEM_PROMPT_FILE):
        raise ApiError(400, f"cannot {action} {path} through the files routes: "
                            f"{PROTECTED_FILES[path]}")


def rebuild_with_files(row: AgentRow, staging: Path, files: list[tuple[str, bytes]]) -> None:
    """The agent's folder with `files` written over it; every path is checked against the
    copy first (a link on the way refuses the whole write), and no link is followed."""
    copy_tree(Path(row.path), staging)
    for path, _ in files:
        check_writable(staging, path)
    for path, data in files:
        write_file(staging, path, data, None)


def rebuild_without(row: AgentRow, staging: Path, path: str) -> None:
    copy_tree(Path(row.path), staging)
    delete_file(staging, path)


def redacted_config(config: dict[str, Any]) -> dict[str, Any]:
    """`config` whose env values read "***": a response never carries an agent's secrets."""
    env = config.get("env")
    if env is None:
        return config
    return {**config, "env": {key: REDACTED for key in env} if isinstance(env, dict) else {}}


def config_of(row: AgentRow) -> dict[str, Any]:
    return orjson.loads(row.config)
