"""What ending a read's transaction off the caller's path saves (issue 12).

A read used to wait for its COMMIT (a third round trip after BEGIN and the
statement); `Database.connection(read_only=True)` returns once the
statement has answered and commits in the background (docs/scaling.md,
"Reads end off the caller's path"). This runs the bench's own read
statements (floor_sql: recall without a query, ListLessons, SearchLessons,
for the bench workload's requests) through one Database, both ways,
alternating call by call at concurrency 1, so the machine's drift (up to
2x within a session here) falls on both alike:

- `waited`: `Database.fetch(...)`: a read-write transaction whose COMMIT
  the call waits for, as before;
- `detached`: `Database.fetch(..., read_only=True)`, as the service now.

It reports each way's p50 and p95 per statement, and the p50 of the
per-pair differences (waited minus detached: what one call saves).

    .venv/bin/python bench/read_commit.py --database-url URL \\
        --workload bench/results/<run>/workload-20000.json [--seconds 20]

URL is the schema owner's, of a database a bench run loaded
(`bench/run.py --database-url URL ...`); the reads act for all users as
the service role (faraday_platform), as the service does for a service
token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import floor_sql
from loadgen import build_requests

from memory_service import config
from memory_service.server import pool_settings
from memory_service.storage import session
from memory_service.storage.database import Database
from memory_service.storage.migrate import app_role_url, platform_role_url

# kind -> (request -> (sql, args), generic plan): as the service runs each
STATEMENTS: dict[str, tuple[Callable[[Any], floor_sql.Statement], bool]] = {
    "recall": (lambda r: floor_sql.prepare_recall(r, False, None, None).statement, True),
    "list_lessons": (floor_sql.list_lessons, False),
    "search_lessons": (floor_sql.search_lessons, True),
}


def _ms(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q * 100) - 1] * 1000


async def measure(db: Database, kind: str, workload: dict[str, Any], seconds: float) -> str:
    to_sql, generic_plan = STATEMENTS[kind]
    statements = [to_sql(r) for r in build_requests(kind, workload)]
    times: dict[bool, list[float]] = {False: [], True: []}
    saved: list[float] = []
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        sql, args = statements[n % len(statements)]
        pair = {}
        # The pair's order alternates too: neither way always runs first.
        for read_only in (n % 2 == 0, n % 2 == 1):
            started = time.perf_counter()
            await db.fetch(sql, *args, generic_plan=generic_plan, read_only=read_only)
            pair[read_only] = time.perf_counter() - started
            times[read_only].append(pair[read_only])
        saved.append(pair[False] - pair[True])
        n += 1
    return (
        f"| {kind} | {n} | {_ms(times[False], 0.5):.3f} | {_ms(times[True], 0.5):.3f}"
        f" | {statistics.median(saved) * 1000:.3f}"
        f" | {_ms(times[False], 0.95):.3f} | {_ms(times[True], 0.95):.3f} |"
    )


async def main(options: argparse.Namespace, workload: dict[str, Any]) -> None:
    url = options.database_url
    db = Database(pool_settings(config.load(), app_role_url(url), platform_role_url(url)))
    await db.open()
    session.acting_user.set(session.ALL_USERS)
    try:
        print(
            "| statement | pairs | waited p50 ms | detached p50 ms | saved p50 ms"
            " | waited p95 ms | detached p95 ms |"
        )
        print("|---|--:|--:|--:|--:|--:|--:|")
        for kind in options.only:
            print(await measure(db, kind, workload, options.seconds), flush=True)
    finally:
        await db.close()


if __name__ == "__main__":
    import uvloop  # as the service and the floors run

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="the schema owner's URL")
    parser.add_argument("--workload", required=True, help="a bench run's workload-N.json")
    parser.add_argument("--seconds", type=float, default=20.0, help="per statement")
    parser.add_argument("--only", nargs="+", choices=sorted(STATEMENTS), default=list(STATEMENTS))
    options = parser.parse_args()
    with open(options.workload) as f:
        workload = json.load(f)
    uvloop.run(main(options, workload))
