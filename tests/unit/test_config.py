"""Settings: the names operators use, the checks at start-up, the error lines, --help."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from memory_service import config, health, startup
from memory_service.cli import build_parser
from memory_service.config import InvalidSettings, Settings, load

# Every variable operators may already have set (README's table): renaming one
# would silently drop a deployment's setting.
KNOWN_VARIABLES = {
    *("FARADAY_DATABASE_URL", "FARADAY_PLATFORM_DATABASE_URL", "FARADAY_MIGRATION_DATABASE_URL"),
    *("FARADAY_DATA_DIR", "FARADAY_MIGRATE_ON_START", "FARADAY_HOST", "FARADAY_PORT"),
    *("FARADAY_WORKERS", "FARADAY_REUSE_PORT", "FARADAY_MAX_MESSAGE_BYTES"),
    *("FARADAY_GRACE_PERIOD_SECONDS", "FARADAY_POOL_SIZE", "FARADAY_USER_POOL_SIZE"),
    *("FARADAY_POOL_MAX_OVERFLOW", "FARADAY_POOL_TIMEOUT_SECONDS", "FARADAY_POOL_RECYCLE_SECONDS"),
    *("FARADAY_POOL_PRE_PING", "FARADAY_CONNECT_TIMEOUT_SECONDS"),
    *("FARADAY_STATEMENT_TIMEOUT_SECONDS", "FARADAY_REDIS_URL", "FARADAY_CACHE_TTL_SECONDS"),
    *("FARADAY_REDIS_TIMEOUT_SECONDS", "FARADAY_SWEEP_INTERVAL_SECONDS"),
    *("FARADAY_SWEEP_BATCH_SIZE", "FARADAY_LOG_RECALL_INTERACTIONS"),
    *("FARADAY_RECALL_HALF_LIFE_DAYS", "FARADAY_FEEDBACK_LEARNING_RATE"),
    *("FARADAY_DEDUP_MIN_SIMILARITY", "FARADAY_LOG_LEVEL", "FARADAY_SERVICE_TOKENS_FILE"),
    *("FARADAY_JWT_HS256_SECRET", "FARADAY_JWT_PUBLIC_KEY_FILE", "FARADAY_JWT_ISSUER"),
    *("FARADAY_JWT_AUDIENCE", "FARADAY_ALLOW_INSECURE", "FARADAY_TLS_CERT_FILE"),
    *("FARADAY_TLS_KEY_FILE", "FARADAY_TLS_CLIENT_CA_FILE", "FARADAY_RATE_LIMIT_PER_SECOND"),
    *("FARADAY_RATE_LIMIT_BURST", "FARADAY_DENIED_CALLS_PER_SECOND", "FARADAY_DENIED_CALLS_BURST"),
    *("FARADAY_AUDIT_REFUSALS_INTERVAL_SECONDS", "FARADAY_EMBEDDING_MODEL"),
    *("FARADAY_EMBEDDING_DIMENSION", "FARADAY_EMBEDDING_BATCH_SIZE"),
    *("FARADAY_EMBEDDING_MAX_WAIT_SECONDS", "FARADAY_EMBEDDING_MAX_QUEUED_TEXTS"),
}


@pytest.fixture(autouse=True)
def _no_faraday_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FARADAY_"):
            monkeypatch.delenv(name)


def test_every_known_variable_is_still_a_setting_and_every_setting_is_described() -> None:
    names = {config.env_name(name) for name in Settings.model_fields}
    assert names >= KNOWN_VARIABLES, KNOWN_VARIABLES - names
    for name, field in Settings.model_fields.items():
        assert field.description and field.description.endswith("."), name


def test_the_defaults_are_valid_and_load_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load() == Settings.model_construct()
    monkeypatch.setenv("FARADAY_PORT", "6000")
    monkeypatch.setenv("FARADAY_LOG_LEVEL", "debug")
    monkeypatch.setenv("FARADAY_ALLOW_INSECURE", "yes")
    monkeypatch.setenv("FARADAY_REDIS_URL", "")  # empty: unset
    settings = load({"port": "7000", "host": None})  # a flag wins; None: flag not given
    assert (settings.port, settings.log_level, settings.allow_insecure) == (7000, "DEBUG", True)
    assert settings.redis_url is None and settings.host == "127.0.0.1"


# (variable, value, the whole error line after "memory-service: ").
BAD_VALUES = [
    ("FARADAY_PORT", "99999", "FARADAY_PORT: must be 0..65535, got 99999"),
    ("FARADAY_PORT", "-1", "FARADAY_PORT: must be 0..65535, got -1"),
    ("FARADAY_PORT", "http", "FARADAY_PORT: must be a whole number, got 'http'"),
    (
        "FARADAY_LOG_LEVEL",
        "loud",
        "FARADAY_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
    ),
    (
        "FARADAY_DATABASE_URL",
        "mysql://app:s3cret@db/faraday",
        "FARADAY_DATABASE_URL: must be a PostgreSQL URL (postgresql:// or postgres://),"
        " got mysql://app:***@db/faraday",
    ),
    (
        "FARADAY_DATABASE_URL",
        "postgresql://db:99999/faraday",
        "FARADAY_DATABASE_URL: not a valid URL (Port out of range 0-65535):"
        " postgresql://db:99999/faraday",
    ),
    (
        "FARADAY_REDIS_URL",
        "localhost:6379",
        "FARADAY_REDIS_URL: must be a Redis URL (redis:// or rediss:// or unix://),"
        " got localhost:6379",
    ),
    ("FARADAY_TLS_CERT_FILE", "/no/such/cert.pem", "FARADAY_TLS_CERT_FILE: no such file:"),
    ("FARADAY_SERVICE_TOKENS_FILE", "/", "FARADAY_SERVICE_TOKENS_FILE: not a file: /"),
    ("FARADAY_POOL_SIZE", "1", "FARADAY_POOL_SIZE: must be at least 2, got 1"),
    (
        "FARADAY_DATABASE_POOLER",
        "pgpool",
        "FARADAY_DATABASE_POOLER: must be one of none, pgbouncer, got 'pgpool'",
    ),
    ("FARADAY_POOL_TIMEOUT_SECONDS", "0", "FARADAY_POOL_TIMEOUT_SECONDS: must be above 0, got 0"),
    (
        "FARADAY_FEEDBACK_LEARNING_RATE",
        "1.5",
        "FARADAY_FEEDBACK_LEARNING_RATE: must be 0..1, got 1.5",
    ),
    (
        "FARADAY_DEDUP_MIN_SIMILARITY",
        "0.3",
        "FARADAY_DEDUP_MIN_SIMILARITY: must be 0.5..1, got 0.3",
    ),
    ("FARADAY_WORKERS", "0", "FARADAY_WORKERS: must be at least 1, got 0"),
    ("FARADAY_POOL_PRE_PING", "maybe", "FARADAY_POOL_PRE_PING: must be true or false, got 'maybe'"),
    (
        "FARADAY_MAX_MESSAGE_BYTES",
        "10",
        "FARADAY_MAX_MESSAGE_BYTES: must be 1024..2147483647, got 10",
    ),
]


@pytest.mark.parametrize(("variable", "value", "line"), BAD_VALUES, ids=[c[0] for c in BAD_VALUES])
def test_a_bad_value_is_one_line_naming_the_variable(
    variable: str, value: str, line: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSettings) as caught:
        load()
    assert len(caught.value.lines) == 1
    assert caught.value.lines[0].startswith(line), caught.value.lines[0]


def test_every_bad_value_is_reported_at_once_and_flags_are_named_as_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FARADAY_PORT", "99999")
    monkeypatch.setenv("FARADAY_LOG_LEVEL", "loud")
    with pytest.raises(InvalidSettings) as caught:
        load({"grace_period_seconds": "-1"})
    assert caught.value.lines == [
        "FARADAY_PORT: must be 0..65535, got 99999",
        "--grace-period-seconds: must be at least 0, got -1",
        "FARADAY_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
    ]


def test_settings_that_depend_on_each_other() -> None:
    with pytest.raises(InvalidSettings, match="--user-pool-size: must be below"):
        load({"pool_size": 4, "user_pool_size": 4})
    with pytest.raises(InvalidSettings, match="--workers: 2 workers need a fixed"):
        load({"port": 0, "workers": 2})
    assert load({"port": 0}).port == 0  # documented: any free port
    with pytest.raises(InvalidSettings, match="--embedding-model: must not be empty, got ''"):
        load({"embedding_model": ""})


def test_with_overrides_checks_too() -> None:
    settings = Settings.model_construct()
    assert settings.with_overrides(port=0, host=None).port == 0
    with pytest.raises(InvalidSettings, match="FARADAY_PORT"):
        settings.with_overrides(port=70000)


def test_redact_url_hides_only_the_password() -> None:
    assert config.redact_url("postgresql://app:pw@db:5432/x?sslmode=require") == (
        "postgresql://app:***@db:5432/x?sslmode=require"
    )
    assert config.redact_url("postgresql://app@db/x") == "postgresql://app@db/x"
    assert config.redact_url("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"


def _every_action(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{name} {a.dest}", a) for a in sub._actions]
        else:
            found.append((action.dest, action))
    return found


def test_every_flag_of_every_subcommand_says_what_it_does() -> None:
    actions = _every_action(build_parser())
    assert len(actions) > 100
    for name, action in actions:
        assert action.help and action.help != argparse.SUPPRESS and len(action.help) > 15, name
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    text = serve.format_help()
    assert "--port N" in text and "FARADAY_PORT; default: 50051" in text
    assert "0 picks a free port" in text and "exit status:" in text


def test_the_start_up_summary_is_short_and_hides_passwords() -> None:
    settings = Settings.model_construct(redis_url="redis://:pw@cache:6379/0")
    where = startup.Where(data="postgresql://app:secret@db:5432/faraday", auth=True)
    lines = startup.summary_lines(settings, 50051, where, "lexical-only")
    text = "\n".join(lines)
    assert len(lines) <= 8
    assert "secret" not in text and "pw@" not in text
    assert "listening on 127.0.0.1:50051" in lines[0]
    assert "postgresql://app:***@db:5432/faraday" in text


async def test_readiness_follows_the_probe_and_says_so_once_per_change() -> None:
    answers = iter([None, "refused", "refused", None, None])
    told: list[bool] = []

    async def probe() -> str | None:
        try:
            return next(answers)
        except StopIteration:
            await asyncio.Event().wait()  # no more answers: wait to be cancelled
            raise AssertionError("unreachable") from None

    async def set_serving(serving: bool) -> None:
        told.append(serving)

    task = asyncio.create_task(health.follow_database(probe, set_serving, 0.001))
    for _ in range(200):
        await asyncio.sleep(0.005)
        if len(told) == 2:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert told == [False, True]


def test_data_dir_must_be_a_directory(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(InvalidSettings, match="--data-dir: not a directory"):
        load({"data_dir": str(a_file)})
    assert load({"data_dir": str(tmp_path / "new")}).data_dir == tmp_path / "new"
