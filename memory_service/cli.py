"""`memory-service serve | migrate | seed-demo | embed | import | backup | restore | ...`."""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from memory_service import (
    backup,
    config,
    encryption_keys,
    healthcheck,
    import_file,
    listen_check,
    startup,
)
from memory_service.config import Settings
from memory_service.domain.principal import Scope

# The embedded PostgreSQL is started and stopped with pg_ctl through fork()
# from this process, which also runs gRPC; grpc's fork handlers can crash
# such a child (grpc/grpc#13998), and the service never forks to use gRPC.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

logger = logging.getLogger("memory_service")

# Exit statuses (README.md, Configuration; --help): 2 a setting is wrong (as argparse
# uses 2 for a wrong flag); 1 the service could not start or stopped on an error.
EXIT_BAD_CONFIGURATION = 2
EXIT_FAILED = 1

SETTINGS_NOTE = (
    " Every flag below is a setting: it overrides the environment variable named in"
    " its help, and the variable the default."
)
EPILOG = """\
exit status:
  0  stopped by SIGTERM or SIGINT, or done
  1  could not start or failed (the database is unreachable, the port is in use,
     the embedded PostgreSQL failed): one line on stderr says why
  2  a setting or flag is wrong: one line on stderr per wrong setting
FARADAY_LOG_LEVEL=DEBUG adds the traceback of a failure and PostgreSQL's output.
"""


def _add_setting_flags(parser: argparse.ArgumentParser, only: tuple[str, ...] = ()) -> None:
    """One flag per setting (those in `only`, if given); each overrides its FARADAY_* variable.

    The help is the setting's description. Values are passed on as text, and
    config.load() checks them with the environment's, so a bad flag gets the
    same one-line error as a bad variable.
    """
    defaults = Settings.model_construct()  # no check, no environment: the documented defaults
    for name, field in Settings.model_fields.items():
        if only and name not in only:
            continue
        default = getattr(defaults, name)
        shown = "unset" if default is None else str(default)
        if isinstance(default, bool):
            shown = shown.lower()
        # argparse formats help with %: a literal one must be doubled.
        help_text = f"{field.description} [{config.env_name(name)}; default: {shown}]".replace(
            "%", "%%"
        )
        if field.annotation is bool:
            parser.add_argument(
                config.flag_name(name),
                dest=name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        else:
            parser.add_argument(
                config.flag_name(name),
                dest=name,
                default=None,
                help=help_text,
                metavar=_metavar(name, field.annotation),
            )


def _metavar(name: str, annotation: Any) -> str:
    """What a flag's value is, for --help: URL, FILE, SECONDS, N..."""
    for suffix, metavar in (("_url", "URL"), ("_file", "FILE"), ("_dir", "DIR")):
        if name.endswith(suffix):
            return metavar
    for unit in ("seconds", "days", "bytes"):
        if name.endswith("_" + unit):
            return unit.upper()
    return {int: "N", float: "NUMBER"}.get(annotation, "TEXT")


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with the flags given; exits 2 naming every bad one."""
    try:
        return config.load({name: getattr(args, name, None) for name in Settings.model_fields})
    except config.InvalidSettings as exc:
        _refuse(exc.lines)


def _refuse(lines: list[str]) -> NoReturn:
    """A configuration error: one line each on stderr, exit status 2, no traceback."""
    for line in lines:
        print(f"memory-service: {line}", file=sys.stderr)
    sys.exit(EXIT_BAD_CONFIGURATION)


async def _database_urls(settings: Settings) -> tuple[str, str, str, bool]:
    """(URL to migrate with, URLs to serve with: user and platform, whether embedded).

    The service itself connects as roles that own nothing, so row-level
    security holds for them: faraday_app for user-scoped calls, and
    faraday_platform, the only role that may act for all users. Migrations
    run as the owner.
    """
    from memory_service.storage.migrate import app_role_url, platform_role_url

    if settings.database_url:
        owner, app, embedded = (
            settings.migration_database_url or settings.database_url,
            settings.database_url,
            False,
        )
    else:
        from memory_service.storage.embedded import start_embedded

        owner = await asyncio.to_thread(start_embedded, settings.data_dir)
        app, embedded = app_role_url(owner), True
    return owner, app, settings.platform_database_url or platform_role_url(app), embedded


async def _ready_database(settings: Settings) -> tuple[Settings, str, str, bool]:
    """The database a command works on, started and migrated when it is the
    embedded one (or with FARADAY_MIGRATE_ON_START): (the settings, with the
    embedded database's key file unless keys are configured; the user and
    platform URLs to connect with; whether it is embedded)."""
    owner_url, app_url, platform_url, embedded = await _database_urls(settings)
    if embedded:
        settings = encryption_keys.for_embedded(settings)
    if embedded or settings.migrate_on_start:
        await _upgrade(owner_url, settings)
    return settings, app_url, platform_url, embedded


async def _serve(settings: Settings) -> None:
    from memory_service import tls
    from memory_service.auth import Authenticator
    from memory_service.server import settle_garbage_collector, start

    try:  # refuse a bad configuration before starting any database
        authenticator = Authenticator.from_settings(settings)
        tls.check_listen_address(settings, auth_enabled=authenticator.enabled)
        tls.server_credentials(settings)
        encryption_keys.cipher(settings)
    except ValueError as exc:
        raise config.InvalidSettings([str(exc)]) from exc
    if not settings.reuse_port:  # a busy port fails now, before the database starts
        listen_check.check_port_free(settings.host, settings.port)

    settings, app_url, platform_url, embedded = await _ready_database(settings)
    where = startup.Where(
        data=(
            f"embedded PostgreSQL in {settings.data_dir}"
            f" (encryption keys: {settings.encryption_keys_file or 'configured'})"
            if embedded
            else app_url
        ),
        auth=authenticator.enabled,
    )
    if settings.workers > 1:
        await _serve_workers(settings, app_url, platform_url, where)
        return
    try:
        running = await start(settings, app_url, platform_url)
    except ValueError as exc:
        raise config.InvalidSettings([str(exc)]) from exc
    settle_garbage_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not settings.reuse_port:  # a worker of --workers: the parent has said it
        startup.print_summary(settings, running.port, where, running.memories.semantics.describe())
    await stop.wait()
    logger.info("shutting down: %.1f s grace for in-flight calls", settings.grace_period_seconds)
    await running.stop(settings.grace_period_seconds)


async def _serve_workers(
    settings: Settings, app_url: str, platform_url: str, where: startup.Where
) -> None:
    """Run `workers` server processes on one port (SO_REUSEPORT); the kernel spreads connections.

    This process keeps the embedded PostgreSQL (if any) and forwards SIGTERM/SIGINT;
    only the first worker runs the expiry sweep.
    """
    children = []
    for n in range(settings.workers):
        env = {
            **os.environ,
            **_as_env(settings),
            "FARADAY_DATABASE_URL": app_url,
            "FARADAY_PLATFORM_DATABASE_URL": platform_url,
            "FARADAY_WORKERS": "1",
            "FARADAY_REUSE_PORT": "true",
            "FARADAY_MIGRATE_ON_START": "false",
        }
        if n > 0:
            env["FARADAY_SWEEP_INTERVAL_SECONDS"] = "0"
        if settings.metrics_port:  # each worker its own endpoint (docs/observability.md)
            env["FARADAY_METRICS_PORT"] = str(settings.metrics_port + n)
        # Every setting, flags included, reaches the workers through the environment.
        children.append(
            await asyncio.create_subprocess_exec(
                sys.executable, "-m", "memory_service.cli", "serve", env=env
            )
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    startup.print_summary(settings, settings.port, where, f"{settings.workers} worker processes")
    waiting = [asyncio.create_task(child.wait()) for child in children]
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait([stopped, *waiting], return_when=asyncio.FIRST_COMPLETED)
    for child in children:
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*waiting), settings.grace_period_seconds + 10)
    stopped.cancel()


def _as_env(settings: Settings) -> dict[str, str]:
    """The settings as FARADAY_* variables, so workers see the flags given to the parent."""
    env = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if value is None or name in ("database_url", "workers", "reuse_port"):
            continue
        env[config.env_name(name)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


async def _upgrade(owner_url: str, settings: Settings) -> None:
    """Migrations, then the configured embedding model's vector index (if pgvector)."""
    from memory_service.services.semantics import configured_model
    from memory_service.storage import migrate

    await migrate.upgrade(owner_url)
    model = configured_model(settings)
    if model is not None and model[1] > 0:
        await migrate.ensure_vector_index(owner_url, *model)


async def _migrate(settings: Settings) -> None:
    owner_url, _, _, _ = await _database_urls(settings)
    await _upgrade(owner_url, settings)
    print("database is at the latest migration")


async def _seed(settings: Settings) -> None:
    from memory_service.seed import seed_demo

    settings, app_url, platform_url, _ = await _ready_database(settings)
    try:
        cipher = encryption_keys.cipher(settings)
    except ValueError as exc:
        raise config.InvalidSettings([str(exc)]) from exc
    counts = await seed_demo(app_url, platform_url, cipher, settings.database_pooler)
    print("seeded: " + ", ".join(f"{n} {what}" for what, n in counts.items()))


async def _partitions(settings: Settings, args: argparse.Namespace) -> None:
    """List memory_interactions' and audit_log's partitions; with --run, run the job first."""
    from memory_service.server import partition_job, tool_database

    settings, app_url, platform_url, _ = await _ready_database(settings)
    db = await tool_database(settings, app_url, platform_url)
    try:
        job = partition_job(db, settings)
        if args.run:
            print(f"partitions created or dropped: {await job.run()}")
        print(f"{'table':<21}{'partition':<30}{'from':<27}{'to':<27}{'rows (est.)':>12}")
        for p in await job.partitions():
            lower = "DEFAULT" if p.is_default else (p.lower.isoformat() if p.lower else "MINVALUE")
            upper = p.upper.isoformat() if p.upper else ""
            print(f"{p.parent:<21}{p.name:<30}{lower:<27}{upper:<27}{max(p.estimated_rows, 0):>12}")
    finally:
        await db.close()


async def _embed(settings: Settings, args: argparse.Namespace) -> None:
    """Backfill the configured model's vectors (docs/embeddings.md), with a progress bar."""
    from tqdm import tqdm

    from memory_service.embedding import MODEL_NAMES, ModelUnavailable, load_model

    name = settings.embedding_model
    if name == "none":
        _refuse(["FARADAY_EMBEDDING_MODEL: no embedding model configured (it is none)"])
    if name not in MODEL_NAMES:
        _refuse(
            [
                f"FARADAY_EMBEDDING_MODEL: {name!r} is not built in ({', '.join(MODEL_NAMES)}):"
                " its vectors come from the callers, who must send them (with StoreMemory, or"
                " UpdateMemory of the content); the server cannot compute them"
            ]
        )
    try:
        model = await asyncio.to_thread(load_model, name)
    except ModelUnavailable as exc:
        _refuse([f"FARADAY_EMBEDDING_MODEL: {exc}"])
    # Imported only now, as in _serve: alembic logs at INFO on import.
    from memory_service.server import tool_database
    from memory_service.services import backfill
    from memory_service.storage.embeddings import EmbeddingStore
    from memory_service.storage.memories import MemoryStore

    settings, app_url, platform_url, _ = await _ready_database(settings)
    db = await tool_database(settings, app_url, platform_url)
    try:
        if not await MemoryStore(db).has_vectors():
            sys.exit(
                "error: this database has no pgvector, so it keeps no embeddings"
                " (docs/embeddings.md: install pgvector, then migrate)"
            )
        store = EmbeddingStore(db)
        total = await backfill.count_missing(store, name, args.user)
        if args.limit is not None:
            total = min(total, args.limit)
        with tqdm(total=total, unit=" memories", desc=f"embedding with {name}") as bar:
            done = await backfill.backfill(
                store,
                model,
                batch_size=args.batch_size,
                limit=args.limit,
                user_id=args.user,
                on_batch=lambda batch: bar.update(batch.read),
            )
        print(
            f"embedded {done.written} memories with {name}; {done.wordless} have no known"
            f" word (no vector); {done.changed} changed while embedding (the next run takes them)"
        )
        if args.drop_other_models:
            dropped = await backfill.drop_other_models(store, name, args.user, args.batch_size)
            print(f"dropped {dropped} vectors of other models")
    finally:
        await db.close()


async def _rotate_keys(settings: Settings) -> None:
    settings, app_url, platform_url, _ = await _ready_database(settings)
    await encryption_keys.rotate(settings, app_url, platform_url)


def _new_token(args: argparse.Namespace) -> None:
    """Print a fresh service token (give it to the caller) and its entry for the tokens file."""
    import json

    from memory_service.auth import new_token, service_token_entry, token_hash

    token = new_token()
    entry: dict[str, object] = {
        "name": args.name,
        "sha256": token_hash(token),
        "scopes": args.scopes,
    }
    if args.assistant_profile_ids is not None:
        entry["assistant_profile_ids"] = args.assistant_profile_ids
    try:  # the server would refuse the entry: refuse to print it
        service_token_entry(entry, "new-token")
    except ValueError as exc:
        sys.exit(str(exc))
    print(f"token (shown once, store it as a secret): {token}")
    print('entry for FARADAY_SERVICE_TOKENS_FILE\'s "tokens" list:')
    print(json.dumps(entry))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_partitions_parser(commands: Any) -> None:
    help_text = "list the time partitions of interactions and the audit log; --run: run the job"
    parser = commands.add_parser(
        "partitions",
        help=help_text,
        description="List memory_interactions' and audit_log's partitions (docs/operations.md,"
        " 'Partitions and retention'); with --run, first run the partition job once, as the"
        " service does every partition_interval_seconds." + SETTINGS_NOTE,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--run",
        action="store_true",
        help="create partitions ahead and drop those past retention before listing",
    )
    _add_setting_flags(
        parser,
        only=(
            "database_url",
            "platform_database_url",
            "migration_database_url",
            "migrate_on_start",
            "data_dir",
            "connect_timeout_seconds",
            "statement_timeout_seconds",
            "database_pooler",
            "interaction_retention_days",
            "audit_retention_days",
            "partition_lock_timeout_seconds",
            "log_level",
        ),
    )


def _add_embed_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "embed",
        help="backfill missing embeddings of the configured model (safe while serving)",
        description=(
            "Embed every stored, unexpired memory that has no vector of the configured"
            " built-in model (FARADAY_EMBEDDING_MODEL), in batches, with a progress bar"
            " on stderr. Resumable: a re-run skips what is done. See docs/embeddings.md."
        ),
    )
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=256,
        help="memories read, embedded and written per transaction-sized step (default 256)",
    )
    parser.add_argument(
        "--limit",
        type=_positive,
        help="stop after this many memories (a partial run; run again to continue)",
    )
    parser.add_argument(
        "--user", type=uuid.UUID, help="only this user's memories (a user id, a UUID)"
    )
    parser.add_argument(
        "--drop-other-models",
        action="store_true",
        help="after the backfill, delete vectors of every other model (recall uses only"
        " the configured model's); not with --limit",
    )
    # The settings embed uses; the others (listening, auth, cache) are serve's.
    _add_setting_flags(
        parser,
        only=(
            "database_url",
            "platform_database_url",
            "migration_database_url",
            "data_dir",
            "migrate_on_start",
            "connect_timeout_seconds",
            "statement_timeout_seconds",
            "log_level",
            "log_format",
            "embedding_model",
        ),
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line: every subcommand, every flag with its help."""
    parser = argparse.ArgumentParser(
        prog="memory-service",
        description="Faraday Memory: the memory-recall gRPC service, and its tools.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    token_parser = commands.add_parser("new-token", help="mint a service token and its hash")
    token_parser.add_argument("--name", required=True, help="who the token is for")
    token_parser.add_argument(
        "--scopes",
        nargs="+",
        default=["memories:read", "memories:write", "lessons:read"],
        choices=[s.value for s in Scope],
        help="what the token may do (default: memories:read memories:write lessons:read)",
    )
    token_parser.add_argument(
        "--assistant-profile-ids",
        nargs="+",
        type=int,
        help="limit the token to these assistant profiles (not with the admin scope)",
    )
    for name, help_text in (
        ("serve", "run the gRPC server (embedded PostgreSQL unless a database URL is set)"),
        ("migrate", "upgrade the database to the latest schema"),
        ("seed-demo", "load the documentation's example data (idempotent)"),
    ):
        _add_setting_flags(
            commands.add_parser(
                name,
                help=help_text,
                description=help_text[0].upper() + help_text[1:] + "." + SETTINGS_NOTE,
                epilog=EPILOG,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        )
    _add_embed_parser(commands)
    _add_partitions_parser(commands)
    import_file.add_parser(commands)
    backup.add_parsers(commands, _add_setting_flags)
    encryption_keys.add_parsers(commands, _add_setting_flags)
    healthcheck.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "new-token":
        _new_token(args)
        return
    if args.command == "new-encryption-key":
        encryption_keys.new_key()
        return
    if args.command == "import":  # a client of a running server: no settings of its own
        sys.exit(import_file.run(args))
    if args.command == "healthcheck":  # a probe: reads the settings it needs itself
        sys.exit(healthcheck.run(args))
    if args.command == "embed" and args.drop_other_models and args.limit is not None:
        parser.error("--drop-other-models needs a full run: leave out --limit")
    settings = _settings(args)
    startup.configure_logging(settings.log_level, settings.log_format)
    actions: dict[str, Callable[[Settings], Coroutine[Any, Any, None]]] = {
        "serve": _serve,
        "migrate": _migrate,
        "seed-demo": _seed,
        "embed": functools.partial(_embed, args=args),
        "partitions": functools.partial(_partitions, args=args),
        "backup": functools.partial(backup.run, args=args),
        "restore": functools.partial(backup.run, args=args),
        "rotate-keys": _rotate_keys,
    }
    action = actions[args.command]
    try:
        _run(action(settings))
    except config.InvalidSettings as exc:  # found once the files were read
        _refuse(exc.lines)
    except Exception as exc:
        # A start-up failure (database unreachable, port in use, the embedded
        # PostgreSQL failing): one line, the traceback only when debugging.
        logger.debug("%s failed", args.command, exc_info=True)
        print(f"memory-service: {startup.failure_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_FAILED)


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows): 5-18% faster where present
        asyncio.run(main)
    else:
        uvloop.run(main)


if __name__ == "__main__":
    main()
