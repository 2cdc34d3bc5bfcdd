"""Settings: one typed object, read once at start-up from the environment and CLI flags.

Every setting has an environment variable FARADAY_<NAME upper-cased> and a
documented default; `memory-service serve --help` lists the flags. The table
in README.md is the user-facing copy of this file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "faraday-memory" / "pgdata"


@dataclass(frozen=True)
class Settings:
    # PostgreSQL URL (libpq form) the service connects with: the faraday_app
    # role, which owns nothing, so row-level security holds. Unset: start the
    # embedded PostgreSQL in data_dir.
    database_url: str | None = None
    # URL of the faraday_platform role, for transactions that act for all
    # users (service tokens, sweeps); row-level security honours '*' for it
    # alone. Unset: database_url with the user faraday_platform and no password.
    platform_database_url: str | None = None
    # URL of the schema owner, for `migrate` and migrate_on_start. Unset: database_url.
    migration_database_url: str | None = None
    # Data directory of the embedded PostgreSQL (only used without database_url).
    data_dir: Path = field(default_factory=_default_data_dir)
    # Run migrations at start-up. Always done for the embedded database.
    migrate_on_start: bool = False
    # gRPC listen address.
    host: str = "127.0.0.1"
    port: int = 50051
    # Server processes sharing the port (SO_REUSEPORT): how the service uses
    # more cores. Each has its own pools of pool_size connections in all.
    workers: int = 1
    # Set for each worker by --workers; leave it alone.
    reuse_port: bool = False
    # Largest request message accepted, in bytes; larger ones are rejected by gRPC.
    max_message_bytes: int = 1024 * 1024
    # Seconds in-flight calls get to finish after SIGTERM/SIGINT.
    grace_period_seconds: float = 10.0
    # Connection pools (see docs/schema.md for the mapping onto asyncpg):
    # pool_size connections in all, user_pool_size of them (0: a quarter of
    # pool_size, at least 1) as faraday_app for user-JWT calls, the rest as
    # faraday_platform for service tokens and the sweeps, whose pool alone
    # grows by up to pool_max_overflow under load.
    pool_size: int = 20
    user_pool_size: int = 0
    pool_max_overflow: int = 10
    pool_timeout_seconds: float = 30.0
    pool_recycle_seconds: float = 1800.0
    pool_pre_ping: bool = True
    connect_timeout_seconds: float = 10.0
    statement_timeout_seconds: float = 30.0
    # Redis URL for the lesson cache. Unset: no cache.
    redis_url: str | None = None
    cache_ttl_seconds: int = 3600
    # Redis must fail fast so a sick cache never slows a call down.
    redis_timeout_seconds: float = 0.05
    # Seconds between sweeps that delete expired memories; 0 disables the sweep.
    sweep_interval_seconds: float = 60.0
    sweep_batch_size: int = 1000
    # Log one interaction per recalled memory (and bump last_accessed).
    log_recall_interactions: bool = True
    # Default recency half-life of RecallMemories, in days.
    recall_half_life_days: float = 30.0
    # Learning rate of RecordFeedback's importance rule (0..1).
    feedback_learning_rate: float = 0.2
    # DEDUP_POLICY_SEMANTIC's cosine similarity threshold when a request
    # sets none, 0.5..1 (docs/dedup.md has the measurements behind it).
    dedup_min_similarity: float = 0.95
    log_level: str = "INFO"
    # --- Trust (issue 3). Without any token source configured, auth is off
    # and the server refuses to listen beyond loopback unless allow_insecure.
    # JSON file listing service tokens (their SHA-256 hashes, scopes, profiles).
    service_tokens_file: Path | None = None
    # HS256 shared secret for user-scoped JWTs.
    jwt_hs256_secret: str | None = None
    # PEM public key file for RS256/ES256 user-scoped JWTs.
    jwt_public_key_file: Path | None = None
    # Required `iss` and `aud` of user-scoped JWTs.
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # Listen beyond loopback without authentication (loudly logged).
    allow_insecure: bool = False
    # TLS: certificate chain and key (PEM); with a client CA, mutual TLS.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Per-caller token bucket: sustained calls per second and burst size
    # (0 disables). Redis-backed when redis_url is set.
    rate_limit_per_second: float = 0.0
    rate_limit_burst: int = 0
    # Denied calls (UNAUTHENTICATED, PERMISSION_DENIED) each peer address may
    # make: sustained per second and burst. Past them the address is refused
    # before authentication, and its refusals are audited as one row per
    # address every audit_refusals_interval_seconds (docs/security.md).
    denied_calls_per_second: float = 1.0
    denied_calls_burst: int = 20
    audit_refusals_interval_seconds: float = 60.0
    # --- Semantic recall (issue 9), docs/embeddings.md. Embedding model:
    # "none" (off), "wordllama-l2-supercat-256" (extra `embeddings`) or
    # "all-minilm-l6-v2" (extra `embeddings-minilm`). Changing it means
    # re-embedding every stored memory: vectors of two models do not compare.
    embedding_model: str = "none"
    # For any other model name: the callers send the vectors (the server runs
    # no model), of this many dimensions. 0 with a built-in model or "none".
    embedding_dimension: int = 0
    # Most texts embedded in one model call; concurrent requests share a call.
    embedding_batch_size: int = 64
    # How long a request waits for others to share its model call. 0: none;
    # requests arriving while the model is busy still form the next batch.
    embedding_max_wait_seconds: float = 0.0
    # Texts waiting to be embedded past which new requests are refused at once.
    embedding_max_queued_texts: int = 1024

    # --- Encryption at rest (issue 11), docs/security.md: Fernet keys for
    # users' name, school, department and custom instructions, comma-separated,
    # the first encrypting and all decrypting (rotation); or a file of them.
    # Neither: the embedded database keeps a generated key file beside its
    # data directory; with a database URL those fields stay plaintext (warned).
    encryption_keys: str | None = None
    encryption_keys_file: Path | None = None

    def with_overrides(self, **overrides: Any) -> Settings:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _parse(kind: Any, raw: str) -> Any:
    text = str(kind)
    if "bool" in text:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"not a boolean: {raw!r}")
    if "Path" in text:
        return Path(raw)
    if "int" in text:
        return int(raw)
    if "float" in text:
        return float(raw)
    return raw or None


def from_environment(environ: dict[str, str] | None = None) -> Settings:
    """Settings from FARADAY_* variables; a malformed value raises ValueError naming it."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f"FARADAY_{f.name.upper()}"
        if name in env:
            try:
                values[f.name] = _parse(f.type, env[name])
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from exc
    return Settings(**values)
