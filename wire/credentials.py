"""A session's model credential as it travels gateway -> runner, and what each type means
for a sandbox. No I/O.

The gateway stores credentials encrypted (`gateway.credentials`) and decrypts one only to
hand it to the runner that starts the session's sandbox (`CreateSandboxRequest.credential`);
the runner keeps it in memory, for that sandbox only.

* `anthropic`: the runner's model proxy (`runner.model_proxy`) sends it upstream as the
  `x-api-key` of the session's model calls. It never enters the sandbox.
* `openai`, `bedrock`, `custom`: the proxy speaks only the Anthropic Messages API, so the
  key goes into the sandbox's environment (`sandbox_env`): the agent can read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TYPES = ("anthropic", "openai", "bedrock", "custom")
PROXIED_TYPES = frozenset({"anthropic"})
"""Carried by the model proxy, outside the sandbox."""
MAX_KEY_CHARS = 16 * 1024
"""A key's longest accepted length (AWS session credentials run to a few KiB)."""
MAX_LABEL_CHARS = 200

ENV_BY_TYPE: dict[str, dict[str, str | None]] = {
    "openai": {"OPENAI_API_KEY": None},
    "bedrock": {"AWS_BEARER_TOKEN_BEDROCK": None, "CLAUDE_CODE_USE_BEDROCK": "1"},
    "custom": {"ASH_CUSTOM_API_KEY": None},
}
"""The variables a non-proxied credential sets in the sandbox; None stands for the key."""


@dataclass(frozen=True, slots=True)
class ModelCredential:
    """A decrypted credential: its type and its key. The key stays out of `repr`, so no log
    line or traceback that prints one shows it."""

    type: str
    key: str = field(repr=False)

    @property
    def proxied(self) -> bool:
        return self.type in PROXIED_TYPES


def check_credential(kind: object, key: object) -> ModelCredential:
    """A credential from untrusted input (a request body, a gRPC message); ValueError,
    naming the field, when the type is unknown or the key is not a bounded string."""
    if kind not in TYPES:
        raise ValueError(f"`type` must be one of {', '.join(TYPES)}")
    if not isinstance(key, str) or not key.strip():
        raise ValueError("`key` must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"`key` may be at most {MAX_KEY_CHARS} characters")
    if "\0" in key or "\n" in key or "\r" in key:
        raise ValueError("`key` must not contain NUL or line breaks")
    assert isinstance(kind, str)
    return ModelCredential(kind, key)


def sandbox_env(credential: ModelCredential | None) -> dict[str, str]:
    """What the credential puts in the sandbox's environment: nothing for a proxied one."""
    if credential is None or credential.proxied:
        return {}
    return {name: credential.key if value is None else value
            for name, value in ENV_BY_TYPE[credential.type].items()}
