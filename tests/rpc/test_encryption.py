"""Encryption at rest of users' sensitive fields: ciphertext in the table, rotation, wrong keys.

The session's shared server runs without keys (plaintext, warned); these
tests start servers of their own with keys on the same database. The RPC
conftest empties the tables before each test.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
import pytest
from cryptography.fernet import Fernet
from faraday.memory.v1 import admin_service_pb2, admin_service_pb2_grpc, registry_pb2

from memory_service import encryption_keys
from memory_service.config import Settings
from memory_service.server import start
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import error_reasons

pytestmark = pytest.mark.asyncio(loop_scope="session")

K1, K2, OTHER = (Fernet.generate_key().decode() for _ in range(3))
SECRET = {
    "name": "Ada Lovelace",
    "school": "Analytical Engine Academy",
    "department": "Mathematics",
    "custom_instructions": "Mention my hearing aid; speak clearly.",
}


@asynccontextmanager
async def _admin(
    app_url: str, keys: str | None
) -> AsyncIterator[admin_service_pb2_grpc.AdminServiceStub]:
    running = await start(TEST_SETTINGS.with_overrides(encryption_keys=keys), app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            yield admin_service_pb2_grpc.AdminServiceStub(ch)
    finally:
        await running.stop(0.5)


async def _upsert(admin: admin_service_pb2_grpc.AdminServiceStub) -> registry_pb2.User:
    return await admin.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(email="ada@school.example.org", is_active=True, **SECRET)
        )
    )


async def _exported_user(
    admin: admin_service_pb2_grpc.AdminServiceStub, user_id: str
) -> registry_pb2.User:
    call = admin.ExportUserData(admin_service_pb2.ExportUserDataRequest(user_id=user_id))
    records = [r async for r in call]
    return records[0].user


async def _raw(database_url: str) -> asyncpg.Record:
    """The users row as stored, read as the table owner."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            "SELECT name, school, department, custom_instructions, encrypted_sensitive_data"
            " FROM users"
        )
        assert row is not None
        return row
    finally:
        await conn.close()


def _assert_sealed(row: asyncpg.Record) -> bytes:
    assert [row[f] for f in SECRET] == [None] * 4
    token = bytes(row["encrypted_sensitive_data"])
    for plain in (token, base64.urlsafe_b64decode(token)):
        for value in SECRET.values():
            assert value.encode() not in plain
    return token


def _cli(keys: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memory_service.cli", *args],
        env={**os.environ, "FARADAY_ENCRYPTION_KEYS": keys},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _same_user(user: registry_pb2.User) -> None:
    assert {f: getattr(user, f) for f in SECRET} == SECRET


async def test_sensitive_fields_are_stored_encrypted_and_read_back(
    app_url: str, database_url: str
) -> None:
    async with _admin(app_url, K1) as admin:
        user = await _upsert(admin)
        _same_user(user)
        _same_user(await _exported_user(admin, user.id))
    token = _assert_sealed(await _raw(database_url))
    assert Fernet(K1).decrypt(token)  # sealed with the configured key


async def test_plaintext_rows_are_sealed_when_a_server_with_keys_starts(
    app_url: str, database_url: str
) -> None:
    async with _admin(app_url, None) as admin:  # no keys: plaintext, as before 0016
        user = await _upsert(admin)
    assert (await _raw(database_url))["name"] == SECRET["name"]
    async with _admin(app_url, K1) as admin:
        _assert_sealed(await _raw(database_url))
        _same_user(await _exported_user(admin, user.id))


async def test_rotation_re_encrypts_with_the_new_key(app_url: str, database_url: str) -> None:
    async with _admin(app_url, K1) as admin:
        user = await _upsert(admin)
    # The new key first, the old one after it: both read, the new one writes.
    done = await asyncio.to_thread(_cli, f"{K2},{K1}", "rotate-keys", "--database-url", app_url)
    assert done.returncode == 0, done.stderr
    assert "re-encrypted 1 users" in done.stdout
    token = _assert_sealed(await _raw(database_url))
    assert Fernet(K2).decrypt(token)
    async with _admin(app_url, K2) as admin:  # the old key can go
        _same_user(await _exported_user(admin, user.id))
    with pytest.raises(ValueError, match="none of the configured keys decrypts"):
        await start(TEST_SETTINGS.with_overrides(encryption_keys=K1), app_url)


async def test_a_wrong_key_stops_the_server_at_start_with_one_line(
    app_url: str, database_url: str
) -> None:
    async with _admin(app_url, K1) as admin:
        await _upsert(admin)
    with pytest.raises(ValueError, match="none of the configured keys decrypts"):
        await start(TEST_SETTINGS.with_overrides(encryption_keys=OTHER), app_url)
    with pytest.raises(ValueError, match="no encryption keys are configured"):
        await start(TEST_SETTINGS, app_url)
    done = await asyncio.to_thread(_cli, OTHER, "serve", "--database-url", app_url, "--port", "0")
    assert done.returncode == 2  # a wrong setting (README: exit statuses)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("memory-service: FARADAY_ENCRYPTION_KEYS: none of")
    assert "Traceback" not in done.stderr


async def test_a_malformed_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="key 2 is not a Fernet key"):
        encryption_keys.cipher(Settings(encryption_keys=f"{K1},not-a-key"))


async def test_a_row_under_an_unknown_key_is_failed_precondition_not_internal(
    app_url: str,
) -> None:
    # Both servers start on an empty table, so neither refuses; then one
    # writes a row only it can read.
    async with _admin(app_url, K1) as reader, _admin(app_url, OTHER) as writer:
        user = await _upsert(writer)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _exported_user(reader, user.id)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reasons(caught.value) == ["UNDECRYPTABLE_DATA"]
    assert SECRET["name"] not in (caught.value.details() or "")
