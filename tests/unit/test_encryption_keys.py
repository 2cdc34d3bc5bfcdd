"""The embedded default's key file: generated once, private, beside the data directory."""

from __future__ import annotations

from pathlib import Path

from cryptography.fernet import Fernet

from memory_service import encryption_keys
from memory_service.config import Settings


def test_the_embedded_default_generates_a_private_key_file_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "pgdata")
    first = encryption_keys.for_embedded(settings)
    path = first.encryption_keys_file
    assert path == tmp_path / "pgdata.encryption-keys"
    assert path is not None and path.stat().st_mode & 0o777 == 0o600
    key = path.read_bytes()
    assert encryption_keys.for_embedded(settings).encryption_keys_file == path
    assert path.read_bytes() == key  # not replaced on the next start
    assert encryption_keys.cipher(first) is not None
    given = settings.with_overrides(encryption_keys=Fernet.generate_key().decode())
    assert encryption_keys.for_embedded(given).encryption_keys_file is None
