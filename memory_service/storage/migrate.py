"""Run the Alembic migrations (alembic.ini, migrations/) from Python.

The service upgrades its database at start-up, and the tests build scratch
databases, through `upgrade`/`downgrade` here rather than the `alembic`
command. Database URLs are plain libpq-style URLs (``postgresql://...``, with
``?host=/dir`` for a Unix socket, as the embedded server hands out);
`sqlalchemy_url` turns one into the ``postgresql+asyncpg`` form that
migrations/env.py connects with.

The migrations directory is not part of the installed package: outside a
source checkout, point FARADAY_MIGRATIONS_DIR at it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import URL, make_url

from memory_service.config import redact_url
from memory_service.domain.errors import Unavailable

MIGRATIONS_DIR_ENV = "FARADAY_MIGRATIONS_DIR"
"""Names the Alembic script directory (the one holding env.py and versions/)."""

# How long the check before a migration waits for PostgreSQL to answer.
CONNECT_TIMEOUT_SECONDS = 10.0

_DRIVERNAMES = frozenset({"postgresql", "postgres", "postgresql+asyncpg"})

# Alembic's `context` and `op` are module-level proxies, so two commands
# running at once in one process (threads) trample each other's state and can
# hang. Runs in this process take turns; across processes, env.py's advisory
# lock does the same.
_COMMAND_LOCK = threading.Lock()


def migrations_dir() -> Path:
    """The Alembic script directory: $FARADAY_MIGRATIONS_DIR, else <repo root>/migrations."""
    configured = os.environ.get(MIGRATIONS_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "migrations"


def sqlalchemy_url(database_url: str) -> URL:
    """The SQLAlchemy URL (asyncpg driver) for a libpq-style PostgreSQL URL.

    SQLAlchemy's asyncpg dialect passes the query string to asyncpg.connect
    as keywords, so ``host=/socket/dir`` (also ``host=h1,h2&port=p1,p2``)
    works unchanged; only libpq's ``sslmode`` is spelt ``ssl`` there.
    """
    url = make_url(database_url)
    if url.drivername not in _DRIVERNAMES:
        raise ValueError(f"not a PostgreSQL URL: {url.render_as_string(hide_password=True)}")
    url = url.set(drivername="postgresql+asyncpg")
    if "sslmode" in url.query and "ssl" not in url.query:
        url = url.update_query_dict({"ssl": url.query["sslmode"]}).difference_update_query(
            ["sslmode"]
        )
    return url


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for the project's migrations, bound to `database_url`."""
    script_dir = migrations_dir()
    ini_path = script_dir.parent / "alembic.ini"
    config = Config(str(ini_path) if ini_path.is_file() else None)
    # ConfigParser interpolation: a literal '%' in the path must be doubled.
    config.set_main_option("script_location", str(script_dir).replace("%", "%%"))
    config.attributes["database_url"] = database_url
    # The host application owns logging; env.py must not apply alembic.ini's.
    config.attributes["configure_logger"] = False
    return config


def _run_command(run: Callable[[Config, str], None], config: Config, revision: str) -> None:
    with _COMMAND_LOCK:
        run(config, revision)


async def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to `revision` (default: the latest).

    Raises Unavailable, saying why in one line, when the database cannot be
    reached or refuses the login (Alembic's own error would be a page).
    """
    await _check_reachable(database_url)
    # env.py drives its async engine with asyncio.run(), which cannot run
    # inside this event loop; a worker thread gets a loop of its own.
    await asyncio.to_thread(_run_command, command.upgrade, alembic_config(database_url), revision)


async def _check_reachable(database_url: str) -> None:
    try:
        conn = await asyncpg.connect(database_url, timeout=CONNECT_TIMEOUT_SECONDS)
    except (Exception, TimeoutError) as exc:  # not CancelledError
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise Unavailable(
            f"cannot connect to PostgreSQL at {redact_url(database_url)}: {reason}"
        ) from exc
    await conn.close()


async def downgrade(database_url: str, revision: str = "base") -> None:
    """Downgrade the database to `revision` (default: empty, no migrations applied)."""
    await asyncio.to_thread(_run_command, command.downgrade, alembic_config(database_url), revision)


def app_role_url(owner_url: str) -> str:
    """The same server and database, logged in as the service role (no password).

    For servers with trust or peer authentication (the embedded server, CI);
    elsewhere configure the service role's own URL with its password.
    """
    from memory_service.storage.tables import APP_ROLE

    return _as_role(owner_url, APP_ROLE)


def platform_role_url(database_url: str) -> str:
    """The same server and database, logged in as the platform role (no password).

    The default of FARADAY_PLATFORM_DATABASE_URL, derived from the service
    role's URL as app_role_url derives that from the owner's. Without a
    password in the URL, libpq's PGPASSWORD or password file may supply one.
    """
    from memory_service.storage.tables import PLATFORM_ROLE

    return _as_role(database_url, PLATFORM_ROLE)


def _as_role(database_url: str, role: str) -> str:
    url = make_url(database_url).set(username=role)._replace(password=None)
    return url.render_as_string(hide_password=False)


def vector_index_name(model: str, dimension: int) -> str:
    digest = hashlib.sha256(f"{model}:{dimension}".encode()).hexdigest()[:12]
    return f"ix_memory_embeddings_hnsw_{digest}"


async def ensure_vector_index(owner_url: str, model: str, dimension: int) -> bool:
    """The HNSW index recall uses for heavy users' vectors of `model`; False without pgvector.

    Built CONCURRENTLY, so a running service keeps storing meanwhile; on a
    large table that takes a while (about 1.5 s per 1,000 vectors here), once
    per model. Its expression and predicate are exactly what the recall
    statement orders by (storage/memories.py), or the planner cannot use it.
    """
    conn = await asyncpg.connect(owner_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('memory_embeddings') IS NOT NULL"):
            return False
        literal = "'" + model.replace("'", "''") + "'"
        await conn.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {vector_index_name(model, dimension)}"
            f" ON memory_embeddings USING hnsw ((embedding::vector({int(dimension)}))"
            f" vector_cosine_ops) WHERE model = {literal}"
        )
        return True
    finally:
        await conn.close()
