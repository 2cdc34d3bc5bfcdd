"""A real Redis for the storage tests.

tests/rpc/conftest.py has a `redis_url` fixture too, but importing it would
import the whole server and the generated stubs into tests about storage; the
few lines are repeated here instead (a candidate for tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def redis_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def free_port() -> int:
    """A port nothing listens on (until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A private redis-server on a free port: (its URL, its process); skips without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "no Redis: set FARADAY_TEST_REDIS_URL, run one on 127.0.0.1:6379,"
            " or install redis-server"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="faraday-test-redis-") as tmp:
        no_persistence = ["--save", "", "--appendonly", "no", "--dir", tmp]
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", *no_persistence],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while not redis_answers("127.0.0.1", port):
                if time.monotonic() > deadline:
                    pytest.fail("redis-server did not start within 10 s")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", proc
        finally:
            proc.terminate()
            proc.wait(5)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """FARADAY_TEST_REDIS_URL, else a Redis on 127.0.0.1:6379 (db 15), else one started here."""
    url = os.environ.get("FARADAY_TEST_REDIS_URL")
    if url:
        yield url
        return
    if redis_answers("127.0.0.1", 6379):
        # Database 15: keep clear of anything else on the machine's Redis.
        yield "redis://127.0.0.1:6379/15"
        return
    with redis_server() as (url, _):
        yield url
