"""Settings: one typed object, read once at start-up from the environment and CLI flags.

Every setting is a field of `Settings` below: its type (with its bounds), its
default and a one-sentence description. From that one line come the
environment variable FARADAY_<NAME upper-cased>, the flag --<name-with-dashes>
of `memory-service serve|migrate|seed-demo|embed`, the flag's `--help` (the
description), and the check at start-up. Adding a setting is adding a field:

    probe_timeout_seconds: Seconds = Field(1.0, description="How long a probe may take.")

`load()` reads the environment and the flags and checks every value at once;
a bad one raises `InvalidSettings`, whose lines name each variable (or flag)
and say what is wrong, one line each: the command line prints them and exits
with status 2. The table in README.md is the user-facing copy of this file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import annotated_types
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["InvalidSettings", "Settings", "env_name", "flag_name", "load", "redact_url"]

ENV_PREFIX = "FARADAY_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
# What the pools connect to (docs/pooling.md): PostgreSQL itself, or PgBouncer in
# transaction mode.
DATABASE_POOLERS = ("none", "pgbouncer")


def env_name(field: str) -> str:
    """The environment variable of a setting: port -> FARADAY_PORT."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    """The command-line flag of a setting: data_dir -> --data-dir."""
    return "--" + field.replace("_", "-")


def redact_url(url: str) -> str:
    """`url` with its password replaced by ***, for logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "(an unparsable URL)"


# --- value checks, each raising ValueError with the message shown after the name


def _url_with_scheme(url: str, schemes: tuple[str, ...], what: str) -> str:
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}): {shown}") from None
    if parts.scheme not in schemes:
        raise ValueError(
            f"must be a {what} URL ({' or '.join(s + '://' for s in schemes)}), got {shown}"
        )
    return url


def _postgres_url(url: str) -> str:
    return _url_with_scheme(url, ("postgresql", "postgres"), "PostgreSQL")


def _redis_url(url: str) -> str:
    return _url_with_scheme(url, ("redis", "rediss", "unix"), "Redis")


def _readable_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.exists():
        raise ValueError(f"no such file: {path}")
    if not path.is_file():
        raise ValueError(f"not a file: {path}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"not readable by this user: {path}")
    return path


def _directory_or_absent(path: Path) -> Path:
    path = path.expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"not a directory: {path}")
    return path


def _log_level(level: str) -> str:
    if level.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return level.upper()


def _log_format(value: str) -> str:
    if value.lower() not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return value.lower()


def _database_pooler(value: str) -> str:
    if value.lower() not in DATABASE_POOLERS:
        raise ValueError(f"must be one of {', '.join(DATABASE_POOLERS)}, got {value!r}")
    return value.lower()


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "faraday-memory" / "pgdata"


# The kinds of value settings hold; a new setting picks one (or adds one here).
PostgresUrl = Annotated[str, AfterValidator(_postgres_url)]
RedisUrl = Annotated[str, AfterValidator(_redis_url)]
ReadableFile = Annotated[Path, AfterValidator(_readable_file)]
Directory = Annotated[Path, AfterValidator(_directory_or_absent)]
LogLevel = Annotated[str, AfterValidator(_log_level)]
LogFormat = Annotated[str, AfterValidator(_log_format)]
DatabasePooler = Annotated[str, AfterValidator(_database_pooler)]
Port = Annotated[int, Field(ge=0, le=65535)]
Seconds = Annotated[float, Field(gt=0)]  # a duration that must pass
SecondsOrOff = Annotated[float, Field(ge=0)]  # 0: off, or no wait
Count = Annotated[int, Field(ge=1)]
CountOrOff = Annotated[int, Field(ge=0)]  # 0: off, or a documented default
Rate = Annotated[float, Field(ge=0)]  # per second; 0: off
Fraction = Annotated[float, Field(ge=0, le=1)]


class Settings(BaseSettings):
    """Every setting of the service. Constructing one reads FARADAY_* (arguments win)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        # An empty variable counts as unset (FARADAY_REDIS_URL= turns the cache off).
        env_ignore_empty=True,
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    # --- Where the data lives
    database_url: PostgresUrl | None = Field(
        None,
        description="PostgreSQL URL the service connects with (the faraday_app role, which owns"
        " nothing, so row-level security holds); unset: start the embedded PostgreSQL in"
        " data_dir.",
    )
    platform_database_url: PostgresUrl | None = Field(
        None,
        description="URL of the faraday_platform role, for transactions that act for all users"
        " (service tokens, sweeps); unset: database_url as user faraday_platform, no password.",
    )
    migration_database_url: PostgresUrl | None = Field(
        None,
        description="URL of the schema owner, for `migrate` and migrate_on_start; unset:"
        " database_url.",
    )
    replica_database_url: PostgresUrl | None = Field(
        None,
        description="URL of a streaming replica (hot standby) as faraday_app; reads that may be"
        " stale by replica_max_lag_seconds go there (docs/scaling.md); unset: no replica.",
    )
    replica_platform_database_url: PostgresUrl | None = Field(
        None,
        description="URL of the replica as faraday_platform; unset: replica_database_url as user"
        " faraday_platform, no password.",
    )
    replica_max_lag_seconds: Seconds = Field(
        5.0,
        description="Most a replica read may lag the primary; a replica further behind, or"
        " unreachable, is skipped and the primary answers.",
    )
    data_dir: Directory = Field(
        default_factory=_default_data_dir,
        description="Data directory of the embedded PostgreSQL (only used without database_url).",
    )
    migrate_on_start: bool = Field(
        False, description="Run migrations at start-up (always done for the embedded database)."
    )
    # --- Listening
    host: str = Field("127.0.0.1", description="Address the gRPC server listens on.")
    port: Port = Field(
        50051,
        description="Port the gRPC server listens on; 0 picks a free port (printed at start).",
    )
    workers: Count = Field(
        1,
        description="Server processes sharing the port (SO_REUSEPORT), to use more cores; each"
        " has its own pools of pool_size connections.",
    )
    reuse_port: bool = Field(False, description="Set for each worker by --workers; leave it alone.")
    max_message_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        le=2**31 - 1,
        description="Largest request message accepted, in bytes; gRPC rejects larger ones.",
    )
    max_connection_age_seconds: SecondsOrOff = Field(
        0.0,
        description="Close each client connection gracefully (GOAWAY) after about this long, so"
        " clients reconnect and spread over the replicas a load balancer added since; 0: never"
        " (docs/scaling.md).",
    )
    max_connection_age_grace_seconds: SecondsOrOff = Field(
        600.0,
        description="After max_connection_age_seconds, how long calls still running on the"
        " connection get to finish before it is closed (covers a long ImportMemories stream).",
    )
    grace_period_seconds: SecondsOrOff = Field(
        10.0, description="Seconds in-flight calls get to finish after SIGTERM or SIGINT."
    )
    # --- Connection pools (docs/schema.md maps them onto asyncpg)
    pool_size: int = Field(
        20,
        ge=2,
        description="Connections kept open, both pools together: user_pool_size as faraday_app"
        " for user-JWT calls, the rest as faraday_platform.",
    )
    user_pool_size: CountOrOff = Field(
        0,
        description="Of pool_size, the connections for user-JWT calls; 0: a quarter of"
        " pool_size, at least 1.",
    )
    pool_max_overflow: CountOrOff = Field(
        10, description="Extra connections the faraday_platform pool may open under load."
    )
    pool_timeout_seconds: Seconds = Field(
        30.0, description="How long a call waits for a free connection before UNAVAILABLE."
    )
    pool_recycle_seconds: Seconds = Field(
        1800.0, description="Idle connections older than this are closed."
    )
    pool_pre_ping: bool = Field(
        True,
        description="Replace a connection found dead at BEGIN and retry the BEGIN once.",
    )
    connect_timeout_seconds: Seconds = Field(
        10.0, description="How long opening a database connection may take."
    )
    statement_timeout_seconds: Seconds = Field(
        30.0, description="Longest a single SQL statement may run."
    )
    database_pooler: DatabasePooler = Field(
        "none",
        description="What database_url and platform_database_url point at: none (PostgreSQL"
        " itself) or pgbouncer (a PgBouncer in transaction mode: no prepared statement cache,"
        " no startup settings; docs/pooling.md).",
    )
    health_probe_interval_seconds: Seconds = Field(
        2.0,
        description="Seconds between probes of PostgreSQL; health turns NOT_SERVING while a"
        " probe fails (docs/health.md).",
    )
    # --- Cache
    redis_url: RedisUrl | None = Field(
        None, description="Redis URL for the lesson cache (redis://, rediss://); unset: no cache."
    )
    cache_ttl_seconds: Count = Field(3600, description="Lifetime of a cached lesson, in seconds.")
    redis_timeout_seconds: Seconds = Field(
        0.05,
        description="A slower Redis answer counts as a miss, so a sick cache never slows a call.",
    )
    # --- Memory rules
    sweep_interval_seconds: SecondsOrOff = Field(
        60.0, description="Seconds between sweeps that delete expired memories; 0: no sweep."
    )
    sweep_batch_size: Count = Field(1000, description="Rows deleted per sweep statement.")
    # --- Lesson search (storage/lessons.py, migration 0020)
    search_candidates_per_word: int = Field(
        500,
        ge=10,
        le=10_000,
        description="Lessons SearchLessons matches and ranks per query word it draws from,"
        " 10..10000: more ranks closer to exact, fewer answers sooner"
        " (bench/search_quality.py; docs/schema.md).",
    )
    lesson_terms_interval_seconds: SecondsOrOff = Field(
        3600.0,
        description="Seconds between recounts of the lessons holding each common search word,"
        " which SearchLessons uses to pick a query's rarest word; a process skips its run"
        " if another's started within half this (migration 0021); 0: none.",
    )
    # --- Partitions (docs/operations.md)
    partition_interval_seconds: SecondsOrOff = Field(
        3600.0,
        description="Seconds between runs of the partition job (create partitions a week ahead,"
        " drop those past retention); 0: none (run it by hand: docs/operations.md).",
    )
    interaction_retention_days: int = Field(
        90,
        ge=1,
        le=36500,
        description="Days memory_interactions rows are kept: a day's partition is dropped once"
        " all of it is older, 1..36500.",
    )
    audit_retention_days: int = Field(
        400,
        ge=365,
        le=36500,
        description="Days audit_log rows are kept: a month's partition is dropped once all of"
        " it is older, 365..36500 (the database refuses less).",
    )
    partition_lock_timeout_seconds: Seconds = Field(
        0.1,
        description="Longest the partition job waits for a table lock, so traffic never queues"
        " behind it for longer; it retries a few times, then at its next run.",
    )
    log_recall_interactions: bool = Field(
        True, description="Log one interaction per recalled memory and bump its last access time."
    )
    recall_log_interval_seconds: float = Field(
        0.05,
        ge=0,
        le=10,
        description="Seconds between writes of recall bookkeeping (interaction rows, last-access"
        " bumps), queued by recalls and written in one batch, 0..10. A crash of the service"
        " loses what is queued: the recalls of about this long; a graceful stop writes it"
        " first. 0: every recall writes its own in its transaction, which a crash of the"
        " service cannot lose, for about 2 ms more PostgreSQL CPU a recall at 1M memories"
        " (bench/README.md, docs/schema.md).",
    )
    recall_log_max_pending_rows: int = Field(
        10_000,
        ge=100,
        le=1_000_000,
        description="Recall bookkeeping rows queued at most, 100..1000000; a recall that would"
        " queue more waits for the next write, so nothing is dropped to make room.",
    )
    recall_half_life_days: Seconds = Field(
        30.0, description="Default recency half-life of RecallMemories, in days."
    )
    feedback_learning_rate: Fraction = Field(
        0.2, description="Step size of RecordFeedback's importance rule, 0..1."
    )
    dedup_min_similarity: float = Field(
        0.95,
        ge=0.5,
        le=1,
        description="Cosine similarity threshold of DEDUP_POLICY_SEMANTIC when a request sets"
        " none, 0.5..1 (docs/dedup.md).",
    )
    log_level: LogLevel = Field(
        "INFO",
        description="Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL (DEBUG also shows"
        " PostgreSQL's and Alembic's output, and tracebacks of start-up failures).",
    )
    # --- Observability (issue 11), docs/observability.md.
    log_format: LogFormat = Field(
        "text",
        description='Log lines as "text" (human-readable) or "json" (one object per line).',
    )
    metrics_port: Port | None = Field(
        None,
        description="Serve Prometheus metrics at http://metrics_host:metrics_port/metrics;"
        " unset: none (0 picks a free port). With --workers, worker n serves port + n.",
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the metrics endpoint listens on (loopback by default)."
    )
    # --- Trust (issue 3). Without any token source configured, auth is off
    # and the server refuses to listen beyond loopback unless allow_insecure.
    service_tokens_file: ReadableFile | None = Field(
        None,
        description="JSON file listing service tokens (their SHA-256 hashes, scopes, profiles);"
        " `memory-service new-token` makes entries.",
    )
    jwt_hs256_secret: str | None = Field(
        None, description="Shared secret of user-scoped HS256 JWTs."
    )
    jwt_public_key_file: ReadableFile | None = Field(
        None, description="PEM public key file of user-scoped RS256 or ES256 JWTs."
    )
    jwt_issuer: str | None = Field(None, description="Required `iss` of user-scoped JWTs.")
    jwt_audience: str | None = Field(None, description="Required `aud` of user-scoped JWTs.")
    allow_insecure: bool = Field(
        False,
        description="Listen beyond loopback without authentication (logged loudly at start).",
    )
    tls_cert_file: ReadableFile | None = Field(
        None, description="PEM certificate chain of the server: TLS only, with tls_key_file."
    )
    tls_key_file: ReadableFile | None = Field(
        None, description="PEM private key of tls_cert_file (unencrypted)."
    )
    tls_client_ca_file: ReadableFile | None = Field(
        None,
        description="PEM CA certificate: mutual TLS, clients must present a certificate it signed.",
    )
    rate_limit_per_second: Rate = Field(
        0.0,
        description="Sustained calls per second each caller may make; 0: no limit (Redis-backed"
        " when redis_url is set).",
    )
    rate_limit_burst: CountOrOff = Field(
        0, description="Calls a caller may make at once above the rate; 0: one second's worth."
    )
    denied_calls_per_second: Rate = Field(
        1.0,
        description="Sustained denied calls (UNAUTHENTICATED, PERMISSION_DENIED) each peer"
        " address may make before it is refused unheard (docs/security.md).",
    )
    denied_calls_burst: Count = Field(
        20, description="Denied calls each peer address may make at once."
    )
    audit_refusals_interval_seconds: Seconds = Field(
        60.0,
        description="Seconds between audit rows for calls refused unheard, one row per address.",
    )
    # --- Semantic recall (issue 9), docs/embeddings.md
    embedding_model: str = Field(
        "none",
        min_length=1,
        description="Embedding model: none, wordllama-l2-supercat-256 or all-minilm-l6-v2;"
        " any other name: callers send its vectors. A change needs `memory-service embed`.",
    )
    embedding_dimension: CountOrOff = Field(
        0,
        description="Dimension of the vectors callers send for a model that is not built in;"
        " 0 with a built-in model or none.",
    )
    embedding_batch_size: Count = Field(
        64, description="Most texts embedded in one model call; concurrent requests share a call."
    )
    embedding_max_wait_seconds: SecondsOrOff = Field(
        0.0,
        description="How long a request waits for others to share its model call; 0: no wait.",
    )
    embedding_max_queued_texts: Count = Field(
        1024,
        description="Texts waiting to be embedded past which new requests are refused at once.",
    )

    # --- Encryption at rest (issue 11), docs/security.md.
    encryption_keys: SecretStr | None = Field(
        None,
        description="Fernet keys for users' name, school, department and custom instructions,"
        " comma-separated: the first encrypts, all decrypt (rotation). Unset, with"
        " encryption_keys_file unset too: the embedded database keeps a generated key file"
        " beside its data directory; with a database URL those fields stay plaintext (warned).",
    )
    encryption_keys_file: ReadableFile | None = Field(
        None,
        description="File of encryption keys (comma- or line-separated), instead of"
        " encryption_keys.",
    )

    @field_validator("user_pool_size")
    @classmethod
    def _below_pool_size(cls, value: int, info: ValidationInfo) -> int:
        pool_size = info.data.get("pool_size")
        if value and pool_size is not None and value >= pool_size:
            raise ValueError(
                f"must be below {env_name('pool_size')} ({pool_size}): the faraday_platform"
                f" pool gets the rest, got {value}"
            )
        return value

    @field_validator("workers")
    @classmethod
    def _fixed_port_for_workers(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("port") == 0:
            raise ValueError(f"{value} workers need a fixed {env_name('port')}, not 0")
        return value

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with these fields changed (None leaves one as it is), checked like load()."""
        values = self.model_dump() | {k: v for k, v in overrides.items() if v is not None}
        return _validated(values, flags=())


class InvalidSettings(ValueError):
    """Some settings are wrong: `lines` says which and why, one line each."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines


def load(flags: Mapping[str, Any] | None = None) -> Settings:
    """The settings: FARADAY_* from the environment, overridden by `flags` (None: not given).

    Raises InvalidSettings naming every bad value at once.
    """
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise InvalidSettings(_error_lines(exc, given)) from None


def _validated(values: Mapping[str, Any], flags: Iterable[str]) -> Settings:
    try:
        return Settings.model_validate(dict(values))
    except ValidationError as exc:
        raise InvalidSettings(_error_lines(exc, set(flags))) from None


# --- error lines -------------------------------------------------------------

_PARSE_ERRORS = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_too_short": "must not be empty",
}


def _error_lines(exc: ValidationError, flags: Iterable[str]) -> list[str]:
    from_flags = set(flags)
    lines = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in from_flags:
            name = flag_name(field)
        elif field in Settings.model_fields:
            name = env_name(field)
        else:
            name = field or "settings"
        lines.append(f"{name}: {_problem(error, Settings.model_fields.get(field))}")
    return lines


def _problem(error: Any, field: FieldInfo | None) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "value_error":
        return str(error["ctx"]["error"])
    if kind == "extra_forbidden":
        return "not a setting"
    if kind in _PARSE_ERRORS:
        return f"{_PARSE_ERRORS[kind]}, got {value!r}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"must be {_bounds(field)}, got {value}"
    message: str = error["msg"]
    return message[0].lower() + message[1:]


def _bounds(field: FieldInfo | None) -> str:
    """The allowed range of a numeric setting, as the error line says it: 0..65535, above 0."""
    low = high = ""
    low_open = False
    for bound in field.metadata if field is not None else ():
        if isinstance(bound, annotated_types.Ge):
            low = _number(bound.ge)
        elif isinstance(bound, annotated_types.Gt):
            low, low_open = _number(bound.gt), True
        elif isinstance(bound, annotated_types.Le):
            high = _number(bound.le)
    if low and high:
        return f"above {low} and at most {high}" if low_open else f"{low}..{high}"
    if low:
        return f"above {low}" if low_open else f"at least {low}"
    return f"at most {high}" if high else "in range"


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe(settings: Settings, field: str) -> str:
    """A setting's value as start-up output may show it (URLs without their password)."""
    value = getattr(settings, field)
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return str(value)
