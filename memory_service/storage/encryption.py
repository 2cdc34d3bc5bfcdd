"""Encryption at rest of the users' sensitive fields (docs/security.md, "Encryption at rest").

The application encrypts; PostgreSQL only ever sees ciphertext and never a
key (pgcrypto would put the key in every statement, and so in the server's
logs and pg_stat_statements). Fernet (AES-128-CBC with HMAC-SHA256, from
`cryptography`) is authenticated: a tampered or wrongly-keyed value fails to
decrypt instead of reading as garbage. MultiFernet holds every configured
key: the first encrypts, any decrypts, so keys rotate without downtime.

Sealed: a user's name, school, department and custom instructions, as one
JSON object in users.encrypted_sensitive_data (the column the platform's
documentation names), with the plaintext columns NULL. Rows written before
encryption (or by a server without keys) keep their plaintext columns and a
NULL encrypted_sensitive_data until `seal_plaintext_users` or
`memory-service rotate-keys` seals them; readers accept both.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from memory_service.domain.errors import Undecryptable
from memory_service.storage import session
from memory_service.storage.database import Database

# users' columns sealed into encrypted_sensitive_data, in this order.
SEALED_USER_FIELDS = ("name", "school", "department", "custom_instructions")

# Rows sealed or re-encrypted per transaction.
BATCH_ROWS = 500


class FieldCipher:
    """The configured keys: seal and open a row's sensitive fields."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("no encryption keys")
        self._current = Fernet(keys[0])
        self._all = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def from_text(cls, text: str, source: str) -> FieldCipher:
        """Keys separated by commas or new lines, the current first; ValueError names `source`."""
        keys = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]
        if not keys:
            raise ValueError(f"{source}: no keys")
        for n, key in enumerate(keys, start=1):
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(
                    f"{source}: key {n} is not a Fernet key (32 url-safe base64-encoded bytes;"
                    " make one with `memory-service new-encryption-key`)"
                ) from None
        return cls([k.encode() for k in keys])

    def seal(self, fields: dict[str, Any]) -> bytes:
        return self._current.encrypt(json.dumps(fields, separators=(",", ":")).encode())

    def open(self, token: bytes) -> dict[str, Any]:
        try:
            opened: dict[str, Any] = json.loads(self._all.decrypt(token))
        except InvalidToken:
            raise Undecryptable() from None
        return opened

    def is_current(self, token: bytes) -> bool:
        try:
            self._current.decrypt(token)
        except InvalidToken:
            return False
        return True

    def rotate(self, token: bytes) -> bytes:
        try:
            return self._all.rotate(token)
        except InvalidToken:
            raise Undecryptable() from None


def sealed_fields(cipher: FieldCipher | None, values: dict[str, Any]) -> dict[str, Any]:
    """A user's SEALED_USER_FIELDS as columns to write: ciphertext, or plaintext without keys."""
    if cipher is None:
        return {**values, "encrypted_sensitive_data": None}
    sealed = cipher.seal({f: values[f] for f in SEALED_USER_FIELDS})
    return {**values, **dict.fromkeys(SEALED_USER_FIELDS), "encrypted_sensitive_data": sealed}


def opened_fields(cipher: FieldCipher | None, row: Any) -> dict[str, Any]:
    """A users row's SEALED_USER_FIELDS in plaintext (legacy rows read as they are)."""
    token = row["encrypted_sensitive_data"]
    if token is None:
        return {f: row[f] for f in SEALED_USER_FIELDS}
    if cipher is None:
        raise Undecryptable()
    opened = cipher.open(bytes(token))
    return {f: opened.get(f) for f in SEALED_USER_FIELDS}


_SAMPLE = """
SELECT encrypted_sensitive_data FROM users
WHERE encrypted_sensitive_data IS NOT NULL ORDER BY updated_at DESC LIMIT 1
"""

_PLAINTEXT_BATCH = f"""
SELECT id, {", ".join(SEALED_USER_FIELDS)} FROM users
WHERE encrypted_sensitive_data IS NULL AND id > $1 ORDER BY id LIMIT {BATCH_ROWS}
FOR UPDATE SKIP LOCKED
"""

_SEALED_BATCH = f"""
SELECT id, encrypted_sensitive_data FROM users
WHERE encrypted_sensitive_data IS NOT NULL AND id > $1 ORDER BY id LIMIT {BATCH_ROWS}
FOR UPDATE
"""

# Only rows still as read (a concurrent UpsertUser may have rewritten one).
_SEAL = f"""
UPDATE users SET encrypted_sensitive_data = s.token,
    {", ".join(f"{f} = NULL" for f in SEALED_USER_FIELDS)}
FROM unnest($1::uuid[], $2::bytea[]) AS s(id, token)
WHERE users.id = s.id AND users.encrypted_sensitive_data IS NULL
"""

_REENCRYPT = """
UPDATE users SET encrypted_sensitive_data = s.token
FROM unnest($1::uuid[], $2::bytea[]) AS s(id, token)
WHERE users.id = s.id
"""


async def check_keys(db: Database, cipher: FieldCipher | None) -> None:
    """Raise ValueError (a configuration error) when the keys cannot read the stored rows.

    One sealed row is tried (the newest): a wrong key, or no key with sealed
    rows, stops the server at start-up rather than failing every call.
    """
    with session.acting_as(session.ALL_USERS):
        row = await db.fetchrow(_SAMPLE)
    if row is None:
        return
    if cipher is None:
        raise ValueError(
            "users' data is encrypted but no encryption keys are configured: set"
            " FARADAY_ENCRYPTION_KEYS (or FARADAY_ENCRYPTION_KEYS_FILE) to the keys it was"
            " encrypted with"
        )
    try:
        cipher.open(bytes(row["encrypted_sensitive_data"]))
    except Undecryptable:
        raise ValueError(
            "FARADAY_ENCRYPTION_KEYS: none of the configured keys decrypts the stored users'"
            " data (a wrong key, or the key that encrypted it was removed)"
        ) from None


async def seal_plaintext_users(db: Database, cipher: FieldCipher) -> int:
    """Encrypt every user row still in plaintext; return how many were sealed.

    Safe to run from several processes at once: each batch locks its rows
    (SKIP LOCKED) and the UPDATE skips rows sealed meanwhile.
    """
    done = 0
    last = uuid.UUID(int=0)
    with session.acting_as(session.ALL_USERS):
        while True:
            async with db.connection(audited=False) as conn:
                rows = await conn.fetch(_PLAINTEXT_BATCH, last)
                if not rows:
                    return done
                tokens = [cipher.seal({f: r[f] for f in SEALED_USER_FIELDS}) for r in rows]
                await conn.execute(_SEAL, [r["id"] for r in rows], tokens)
            done += len(rows)
            last = rows[-1]["id"]


async def reencrypt_users(db: Database, cipher: FieldCipher) -> int:
    """Re-encrypt with the current key every sealed row under an older one; return how many."""
    done = 0
    last = uuid.UUID(int=0)
    with session.acting_as(session.ALL_USERS):
        while True:
            async with db.connection(audited=False) as conn:
                rows = await conn.fetch(_SEALED_BATCH, last)
                if not rows:
                    return done
                stale = [r for r in rows if not cipher.is_current(bytes(r[1]))]
                if stale:
                    await conn.execute(
                        _REENCRYPT,
                        [r["id"] for r in stale],
                        [cipher.rotate(bytes(r[1])) for r in stale],
                    )
            done += len(stale)
            last = rows[-1]["id"]
