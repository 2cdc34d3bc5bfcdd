"""`memory-service serve` as an operator starts it: what it says when it cannot, and when it can.

A wrong setting: one line per setting on stderr, exit 2. A start-up failure
(database unreachable, port in use): one line, exit 1. Never a traceback
unless FARADAY_LOG_LEVEL=DEBUG. A good start on the embedded PostgreSQL: a
few summary lines, none of initdb's, pg_ctl's or Alembic's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.faults.conftest import REPO_ROOT, Urls, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

# What must never reach an operator's terminal at the default log level.
NOISE = ("pg_ctl", "initdb", "alembic", "Running upgrade", "Context impl", "Traceback")


def _environment(**variables: str) -> dict[str, str]:
    """This process's environment without any FARADAY_* setting, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARADAY_")}
    return env | variables


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Where a wrongly accepted configuration would start its embedded server:
    # never the developer's own ~/.local/share.
    with tempfile.TemporaryDirectory(prefix="faraday-startup-") as tmp:
        yield Path(tmp) / "pgdata"


async def _serve(env: dict[str, str], *flags: str) -> subprocess.CompletedProcess[str]:
    try:
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "memory_service.cli", "serve", *flags],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as timeout:  # it started serving: accepted
        raise AssertionError(f"still running after 60 s: {timeout.stdout!r}") from timeout


def _one_line(result: subprocess.CompletedProcess[str], status: int) -> str:
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    print(lines[0])
    return lines[0]


# (variable, value, the error line). Each bad value alone; ranges, URLs, files, levels.
BAD_SETTINGS = [
    ("FARADAY_PORT", "99999", "memory-service: FARADAY_PORT: must be 0..65535, got 99999"),
    (
        "FARADAY_LOG_LEVEL",
        "verbose",
        "memory-service: FARADAY_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR,"
        " CRITICAL, got 'verbose'",
    ),
    (
        "FARADAY_DATABASE_URL",
        "mysql://app:s3cret@db/faraday",
        "memory-service: FARADAY_DATABASE_URL: must be a PostgreSQL URL (postgresql:// or"
        " postgres://), got mysql://app:***@db/faraday",
    ),
    (
        "FARADAY_REDIS_URL",
        "http://cache:6379",
        "memory-service: FARADAY_REDIS_URL: must be a Redis URL (redis:// or rediss:// or"
        " unix://), got http://cache:6379",
    ),
    (
        "FARADAY_TLS_CERT_FILE",
        "/etc/faraday/missing.pem",
        "memory-service: FARADAY_TLS_CERT_FILE: no such file: /etc/faraday/missing.pem",
    ),
    (
        "FARADAY_SERVICE_TOKENS_FILE",
        "/etc/faraday/tokens.json",
        "memory-service: FARADAY_SERVICE_TOKENS_FILE: no such file: /etc/faraday/tokens.json",
    ),
    ("FARADAY_POOL_SIZE", "0", "memory-service: FARADAY_POOL_SIZE: must be at least 2, got 0"),
    (
        "FARADAY_FEEDBACK_LEARNING_RATE",
        "3",
        "memory-service: FARADAY_FEEDBACK_LEARNING_RATE: must be 0..1, got 3",
    ),
    (
        "FARADAY_HEALTH_PROBE_INTERVAL_SECONDS",
        "0",
        "memory-service: FARADAY_HEALTH_PROBE_INTERVAL_SECONDS: must be above 0, got 0",
    ),
    (
        "FARADAY_STATEMENT_TIMEOUT_SECONDS",
        "soon",
        "memory-service: FARADAY_STATEMENT_TIMEOUT_SECONDS: must be a number, got 'soon'",
    ),
]


@pytest.mark.parametrize(
    ("variable", "value", "line"), BAD_SETTINGS, ids=[c[0] for c in BAD_SETTINGS]
)
async def test_a_bad_setting_is_one_line_and_exit_status_2(
    variable: str, value: str, line: str, data_dir: Path
) -> None:
    result = await _serve(_environment(FARADAY_DATA_DIR=str(data_dir), **{variable: value}))
    assert _one_line(result, 2) == line
    assert result.stdout == ""
    # Refused before any database was started.
    assert not await asyncio.to_thread(data_dir.exists)


async def test_every_bad_setting_is_named_at_once_flags_as_flags(data_dir: Path) -> None:
    env = _environment(
        FARADAY_DATA_DIR=str(data_dir), FARADAY_PORT="99999", FARADAY_LOG_LEVEL="loud"
    )
    result = await _serve(env, "--pool-timeout-seconds", "-5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "memory-service: FARADAY_PORT: must be 0..65535, got 99999",
        "memory-service: --pool-timeout-seconds: must be above 0, got -5",
        "memory-service: FARADAY_LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR,"
        " CRITICAL, got 'loud'",
    ]


@pytest.mark.parametrize("migrate", [False, True], ids=["serve", "migrate-on-start"])
async def test_an_unreachable_database_is_one_line_and_exit_status_1(
    migrate: bool, data_dir: Path
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://faraday_app:s3cret@127.0.0.1:{port}/faraday"
    flags = ("--port", "0", *(("--migrate-on-start",) if migrate else ()))
    result = await _serve(_environment(FARADAY_DATABASE_URL=url), *flags)
    line = _one_line(result, 1)
    prefix = (
        f"memory-service: cannot connect to PostgreSQL at"
        f" postgresql://faraday_app:***@127.0.0.1:{port}/faraday: "
    )
    assert line.startswith(prefix), line
    assert "s3cret" not in result.stderr + result.stdout


async def test_debug_level_adds_the_traceback() -> None:
    url = f"postgresql://faraday_app@127.0.0.1:{free_port()}/faraday"
    result = await _serve(
        _environment(FARADAY_DATABASE_URL=url, FARADAY_LOG_LEVEL="DEBUG"), "--port", "0"
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("memory-service: cannot connect to")


async def test_a_port_in_use_is_one_line_and_exit_status_1(migrated_database: Urls) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await _serve(
            _environment(FARADAY_DATABASE_URL=migrated_database.app), "--port", str(port)
        )
    line = _one_line(result, 1)
    assert line == (
        f"memory-service: cannot listen on 127.0.0.1:{port}: the port is in use by another process"
    )


async def test_a_port_in_use_is_refused_in_process_too(migrated_database: Urls) -> None:
    # The check in server.start(), for callers that are not the command line.
    from memory_service.server import start
    from tests.faults.conftest import FAULT_SETTINGS

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: the port is in use"):
            running = await start(FAULT_SETTINGS.with_overrides(port=port), migrated_database.app)
            await running.stop(0)  # only reached when the bind wrongly succeeded


@pytest.mark.slow
async def test_a_fresh_start_on_embedded_postgres_is_a_short_quiet_summary(
    data_dir: Path, tmp_path: Path
) -> None:
    # As `make run` starts it: the embedded default, the default log level
    # (INFO), the built-in model; a fresh data directory, so initdb runs too.
    port = free_port()
    env = _environment(
        FARADAY_DATA_DIR=str(data_dir), FARADAY_EMBEDDING_MODEL="wordllama-l2-supercat-256"
    )
    log_path = tmp_path / "serve.log"
    proc = _spawn_logged(["serve", "--port", str(port)], env, log_path)
    try:
        await _wait_serving(proc, f"127.0.0.1:{port}", log_path)
        started = await asyncio.to_thread(log_path.read_text, errors="replace")
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    print(f"\n--- start-up output ({len(started.splitlines())} lines):\n{started}---")
    lines = started.splitlines()
    assert 3 <= len(lines) <= 10, started
    for word in NOISE:
        assert word not in started, word
    assert f"listening on 127.0.0.1:{port}" in lines[0]
    assert f"embedded PostgreSQL in {data_dir}" in started
    assert "wordllama-l2-supercat-256" in started
    assert status == 0, _read(log_path)


def _spawn_logged(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """The CLI with stdout and stderr to a file (a pipe nobody reads could block it)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "memory_service.cli", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _read(path: Path) -> str:
    return path.read_text(errors="replace")


async def _wait_serving(proc: subprocess.Popen[bytes], target: str, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            assert proc.poll() is None, _read(log_path)
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    await asyncio.sleep(0.3)  # the summary is printed right after start
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("not serving after 90 s:\n" + _read(log_path))
