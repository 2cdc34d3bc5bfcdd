"""Alembic environment: the async template, connecting through asyncpg.

The database URL is not in alembic.ini. It comes from
``config.attributes["database_url"]`` (memory_service.storage.migrate sets it)
or from the command line: ``alembic -x url=postgresql://... upgrade head``.
Either way it is a libpq-style URL, converted here to SQLAlchemy's
``postgresql+asyncpg`` form.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import create_async_engine

from memory_service.storage.migrate import sqlalchemy_url
from memory_service.storage.tables import metadata

config = context.config

# Only the `alembic` command applies the ini's logging setup; programmatic
# callers (configure_logger=False) keep their own.
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata

# Serialises concurrent upgrades (several service instances starting at
# once): the second waits, then finds the schema already at head. An
# arbitrary constant; any bigint unlikely to clash with other users works.
_MIGRATION_LOCK_KEY = 7_246_551_380_915_236_097


def _database_url() -> URL:
    url = config.attributes.get("database_url") or context.get_x_argument(as_dictionary=True).get(
        "url"
    )
    if not url:
        raise RuntimeError(
            "no database URL: set config.attributes['database_url'] "
            "or pass `-x url=postgresql://...` to alembic"
        )
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    """Emit the SQL script (``alembic upgrade --sql``) without connecting."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # Server defaults are written as in tables.py; PostgreSQL's reflected
        # spelling differs ('{}'::text[] vs '{}') and would only add noise.
        compare_server_default=False,
    )
    # PostgreSQL has transactional DDL: the whole run is one transaction, and
    # the transaction-scoped lock is held until it commits.
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        context.run_migrations()


async def run_async_migrations() -> None:
    # NullPool: the engine lives for one run; no connection should outlive it.
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
