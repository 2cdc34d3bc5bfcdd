"""Credential configurations: the unusable ones are refused at start-up, and no JWT breaks out.

Every configuration is tried on a real server (`server.start`) and through
the real command line in a process of its own, as an operator would start
it; every hostile JWT is sent over a real channel to a server holding an RSA
or an EC public key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from faraday.memory.v1 import memory_service_pb2, memory_service_pb2_grpc

from memory_service.auth import load_service_tokens, new_token, token_hash
from memory_service.server import start
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.test_auth import AUDIENCE, ISSUER, bearer

pytestmark = pytest.mark.asyncio(loop_scope="session")

REPO = Path(__file__).resolve().parents[2]
READER = ["memories:read"]
ADMIN = ["memories:read", "memories:write", "lessons:read", "admin"]
# Everything a refused JWT may be told: fixed texts, never an exception's.
JWT_REFUSALS = {
    "invalid token",
    "token has expired",
    "token is not valid yet",
    "token issuer is not accepted",
    "token audience is not accepted",
    "token lacks a required claim",
}


def _entry(name: str, scopes: list[str] = READER, **extra: object) -> dict[str, object]:
    """A tokens-file entry for a fresh token."""
    return {"name": name, "sha256": token_hash(new_token()), "scopes": scopes, **extra}


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _certificate_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _duplicate_hash() -> dict[str, object]:
    first, second = _entry("backend"), _entry("reporting")
    second["sha256"] = first["sha256"]
    return {"tokens": [first, second]}


# (what is wrong, tokens document, what the refusal says).
TOKEN_FILES: list[tuple[str, object, str]] = [
    ("empty tokens list", {"tokens": []}, "lists no tokens"),
    ("tokens not a list", {"tokens": {"name": "backend"}}, "lists no tokens"),
    ("duplicate names", {"tokens": [_entry("backend"), _entry("backend")]}, "used twice"),
    ("duplicate hashes", _duplicate_hash(), "already listed"),
    ("no scopes", {"tokens": [_entry("backend", [])]}, "no scopes"),
    ("scopes left out", {"tokens": [{"name": "backend", "sha256": "a" * 64}]}, "no scopes"),
    (
        "empty profile list",
        {"tokens": [_entry("backend", assistant_profile_ids=[])]},
        "assistant_profile_ids",
    ),
    (
        "profile id 0",
        {"tokens": [_entry("backend", assistant_profile_ids=[0])]},
        "assistant_profile_ids",
    ),
    (
        "profile id 2**31",
        {"tokens": [_entry("backend", assistant_profile_ids=[2**31])]},
        "assistant_profile_ids",
    ),
    (
        "profile id a string",
        {"tokens": [_entry("backend", assistant_profile_ids=["1"])]},
        "assistant_profile_ids",
    ),
    (
        "admin limited to a profile",
        {"tokens": [_entry("ops", ADMIN, assistant_profile_ids=[1])]},
        "'admin' scope",
    ),
    ("misspelt key", {"tokens": [_entry("backend", assistant_profile_id=[1])]}, "unknown keys"),
]
# (what is wrong, contents of FARADAY_JWT_PUBLIC_KEY_FILE, what the refusal says).
KEY_FILES: list[tuple[str, Callable[[], bytes], str]] = [
    ("garbage key file", lambda: b"hello\n", "no readable PEM public key"),
    ("empty key file", lambda: b"", "no readable PEM public key"),
    (
        "private key instead of public",
        lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        "no readable PEM public key",
    ),
    (
        "certificate instead of key",
        lambda: _certificate_pem(ec.generate_private_key(ec.SECP256R1())),
        "no readable PEM public key",
    ),
    ("RSA 1024", lambda: _public_pem(rsa.generate_private_key(65537, 1024)), "2048 bits"),
    ("EC P-384", lambda: _public_pem(ec.generate_private_key(ec.SECP384R1())), "P-256"),
    (
        "Ed25519",
        lambda: (
            ed25519.Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ),
        "P-256",
    ),
]
CASES = [(name, "tokens", doc, says) for name, doc, says in TOKEN_FILES] + [
    (name, "key", pem, says) for name, pem, says in KEY_FILES
]


def _write_case(tmp_path: Path, kind: str, content: object) -> tuple[dict[str, object], str, Path]:
    """The case's file: (settings overrides, the variable that must be named, the file)."""
    if kind == "tokens":
        path = tmp_path / "tokens.json"
        path.write_text(json.dumps(content))
        return {"service_tokens_file": path}, "FARADAY_SERVICE_TOKENS_FILE", path
    path = tmp_path / "platform.pem"
    path.write_bytes(content())  # type: ignore[operator]
    return {"jwt_public_key_file": path}, "FARADAY_JWT_PUBLIC_KEY_FILE", path


@pytest.mark.parametrize(("case", "kind", "content", "says"), CASES, ids=[c[0] for c in CASES])
async def test_start_refuses_an_unusable_credential_config(
    case: str, kind: str, content: object, says: str, tmp_path: Path, app_url: str
) -> None:
    overrides, variable, path = _write_case(tmp_path, kind, content)
    with pytest.raises(ValueError) as caught:
        running = await start(TEST_SETTINGS.with_overrides(**overrides), app_url)
        await running.stop(0)  # only reached when the configuration was wrongly accepted
    message = str(caught.value)
    assert variable in message and str(path) in message and says in message
    assert "\n" not in message


async def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a process of its own, from this checkout."""
    try:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "memory_service.cli", *args],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as timeout:  # it started serving: the config was accepted
        raise AssertionError(f"still running after 30 s: {timeout.stdout!r}") from timeout


def _assert_one_line_refusal(result: subprocess.CompletedProcess[str], *named: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for text in named:
        assert text in lines[0]
    return lines[0]


async def _serve_cli(app_url: str, *flags: str) -> subprocess.CompletedProcess[str]:
    # A database URL, so that a wrongly accepted configuration serves on the
    # test database (and times out) instead of starting an embedded PostgreSQL.
    return await _cli(
        "serve",
        "--port",
        "0",
        "--sweep-interval-seconds",
        "0",
        *flags,
        env={"FARADAY_DATABASE_URL": app_url},
    )


@pytest.mark.parametrize(("case", "kind", "content", "says"), CASES, ids=[c[0] for c in CASES])
async def test_cli_serve_refuses_an_unusable_credential_config_in_one_line(
    case: str, kind: str, content: object, says: str, tmp_path: Path, app_url: str
) -> None:
    overrides, variable, path = _write_case(tmp_path, kind, content)
    ((setting, value),) = overrides.items()
    result = await _serve_cli(app_url, "--" + setting.replace("_", "-"), str(value))
    line = _assert_one_line_refusal(result, "memory-service:", variable, str(path), says)
    print(f"{case}: {line}")


async def test_all_interfaces_with_an_empty_tokens_file_is_refused(
    tmp_path: Path, app_url: str
) -> None:
    # An empty tokens file used to switch auth off yet count as "configured",
    # so the listen guard let the server open to every caller on the network.
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": []}))
    settings = TEST_SETTINGS.with_overrides(host="0.0.0.0", service_tokens_file=path)
    with pytest.raises(ValueError, match="FARADAY_SERVICE_TOKENS_FILE"):
        running = await start(settings, app_url)
        await running.stop(0)
    result = await _serve_cli(app_url, "--host", "0.0.0.0", "--service-tokens-file", str(path))
    _assert_one_line_refusal(result, "memory-service:", "FARADAY_SERVICE_TOKENS_FILE")


async def test_new_token_refuses_what_the_server_would_refuse(tmp_path: Path) -> None:
    admin_limited = await _cli(
        "new-token", "--name", "ops", "--scopes", "admin", "--assistant-profile-ids", "1"
    )
    assert "cannot be limited to assistant profiles" in _assert_one_line_refusal(admin_limited)
    out_of_range = await _cli("new-token", "--name", "x", "--assistant-profile-ids", str(2**31))
    assert "assistant_profile_ids" in _assert_one_line_refusal(out_of_range)
    # The flag without ids used to mean "every profile"; argparse now refuses it.
    no_ids = await _cli("new-token", "--name", "x", "--assistant-profile-ids")
    assert no_ids.returncode == 2
    # What it does print, the server loads.
    entries = []
    for flags in ([], ["--assistant-profile-ids", "3", "4"], ["--scopes", "admin"]):
        result = await _cli("new-token", "--name", f"caller-{len(entries)}", *flags)
        assert result.returncode == 0, result.stderr
        entries.append(json.loads(result.stdout.splitlines()[-1]))
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}))
    loaded = {p.name: p.assistant_profile_ids for p in load_service_tokens(path).values()}
    assert loaded == {"caller-0": None, "caller-1": frozenset({3, 4}), "caller-2": None}


# --- Hostile JWTs against public keys --------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hand_made(header: object, claims: object, secret: bytes = b"") -> str:
    """A JWT built by hand: any header, HMAC-SHA256 over it with `secret`."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _claims(user_id: str, **overrides: object) -> dict[str, object]:
    claims: dict[str, object] = {
        "sub": user_id,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": int(time.time()) + 300,
    }
    return claims | overrides


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_hostile_jwts_are_unauthenticated_with_a_fixed_message(
    algorithm: str, tmp_path: Path, app_url: str
) -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    key, other, other_algorithm = (
        (rsa_key, ec_key, "ES256") if algorithm == "RS256" else (ec_key, rsa_key, "RS256")
    )
    key_file = tmp_path / "platform.pem"
    key_file.write_bytes(_public_pem(key))
    user = str(uuid.uuid4())
    hostile = {
        # The other key type, with the header saying so: used to escape as UNKNOWN.
        f"{other_algorithm} token": jwt.encode(_claims(user), other, other_algorithm),
        "alg none": jwt.encode(_claims(user), None, "none"),
        # Key confusion: the public key used as an HMAC secret.
        "HS256 signed with the public key": _hand_made(
            {"alg": "HS256", "typ": "JWT"}, _claims(user), _public_pem(key)
        ),
        "undecodable header": "a.b.c",
        "header a list": _hand_made([algorithm], _claims(user)),
        "alg a list": _hand_made({"alg": [algorithm]}, _claims(user)),
        "kid an object": _hand_made({"alg": algorithm, "kid": {"x": 1}}, _claims(user)),
        "claims a string": _hand_made({"alg": algorithm}, "sub"),
        "expired": jwt.encode(_claims(user, exp=int(time.time()) - 3600), key, algorithm),
        "wrong audience": jwt.encode(_claims(user, aud="someone-else"), key, algorithm),
        "exp not a number": jwt.encode(_claims(user, exp="tomorrow"), key, algorithm),
    }
    settings = TEST_SETTINGS.with_overrides(
        jwt_public_key_file=key_file, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    running = await start(settings, app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
            stub = memory_service_pb2_grpc.MemoryServiceStub(ch)
            get = memory_service_pb2.GetMemoryRequest(id=1)
            # The genuine token gets through (NOT_FOUND: nothing stored), so the
            # refusals below are about the tokens, not a server that refuses all.
            genuine = jwt.encode(_claims(user), key, algorithm)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetMemory(get, metadata=bearer(genuine))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            answers = {}
            for name, token in hostile.items():
                try:
                    await stub.GetMemory(get, metadata=bearer(token))
                    answers[name] = ("OK", "")
                except grpc.aio.AioRpcError as error:
                    answers[name] = (error.code().name, error.details())
    finally:
        await running.stop(0.5)
    print(f"\n{algorithm} key: {answers}")
    for name, (code, details) in answers.items():
        assert code == "UNAUTHENTICATED", (name, code, details)
        assert details in JWT_REFUSALS, (name, details)
    assert answers["expired"][1] == "token has expired"
    assert answers["wrong audience"][1] == "token audience is not accepted"
