"""Where the CLI finds its server: ASH_SERVER_URL / ASH_API_KEY, else `~/.ash/config.json`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SERVER_URL = "http://localhost:4100"


def config_dir() -> Path:
    """`~/.ash` (the reference's place), or ASH_CONFIG_DIR when set (tests, several servers)."""
    override = os.environ.get("ASH_CONFIG_DIR")
    return Path(override) if override else Path.home() / ".ash"


def config_path() -> Path:
    return config_dir() / "config.json"


@dataclass(frozen=True)
class ClientConfig:
    server_url: str
    api_key: str | None


def _read_file() -> dict[str, object]:
    try:
        loaded = json.loads(config_path().read_text())
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigFileError(f"cannot read {config_path()}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigFileError(f"{config_path()} does not hold a JSON object")
    return loaded


class ConfigFileError(Exception):
    pass


def load_config() -> ClientConfig:
    """The environment wins over the file, field by field, as in the reference."""
    stored = _read_file()
    url = os.environ.get("ASH_SERVER_URL") or stored.get("serverUrl") or DEFAULT_SERVER_URL
    key = os.environ.get("ASH_API_KEY") or stored.get("apiKey") or None
    return ClientConfig(server_url=str(url).rstrip("/"), api_key=str(key) if key else None)


def save_config(*, server_url: str | None = None, api_key: str | None = None,
                clear_api_key: bool = False) -> Path:
    """Update `config.json` in place (mode 0600: it may hold a key); other fields are kept."""
    stored = _read_file()
    if server_url is not None:
        stored["serverUrl"] = server_url.rstrip("/")
    if api_key is not None:
        stored["apiKey"] = api_key
    elif clear_api_key:
        stored.pop("apiKey", None)
    return _write(stored)


def _write(stored: dict[str, object]) -> Path:
    """Write `config.json` atomically, mode 0600 (it may hold a key)."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staged = path.with_suffix(".json.tmp")
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(stored, out, indent=2)
        out.write("\n")
    os.replace(staged, path)
    return path


def clear_link() -> Path:
    """Drop the server URL and key from `config.json` (other fields are kept)."""
    stored = _read_file()
    stored.pop("serverUrl", None)
    stored.pop("apiKey", None)
    return _write(stored)
