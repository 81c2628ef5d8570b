"""API keys: each maps to a tenant; stored only as an HMAC-SHA256 under a server secret.

The secret is ASH_KEY_SECRET when set, else a random one generated on first start and
kept in `<data dir>/key_secret` (mode 0600) — outside the database, so a copy of the
database alone (a backup, a dump) does not let anyone test guesses of a key. Changing
the secret invalidates every stored key but the env key (hashed again at each start).

ASH_API_KEY (or, without it, the key generated and printed once at first start) is the
default tenant's key, listed as id "env". Other keys are made by `POST /api/api-keys`
(for the caller's tenant) or `POST /api/internal/api-keys` (for any tenant, behind the
internal secret).

The hot path costs no database round trip: a presented key's HMAC is looked up in an
in-memory map of the keys seen in the last `CACHE_SECONDS`; a miss reads the database
(one lookup in a unique index). A key revoked through this gateway stops working at once;
one revoked through another gateway sharing the database, within `CACHE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.store import DEFAULT_TENANT, ApiKeyRow, Store

KEY_SECRET_ENV = "ASH_KEY_SECRET"
KEY_SECRET_FILE = "key_secret"
LEGACY_KEY_HASH_SETTING = "api_key_sha256"
"""What gateways before tenants stored: a plain sha256 of the one key (see `KeyRing`)."""
KEY_PREFIX = "ash_"
ENV_KEY_ID = "env"
PREFIX_CHARS = 8
CACHE_SECONDS = 10.0
TENANT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_LABEL = 200


class KeySecretError(Exception):
    """The data dir's key secret file is unusable."""


def load_key_secret(data_dir: Path, configured: str | None) -> bytes:
    """ASH_KEY_SECRET, else the data dir's generated secret (made on first call, 0600).

    A new secret is written whole to a private temporary file and linked into place, so
    a crash never leaves a half-written secret, and of two gateways starting at once on
    one data dir the second reads the first's."""
    if configured:
        return configured.encode()
    path = data_dir / KEY_SECRET_FILE
    if not path.exists():
        staging = data_dir / f".{KEY_SECRET_FILE}-{secrets.token_hex(8)}"
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_hex(32).encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(staging, path)
        finally:
            staging.unlink()
    secret = path.read_bytes().strip()
    if len(secret) < 32:
        raise KeySecretError(f"{path} holds no key secret (delete it to make a new one, which "
                             "invalidates every API key but ASH_API_KEY)")
    return secret


def display_prefix(key: str) -> str:
    """What a listing shows of a key: at most 8 characters and a quarter of the key."""
    return key[:min(PREFIX_CHARS, len(key) // 4)]


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom a request's key identifies."""

    key_id: str
    tenant_id: str


@dataclass
class KeyRing:
    store: Store
    secret: bytes
    _cache: dict[str, tuple[Caller, float]] = field(default_factory=dict)
    _legacy_sha256: bytes | None = None

    def digest(self, key: bytes) -> str:
        return hmac.new(self.secret, key, hashlib.sha256).hexdigest()

    def settle_env_key(self, configured_key: str | None) -> str | None:
        """Make sure the default tenant has its env key; returns a newly generated key
        (to print once). A database from before tenants holds only the sha256 of a key
        generated then: that key keeps working and gets its HMAC at its first use."""
        if configured_key:
            self._store_env_key(configured_key)
            self.store.db.execute("DELETE FROM settings WHERE key = ?",
                                  (LEGACY_KEY_HASH_SETTING,))
            return None
        existing = self.store.get_api_key(ENV_KEY_ID)
        if existing is not None and not existing.revoked:
            return None
        legacy = self.store.get_setting(LEGACY_KEY_HASH_SETTING)
        if legacy is not None:
            self._legacy_sha256 = legacy.encode()
            return None
        key = new_key()
        self._store_env_key(key)
        return key

    def _store_env_key(self, key: str) -> None:
        self.store.insert_api_key(ENV_KEY_ID, DEFAULT_TENANT, "ASH_API_KEY",
                                  display_prefix(key), self.digest(key.encode()))
        self._cache.clear()

    def authenticate(self, authorization: bytes | None) -> Caller | None:
        """The caller a `Bearer <key>` header identifies, or None."""
        if authorization is None or not authorization.startswith(b"Bearer "):
            return None
        key = authorization[7:].strip()
        if not key:
            return None
        digest = self.digest(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and now - cached[1] < CACHE_SECONDS:
            return cached[0]
        row = self.store.find_api_key(digest)
        # The index found the row by its HMAC; compare it again in constant time (the
        # HMAC is keyed, so its lookup's timing tells nothing of the key itself).
        if row is None or not hmac.compare_digest(row.hmac.encode(), digest.encode()):
            self._cache.pop(digest, None)
            return self._legacy(key)
        caller = Caller(row.id, row.tenant_id)
        self._cache[digest] = (caller, now)
        return caller

    def _legacy(self, key: bytes) -> Caller | None:
        if self._legacy_sha256 is None:
            return None
        if not hmac.compare_digest(hashlib.sha256(key).hexdigest().encode(),
                                   self._legacy_sha256):
            return None
        self._store_env_key(key.decode("utf-8", "replace"))
        self.store.db.execute("DELETE FROM settings WHERE key = ?", (LEGACY_KEY_HASH_SETTING,))
        self._legacy_sha256 = None
        return Caller(ENV_KEY_ID, DEFAULT_TENANT)

    def create(self, tenant_id: str, label: str) -> tuple[ApiKeyRow, str]:
        """A new key for `tenant_id`: its row and the key (shown once, never stored)."""
        key = new_key()
        row = self.store.insert_api_key(f"key_{secrets.token_hex(12)}", tenant_id, label,
                                        display_prefix(key), self.digest(key.encode()))
        return row, key

    def revoke(self, key_id: str, tenant_id: str) -> bool:
        revoked = self.store.revoke_api_key(key_id, tenant_id)
        if revoked:
            self._cache = {digest: entry for digest, entry in self._cache.items()
                           if entry[0].key_id != key_id}
        return revoked
