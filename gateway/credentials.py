"""Model credentials at rest: AES-256-GCM (the `cryptography` package) under the gateway's
ASH_CREDENTIAL_KEY, scoped by tenant.

ASH_CREDENTIAL_KEY is 32 random bytes, base64 (standard or URL-safe alphabet, padding
optional), e.g. `openssl rand -base64 32`. A value of any other form stops the gateway at
start-up; without one, the credentials routes and `credentialId` answer 503, naming it.

Each stored secret is `version byte || 12-byte random nonce || ciphertext+tag`, and the
row's id, tenant and type are its associated data: a secret copied into another row (or
tenant) does not decrypt. The plain key exists only in memory, on its way to the runner
that starts a session's sandbox (`wire.credentials.ModelCredential`); no route returns it
and nothing logs it.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.http import ApiError
from gateway.store import CredentialRow, Store
from wire.credentials import ModelCredential

KEY_ENV = "ASH_CREDENTIAL_KEY"
KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT_VERSION = b"\x01"
NO_KEY = (f"credentials need {KEY_ENV} on the gateway: 32 random bytes, base64 (e.g. "
          f"`openssl rand -base64 32`); see docs/compat.md")


class CredentialKeyError(ValueError):
    """ASH_CREDENTIAL_KEY is set but is not 32 bytes of base64."""


@dataclass(frozen=True, slots=True)
class CredentialCipher:
    """AES-256-GCM under the gateway's key; the key stays out of `repr`."""

    _aead: AESGCM = field(repr=False)

    @classmethod
    def from_key(cls, text: str) -> CredentialCipher:
        raw = text.strip()
        try:
            key = base64.b64decode(raw.replace("-", "+").replace("_", "/")
                                   + "=" * (-len(raw) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise CredentialKeyError(
                f"{KEY_ENV} must be {KEY_BYTES} random bytes in base64 (44 characters, e.g. "
                f"`openssl rand -base64 32`); the value given is not")
        return cls(AESGCM(key))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> CredentialCipher | None:
        """The cipher ASH_CREDENTIAL_KEY names; None when unset; CredentialKeyError when bad."""
        text = environ.get(KEY_ENV)
        return cls.from_key(text) if text else None

    def encrypt(self, plain: str, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return FORMAT_VERSION + nonce + self._aead.encrypt(nonce, plain.encode(), context)

    def decrypt(self, sealed: bytes, context: bytes) -> str:
        """The plain text; InvalidTag when `sealed` is not this key's, for this context."""
        if sealed[:1] != FORMAT_VERSION or len(sealed) < 1 + NONCE_BYTES + 16:
            raise InvalidTag
        nonce, body = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
        return self._aead.decrypt(nonce, body, context).decode()


def _context(credential_id: str, tenant_id: str, kind: str) -> bytes:
    return f"ash-credential\0{credential_id}\0{tenant_id}\0{kind}".encode()


@dataclass
class CredentialVault:
    """The credentials routes' and session starts' one way to the stored credentials."""

    store: Store
    cipher: CredentialCipher | None

    def _cipher(self) -> CredentialCipher:
        if self.cipher is None:
            raise ApiError(503, NO_KEY)
        return self.cipher

    def add(self, tenant_id: str, credential: ModelCredential,
            label: str | None) -> CredentialRow:
        cipher = self._cipher()
        credential_id = str(uuid.uuid4())
        sealed = cipher.encrypt(credential.key,
                                _context(credential_id, tenant_id, credential.type))
        return self.store.insert_credential(credential_id, tenant_id, credential.type,
                                            label, sealed)

    def list(self, tenant_id: str) -> list[CredentialRow]:
        self._cipher()
        return self.store.list_credentials(tenant_id)

    def delete(self, tenant_id: str, credential_id: str) -> None:
        self._cipher()
        if not self.store.delete_credential(tenant_id, credential_id):
            raise ApiError(404, f"credential not found: {credential_id}")

    def check_usable(self, tenant_id: str, credential_id: object) -> str:
        """`credentialId` of a session create: 400 unless it names an active credential
        of this tenant (an unknown id and another tenant's read the same)."""
        self._cipher()
        if not isinstance(credential_id, str) or not credential_id:
            raise ApiError(400, "`credentialId` must be a non-empty string")
        row = self.store.get_credential(tenant_id, credential_id)
        if row is None or not row.active:
            raise ApiError(400, f"`credentialId`: no active credential {credential_id[:64]!r}")
        return row.id

    def open(self, tenant_id: str, credential_id: str) -> ModelCredential:
        """The decrypted credential for a sandbox start, its `lastUsedAt` now; 409 when it
        was deleted or deactivated since the session was created, 500 when it does not
        decrypt (ASH_CREDENTIAL_KEY changed)."""
        cipher = self._cipher()
        row = self.store.get_credential(tenant_id, credential_id)
        if row is None or not row.active:
            raise ApiError(409, f"the session's credential {credential_id} was deleted or "
                                "deactivated: the session cannot start a sandbox with it")
        try:
            key = cipher.decrypt(row.secret, _context(row.id, tenant_id, row.type))
        except InvalidTag:
            raise ApiError(500, f"credential {credential_id} does not decrypt with this "
                                f"{KEY_ENV} (it was stored under another key)") from None
        self.store.touch_credential(row.id)
        return ModelCredential(row.type, key)
