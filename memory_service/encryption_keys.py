"""Where the encryption keys come from, and `memory-service rotate-keys | new-encryption-key`.

Keys are Fernet keys (storage/encryption.py), from FARADAY_ENCRYPTION_KEYS
or FARADAY_ENCRYPTION_KEYS_FILE (comma- or line-separated, the current key
first). The embedded default needs no configuration: on first start it
writes a fresh key to `<data_dir>.encryption-keys` (mode 0600), beside the
data directory rather than in it, so a copy of the database files or a
`memory-service backup` does not carry its own key.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from memory_service.config import InvalidSettings, Settings
from memory_service.domain.errors import Undecryptable
from memory_service.storage.encryption import FieldCipher

logger = logging.getLogger(__name__)


def embedded_key_file(data_dir: Path) -> Path:
    data_dir = data_dir.expanduser().resolve()
    return data_dir.with_name(data_dir.name + ".encryption-keys")


def for_embedded(settings: Settings) -> Settings:
    """The settings with the embedded database's key file, created on first use, unless
    keys are configured."""
    if settings.encryption_keys or settings.encryption_keys_file:
        return settings
    path = embedded_key_file(settings.data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under a temporary name, then linked into place:
        # link() fails if another process made the file first, and a reader
        # never sees a half-written key.
        fd, partial = tempfile.mkstemp(prefix=".keys-", dir=path.parent)
        try:
            os.write(fd, Fernet.generate_key() + b"\n")
            os.fsync(fd)
            os.close(fd)
            try:
                os.link(partial, path)
                # The start-up summary names the file on every start.
                logger.debug("generated the embedded database's encryption key: %s", path)
            except FileExistsError:
                pass
        finally:
            os.unlink(partial)
    return settings.with_overrides(encryption_keys_file=path)


def cipher(settings: Settings) -> FieldCipher | None:
    """The configured keys; None if none; ValueError (naming the setting) if unusable."""
    if settings.encryption_keys and settings.encryption_keys_file:
        raise ValueError("set FARADAY_ENCRYPTION_KEYS or FARADAY_ENCRYPTION_KEYS_FILE, not both")
    if settings.encryption_keys:
        return FieldCipher.from_text(
            settings.encryption_keys.get_secret_value(), "FARADAY_ENCRYPTION_KEYS"
        )
    if settings.encryption_keys_file:
        path = settings.encryption_keys_file
        try:
            text = path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"FARADAY_ENCRYPTION_KEYS_FILE: cannot read {path}: {exc}") from None
        return FieldCipher.from_text(text, f"FARADAY_ENCRYPTION_KEYS_FILE ({path})")
    return None


def add_parsers(commands: Any, add_setting_flags: Any) -> None:
    commands.add_parser(
        "new-encryption-key",
        help="print a fresh encryption key (for FARADAY_ENCRYPTION_KEYS)",
        description="Print a new random Fernet key. To rotate, put it first in"
        " FARADAY_ENCRYPTION_KEYS, keep the old keys after it, restart the servers, then run"
        " `memory-service rotate-keys`; drop an old key only after that (docs/security.md).",
    )
    rotate = commands.add_parser(
        "rotate-keys",
        help="re-encrypt users' sensitive fields with the current (first) key",
        description="Encrypt every users row still in plaintext, and re-encrypt with the first"
        " key of FARADAY_ENCRYPTION_KEYS every row encrypted with an older one. Safe while"
        " the service runs, and to re-run. Afterwards the older keys may be removed, once no"
        " backup still needed was encrypted with them (docs/security.md).",
    )
    add_setting_flags(
        rotate,
        only=(
            "database_url",
            "platform_database_url",
            "migration_database_url",
            "data_dir",
            "migrate_on_start",
            "connect_timeout_seconds",
            "log_level",
            "encryption_keys",
            "encryption_keys_file",
        ),
    )


def new_key() -> None:
    print(Fernet.generate_key().decode())


async def rotate(settings: Settings, app_url: str, platform_url: str) -> None:
    """`rotate-keys`: seal plaintext rows, re-encrypt old-key rows; one line of counts."""
    import sys

    from memory_service.server import tool_database
    from memory_service.storage import encryption

    try:
        keys = cipher(settings)
    except ValueError as exc:
        raise InvalidSettings([str(exc)]) from exc
    if keys is None:
        raise InvalidSettings(["FARADAY_ENCRYPTION_KEYS: no encryption keys to rotate to"])
    db = await tool_database(settings, app_url, platform_url)
    try:
        try:
            await encryption.check_keys(db, keys)
        except ValueError as exc:
            raise InvalidSettings([str(exc)]) from exc
        try:
            sealed = await encryption.seal_plaintext_users(db, keys)
            rotated = await encryption.reencrypt_users(db, keys)
        except Undecryptable as exc:  # a row under a key no longer configured
            sys.exit(f"rotate-keys failed: {exc}")
    finally:
        await db.close()
    print(f"encrypted {sealed} plaintext users, re-encrypted {rotated} users with the current key")
