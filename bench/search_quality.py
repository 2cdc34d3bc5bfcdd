"""What SearchLessons' candidate cap costs in ranking, and what it saves in time.

Against a database the bench loaded (bench/run.py --database-url URL; the
owner's URL), as the service runs it: the service role, a service token's
view (every lesson), the service's own statement (storage/lessons.py). For
each cap, over the bench's lesson queries (bench/vocabulary.py):

- the statement's p50 and p95 through the service's pool (BEGIN, session
  settings, the statement, COMMIT), each query's second run;
- the first page (10) against the exact ranking's: the mean share of the
  exact top ten it holds, and the share of queries whose page is identical.
  The exact ranking is the same statement with a cap above every word's
  lesson count: every match read and ranked.

The lesson term job's counts (migration 0020) are refreshed first, unless
--no-count, which shows the ranking without them.

    .venv/bin/python bench/search_quality.py --database-url URL [--caps 500 200 100]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from vocabulary import search_query

from memory_service import config
from memory_service.server import pool_settings
from memory_service.services.lessons import Lessons
from memory_service.storage import lessons as lesson_sql
from memory_service.storage import session
from memory_service.storage.database import Database
from memory_service.storage.migrate import app_role_url, platform_role_url

PAGE = 10
EXACT_CAP = 2**31 - 2  # LIMIT cap + 1 still fits an int4


Page = list[tuple[int, float]]  # (lesson id, rank), best first


async def _pages(db: Database, queries: list[str], cap: int) -> tuple[dict[str, Page], list[float]]:
    pages: dict[str, Page] = {}
    seconds: list[float] = []
    for run in range(2):
        for query in queries:
            params = {"query": query, "offset": 0, "limit": PAGE}
            statement = lesson_sql._search_sql((), cap)
            started = time.perf_counter()
            rows = await db.fetch(
                statement.sql, *statement.args(params), generic_plan=True, replica_ok=True
            )
            if run:
                seconds.append(time.perf_counter() - started)
            pages[query] = [(r["id"], r["rank"]) for r in rows]
    return pages, seconds


async def main(args: argparse.Namespace) -> None:
    app_url = app_role_url(args.database_url)
    db = Database(pool_settings(config.load(), app_url, platform_role_url(app_url)))
    await db.open()
    try:
        if not args.no_count:
            started = time.perf_counter()
            changed = await Lessons(lesson_sql.LessonStore(db), None).count_terms()
            took = time.perf_counter() - started
            print(f"lesson term job: {changed} counts changed in {took:.1f} s")
        session.acting_user.set(session.ALL_USERS)
        r = random.Random(args.seed)
        queries = sorted({search_query(r) for _ in range(args.queries)})
        exact, seconds = await _pages(db, queries, EXACT_CAP)
        print(f"{len(queries)} distinct queries, page of {PAGE}")
        print(
            "| cap | p50 | p95 | exact top 10 held (mean) | identical first pages"
            " | rank sum / exact (mean) | first pages with the exact ranks |"
        )
        print("|--:|--:|--:|--:|--:|--:|--:|")

        def row(cap: str, pages: dict[str, Page], seconds: list[float]) -> None:
            matched = [q for q in queries if exact[q]]
            held = statistics.mean(
                len({i for i, _ in pages[q]} & {i for i, _ in exact[q]}) / len(exact[q])
                for q in matched
            )
            same = sum(pages[q] == exact[q] for q in queries) / len(queries)
            mass = statistics.mean(
                sum(r for _, r in pages[q]) / sum(r for _, r in exact[q]) for q in matched
            )
            ranks = sum(
                [round(r, 6) for _, r in pages[q]] == [round(r, 6) for _, r in exact[q]]
                for q in queries
            ) / len(queries)
            p95 = sorted(seconds)[int(len(seconds) * 0.95)]
            print(
                f"| {cap} | {statistics.median(seconds) * 1e3:.2f} ms | {p95 * 1e3:.2f} ms"
                f" | {held:.3f} | {same:.1%} | {mass:.3f} | {ranks:.1%} |"
            )

        row("all (exact)", exact, seconds)
        for cap in args.caps:
            pages, seconds = await _pages(db, queries, cap)
            row(str(cap), pages, seconds)
    finally:
        await db.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="the schema owner's URL")
    parser.add_argument("--caps", type=int, nargs="+", default=[500, 200, 100, 50])
    parser.add_argument(
        "--queries", type=int, default=300, help="queries drawn (then deduplicated)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-count", action="store_true", help="skip the lesson term job")
    asyncio.run(main(parser.parse_args()))
