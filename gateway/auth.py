"""The API key: given by ASH_API_KEY or generated on first start, stored only hashed."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from gateway.store import Store

KEY_HASH_SETTING = "api_key_sha256"
KEY_PREFIX = "ash_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def ensure_api_key(store: Store, configured_key: str | None) -> str | None:
    """Make sure a key hash is stored; returns a newly generated key (to print once)."""
    if configured_key:
        store.set_setting(KEY_HASH_SETTING, hash_key(configured_key))
        return None
    if store.get_setting(KEY_HASH_SETTING) is not None:
        return None
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    store.set_setting(KEY_HASH_SETTING, hash_key(key))
    return key


class ApiKeyCheck:
    def __init__(self, key_hash: str) -> None:
        self._key_hash = key_hash.encode()

    def allows(self, authorization: bytes | None) -> bool:
        if authorization is None or not authorization.startswith(b"Bearer "):
            return False
        presented = hashlib.sha256(authorization[7:].strip()).hexdigest().encode()
        return hmac.compare_digest(presented, self._key_hash)
