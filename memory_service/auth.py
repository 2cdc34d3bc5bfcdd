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
RS256/ES256 with the platform's public key. `exp`, `sub` (the user's UUID)
are required; `iss` and `aud` are checked when configured. An optional
`scope` claim (space-separated) narrows the user scopes; `admin` is never
granted to a user token.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from memory_service.config import Settings
from memory_service.domain.errors import Unauthenticated
from memory_service.domain.principal import LOCAL, USER_SCOPES, Principal, Scope

JWT_LEEWAY_SECONDS = 30


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


@dataclass(frozen=True)
class _JwtConfig:
    key: Any
    algorithms: tuple[str, ...]
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
                settings.jwt_hs256_secret, ("HS256",), settings.jwt_issuer, settings.jwt_audience
            )
        elif settings.jwt_public_key_file:
            try:
                key = settings.jwt_public_key_file.read_text()
            except OSError as exc:
                raise ValueError(f"cannot read {settings.jwt_public_key_file}: {exc}") from exc
            config = _JwtConfig(key, ("RS256", "ES256"), settings.jwt_issuer, settings.jwt_audience)
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
            return self._user(token, self._jwt)
        raise Unauthenticated("unknown or invalid token")

    @staticmethod
    def _user(token: str, config: _JwtConfig) -> Principal:
        try:
            claims = jwt.decode(
                token,
                config.key,
                algorithms=list(config.algorithms),
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
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc
        try:
            user_id = uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise Unauthenticated("token subject must be the user's UUID") from exc
        scopes = USER_SCOPES
        if "scope" in claims:
            requested = {s for s in str(claims["scope"]).split() if s}
            scopes = frozenset(s for s in USER_SCOPES if s.value in requested)
        return Principal(kind="user", name=str(user_id), scopes=scopes, user_id=user_id)
