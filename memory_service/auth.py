"""Credentials -> Principal: service tokens (stored as hashes) and user-scoped JWTs.

Service tokens are random secrets handed to platform backends. The server
only ever holds their SHA-256 (a fast hash is enough for 256-bit random
secrets: there is nothing to brute-force), loaded from a JSON file:

    {"tokens": [{"name": "assistant-backend", "sha256": "<hex>",
                 "scopes": ["memories:read", "memories:write", "lessons:read"],
                 "assistant_profile_ids": [1, 2]}]}

`assistant_profile_ids` is optional (absent or null: every profile); a token
with the `admin` scope cannot have it, since admin RPCs act on every profile.
`memory-service new-token` prints a fresh token and its entry.

An empty, ambiguous or unusable configuration is refused at start-up with a
ValueError naming the variable and file: a tokens file with no tokens, a
token without scopes, an empty or non-integer profile list, an unknown key in
an entry, two tokens with the same name (they would share rate buckets,
idempotency keys and audit identity) or the same hash, a public key file
that is not a supported PEM public key.

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
import re
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
_TOKENS_VAR = "FARADAY_SERVICE_TOKENS_FILE"
_KEY_VAR = "FARADAY_JWT_PUBLIC_KEY_FILE"
_ENTRY_KEYS = frozenset({"name", "sha256", "scopes", "assistant_profile_ids"})
_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_PROFILE_ID = 2**31 - 1  # assistant_profiles.id is a PostgreSQL integer
# What a caller is told when its JWT is refused: fixed texts, never PyJWT's
# (or the key library's) exception text. Anything not listed: "invalid token".
_JWT_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token has expired"),
    (jwt.ImmatureSignatureError, "token is not valid yet"),
    (jwt.InvalidIssuerError, "token issuer is not accepted"),
    (jwt.InvalidAudienceError, "token audience is not accepted"),
    (jwt.MissingRequiredClaimError, "token lacks a required claim"),
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "fmt_" + secrets.token_urlsafe(32)


def _scopes(values: Any, where: str) -> frozenset[Scope]:
    known = ", ".join(s.value for s in Scope)
    try:
        scopes = frozenset(Scope(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: scopes must be a list of {known}") from exc
    if not scopes:
        raise ValueError(f"{where}: the token grants no scopes (give one or more of {known})")
    return scopes


def _profile_ids(values: Any, where: str) -> frozenset[int] | None:
    if values is None:
        return None
    if (
        not isinstance(values, list)
        or not values
        or not all(
            isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= _MAX_PROFILE_ID
            for p in values
        )
    ):
        raise ValueError(
            f"{where}: 'assistant_profile_ids' must be a non-empty list of profile ids"
            f" (integers 1..{_MAX_PROFILE_ID}); leave it out to allow every profile"
        )
    return frozenset(values)


def service_token_entry(entry: Any, where: str) -> tuple[str, Principal]:
    """One entry of the tokens file -> (its SHA-256, its principal); ValueError if unusable."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: must be an object")
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:  # a misspelt 'assistant_profile_ids' would silently widen the token
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(_ENTRY_KEYS)}")
    name, digest = entry.get("name"), entry.get("sha256")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: needs a non-empty 'name'")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest.lower()):
        raise ValueError(f"{where}: 'sha256' must be 64 hex digits")
    scopes = _scopes(entry.get("scopes", []), where)
    profiles = _profile_ids(entry.get("assistant_profile_ids"), where)
    if Scope.ADMIN in scopes and profiles is not None:
        # Admin RPCs act on every profile's data: a profile limit would be a false promise.
        raise ValueError(
            f"{where}: a token with the 'admin' scope cannot be limited to assistant profiles"
        )
    principal = Principal(kind="service", name=name, scopes=scopes, assistant_profile_ids=profiles)
    return digest.lower(), principal


def load_service_tokens(path: Path) -> dict[str, Principal]:
    """Token hash -> principal; a file that is malformed or lets nobody in raises ValueError."""
    try:
        entries = json.loads(path.read_text())["tokens"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{_TOKENS_VAR}: cannot read service tokens from {path}: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise ValueError(
            f"{_TOKENS_VAR}: {path} lists no tokens ('tokens' must be a non-empty list),"
            " so it would authenticate nobody; add entries made by `memory-service new-token`"
            " or unset the variable"
        )
    tokens: dict[str, Principal] = {}
    names: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{_TOKENS_VAR}: {path}: tokens[{i}]"
        digest, principal = service_token_entry(entry, where)
        # The name is the caller's identity for rate limits, idempotency keys and the audit log.
        if principal.name in names:
            raise ValueError(f"{where}: the name {principal.name!r} is used twice")
        if digest in tokens:
            raise ValueError(f"{where}: its sha256 is already listed, for {tokens[digest].name!r}")
        names.add(principal.name)
        tokens[digest] = principal
    return tokens


def load_jwt_public_key(path: Path) -> tuple[_PublicKey, str]:
    """The platform's public key and the one algorithm it verifies; ValueError if unusable."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{_KEY_VAR}: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
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
        # Off only when nothing is configured: every loader refuses a
        # configuration that would let nobody in.
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
