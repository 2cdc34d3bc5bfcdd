"""Credentials -> Principal: service tokens (stored as hashes) and user-scoped JWTs.

Service tokens are random secrets handed to platform backends. The server
only ever holds their SHA-256 (a fast hash is enough for 256-bit random
secrets: there is nothing to brute-force), loaded from a JSON file:

    {"tokens": [{"name": "assistant-backend", "sha256": "<hex>",
                 "scopes": ["memories:read", "memories:write", "lessons:read"],
                 "assistant_profile_ids": [1, 2]}]}

`assistant_profile_ids` is optional (absent: every profile).
`memory-service new-token` prints a fresh token and its entry.

User-scoped JWTs are signed by the platform: HS256 with a shared secret, or
with the platform's public key, whose type alone decides the algorithm (RSA
of 2048 bits or more: RS256; EC P-256: ES256), so a token cannot choose one.
`exp`, `sub` (the user's UUID) are required; `iss` and `aud` are checked when
configured. An optional `scope` claim (space-separated) narrows the user
scopes; `admin` is never granted to a user token. Whatever goes wrong while
verifying a token, the caller gets Unauthenticated with a fixed message,
never an exception's text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from memory_service.config import Settings
from memory_service.domain.errors import Unauthenticated
from memory_service.domain.principal import LOCAL, USER_SCOPES, Principal, Scope

logger = logging.getLogger(__name__)

JWT_LEEWAY_SECONDS = 30
_PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
_KEY_VAR = "FARADAY_JWT_PUBLIC_KEY_FILE"
# What a caller is told when its JWT is refused: fixed texts, never PyJWT's
# (or the key library's) exception text. Anything not listed: "invalid token".
_JWT_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim"),
)


def auth_configured(settings: Settings) -> bool:
    return bool(
        settings.service_tokens_file or settings.jwt_hs256_secret or settings.jwt_public_key_file
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "fmt_" + secrets.token_urlsafe(32)


def _scopes(values: Any, where: str) -> frozenset[Scope]:
    try:
        return frozenset(Scope(v) for v in values)
    except (TypeError, ValueError) as exc:
        known = ", ".join(s.value for s in Scope)
        raise ValueError(f"{where}: scopes must be a list of {known}") from exc


def load_service_tokens(path: Path) -> dict[str, Principal]:
    """Token hash -> principal; a malformed file raises ValueError naming the problem."""
    try:
        document = json.loads(path.read_text())
        entries = document["tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read service tokens from {path}: {exc}") from exc
    tokens: dict[str, Principal] = {}
    for i, entry in enumerate(entries):
        where = f"{path}: tokens[{i}]"
        try:
            name, digest = str(entry["name"]), str(entry["sha256"]).lower()
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{where}: needs 'name' and 'sha256'") from exc
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where}: 'sha256' must be 64 hex digits")
        profiles = entry.get("assistant_profile_ids")
        tokens[digest] = Principal(
            kind="service",
            name=name,
            scopes=_scopes(entry.get("scopes", []), where),
            assistant_profile_ids=frozenset(int(p) for p in profiles) if profiles else None,
        )
    return tokens


def load_jwt_public_key(path: Path) -> tuple[_PublicKey, str]:
    """The platform's public key and the one algorithm it verifies; ValueError if unusable."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(
            f"{_KEY_VAR}: {path} holds no readable PEM public key (-----BEGIN PUBLIC KEY-----)"
        ) from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError(
        f"{_KEY_VAR}: {path} must hold an RSA key of 2048 bits or more (RS256)"
        " or an EC P-256 key (ES256)"
    )


@dataclass(frozen=True)
class _JwtConfig:
    key: str | _PublicKey  # the HS256 secret, or the platform's public key
    algorithm: str  # the one algorithm the key verifies: no token picks another
    issuer: str | None
    audience: str | None


class Authenticator:
    """Turns the `authorization` metadata value into a Principal, or raises Unauthenticated."""

    def __init__(self, service_tokens: dict[str, Principal], jwt_config: _JwtConfig | None) -> None:
        self._service_tokens = service_tokens
        self._jwt = jwt_config
        self.enabled = bool(service_tokens) or jwt_config is not None

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        tokens = (
            load_service_tokens(settings.service_tokens_file)
            if settings.service_tokens_file
            else {}
        )
        config = None
        if settings.jwt_hs256_secret and settings.jwt_public_key_file:
            raise ValueError(
                "set FARADAY_JWT_HS256_SECRET or FARADAY_JWT_PUBLIC_KEY_FILE, not both"
            )
        if settings.jwt_hs256_secret:
            if len(settings.jwt_hs256_secret) < 32:
                raise ValueError("FARADAY_JWT_HS256_SECRET must be at least 32 characters")
            config = _JwtConfig(
                settings.jwt_hs256_secret, "HS256", settings.jwt_issuer, settings.jwt_audience
            )
        elif settings.jwt_public_key_file:
            key, algorithm = load_jwt_public_key(settings.jwt_public_key_file)
            config = _JwtConfig(key, algorithm, settings.jwt_issuer, settings.jwt_audience)
        return cls(tokens, config)

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return LOCAL
        if not authorization:
            raise Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization metadata must be 'Bearer <token>'")
        principal = self._service_tokens.get(token_hash(token))
        if principal is not None:
            return principal
        if self._jwt is not None and token.count(".") == 2:
            try:
                return _user(token, self._jwt)
            except Unauthenticated:
                raise
            except Exception as exc:  # whatever verifying raised: the caller gets a fixed text
                logger.info("user token refused: %s: %s", type(exc).__name__, exc)
                message = next(
                    (text for kind, text in _JWT_REFUSALS if isinstance(exc, kind)), "invalid token"
                )
                raise Unauthenticated(message) from exc
        raise Unauthenticated("unknown or invalid token")


def _user(token: str, config: _JwtConfig) -> Principal:
    claims = jwt.decode(
        token,
        config.key,
        algorithms=[config.algorithm],
        issuer=config.issuer,
        audience=config.audience,
        leeway=JWT_LEEWAY_SECONDS,
        options={
            "require": ["exp", "sub"]
            + (["iss"] if config.issuer else [])
            + (["aud"] if config.audience else []),
            "verify_aud": config.audience is not None,
        },
    )
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except ValueError as exc:
        raise Unauthenticated("token subject must be the user's UUID") from exc
    scopes = USER_SCOPES
    if "scope" in claims:
        requested = {s for s in str(claims["scope"]).split() if s}
        scopes = frozenset(s for s in USER_SCOPES if s.value in requested)
    return Principal(kind="user", name=str(user_id), scopes=scopes, user_id=user_id)
