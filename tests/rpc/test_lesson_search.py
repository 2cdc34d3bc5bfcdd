"""SearchLessons through its term index (migration 0019): the same ranking as a
scan of every lesson, the candidate cap, the rarest word drawing the candidates
(migration 0020), the term job shared by several processes (migration 0021),
and postings that follow every change."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
)

from memory_service.server import start
from memory_service.services.lessons import Lessons
from memory_service.storage.lessons import JOB_LOCK_NAMESPACE, TERM_JOB, LessonStore
from memory_service.storage.lessons import SEARCH_CANDIDATES_PER_WORD as CAP
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

_WORDS = ("fractions", "volcano", "river", "poetry", "magnets", "algebra", "maps", "rhythm")

# Lessons of one owner, written as the schema owner in one statement (the
# insert trigger fills lesson_terms as for any writer). Title, content
# area and text draw words from _WORDS, so ranks spread over all weights.
_INSERT_LESSONS = """
INSERT INTO lessons (title, user_id, content_area, lesson_data, status)
SELECT t.title, $1::uuid, t.area, jsonb_build_object('text', t.body), t.status
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS t (title, area, body, status)
"""

# What SearchLessons returned before it had an index: every lesson read.
_SCAN = """
SELECT id, ts_rank_cd(search_vector, q, 32) AS rank
FROM lessons, websearch_to_tsquery('english', $1) q
WHERE search_vector @@ q
ORDER BY rank DESC, id DESC
"""


async def _insert(url: str, user: str, rows: list[tuple[str, str, str, str]]) -> None:
    conn = await asyncpg.connect(url)
    try:
        columns = [list(column) for column in zip(*rows, strict=True)]
        await conn.execute(_INSERT_LESSONS, user, *columns)
    finally:
        await conn.close()


async def _scan(url: str, query: str) -> list[tuple[int, float]]:
    conn = await asyncpg.connect(url)
    try:
        return [(r["id"], r["rank"]) for r in await conn.fetch(_SCAN, query)]
    finally:
        await conn.close()


async def _all_matches(stub, query: str, **fields: Any) -> list[tuple[int, float]]:
    """Every page of a search, in order."""
    found: list[tuple[int, float]] = []
    token = ""
    while True:
        response = await stub.SearchLessons(
            lesson_service_pb2.SearchLessonsRequest(
                query=query, page_size=100, page_token=token, **fields
            )
        )
        found.extend((m.lesson.id, m.rank) for m in response.matches)
        token = response.next_page_token
        if not token:
            return found


def _same(found: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [i for i, _ in found] == [i for i, _ in expected]
    assert [r for _, r in found] == pytest.approx([r for _, r in expected], abs=1e-6)


def _sentence(n: int, k: int) -> str:
    return " ".join(_WORDS[(n * (j + 3) + k * j) % len(_WORDS)] for j in range(1 + n % 5))


async def test_ranking_is_a_scan_of_every_lesson(admin_stub, lesson_stub, database_url) -> None:
    user = await register_user(admin_stub)
    rows = [
        (
            f"Lesson {n} {_sentence(n, 1)}",
            _sentence(n, 2)[:100],
            f"{_sentence(n, 3)} then {_sentence(n + 7, 4)}",
            ("draft", "published", "archived")[n % 3],
        )
        for n in range(400)
    ]
    await _insert(database_url, user, rows)
    for query in (
        "fractions",
        "volcano river",
        '"river poetry"',
        "magnets or rhythm",
        "algebra -maps",
        "maps -maps",
        "the",
        "nowhere",
    ):
        _same(await _all_matches(lesson_stub, query), await _scan(database_url, query))
    # Filters narrow the same candidates the scan would.
    drafts = [
        (i, r)
        for i, r in await _scan(database_url, "volcano")
        if rows[i - 1][3] == "draft"  # ids start at 1 in a truncated table
    ]
    draft = lesson_pb2.LESSON_STATUS_DRAFT
    _same(await _all_matches(lesson_stub, "volcano", status=draft, user_id=user), drafts)


async def test_a_query_of_only_exclusions_matches_nothing(admin_stub, lesson_stub) -> None:
    # A scan matched every lesson without the word; no index can find those.
    user = await register_user(admin_stub)
    await admin_stub.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(lesson=lesson_pb2.Lesson(title="Maps", user_id=user))
    )
    assert await _all_matches(lesson_stub, "-volcano") == []


async def test_the_candidate_cap(admin_stub, lesson_stub, database_url) -> None:
    user = await register_user(admin_stub)
    # CAP + 50 lessons with "zebra", the word more often in some; every
    # 60th also says "quokka", which is rarer than the cap.
    await _insert(
        database_url,
        user,
        [
            (
                f"Unit {n}",
                "",
                " ".join(["zebra"] * (1 + n % 7)) + (" quokka" if n % 60 == 0 else ""),
                "draft",
            )
            for n in range(CAP + 50)
        ],
    )
    # One word: its best CAP lessons, exactly as the scan ranks them, then no more.
    zebra = await _all_matches(lesson_stub, "zebra")
    _same(zebra, (await _scan(database_url, "zebra"))[:CAP])
    # Every word needed: the rarer word's lessons hold all the matches.
    both = await _all_matches(lesson_stub, "zebra quokka")
    assert len(both) == len(range(0, CAP + 50, 60))
    _same(both, await _scan(database_url, "zebra quokka"))
    # Either word: each word's best CAP, ranked as the scan ranks them.
    drawn = {i for i, _ in zebra} | {i for i, _ in await _scan(database_url, "quokka")}
    either = await _all_matches(lesson_stub, "zebra or quokka")
    _same(either, [m for m in await _scan(database_url, "zebra or quokka") if m[0] in drawn])
    assert CAP < len(either) < CAP + len(both)


async def test_the_rarest_of_two_common_words_draws_the_candidates(
    admin_stub, lesson_stub, database_url, server
) -> None:
    """Both words in more lessons than the cap: their capped counts tie, and
    only the lesson term job's counts tell which is rarer."""
    user = await register_user(admin_stub)
    common = CAP + 300  # "aardvark" alone, said often: its best postings
    rarer = CAP + 100  # "aardvark narwhal", once each: the rarer word
    await _insert(
        database_url,
        user,
        [(f"Common {n}", "", " ".join(["aardvark"] * 8), "draft") for n in range(common)]
        + [(f"Rarer {n}", "", "aardvark narwhal", "draft") for n in range(rarer - 1)]
        # The best match: both words close together, three times over.
        + [("Best", "", "aardvark narwhal aardvark narwhal aardvark narwhal", "draft")],
    )
    exact = await _scan(database_url, "aardvark narwhal")
    assert len(exact) == rarer
    # Uncounted, the tie goes to "aardvark", whose best CAP lessons lack
    # "narwhal": nothing found.
    assert await _all_matches(lesson_stub, "aardvark narwhal") == []

    lessons = Lessons(LessonStore(server.database), None)
    assert await lessons.count_terms() >= 2
    assert await lessons.count_terms() == 0  # nothing changed since
    found = await _all_matches(lesson_stub, "aardvark narwhal")
    # "narwhal" draws: its best CAP lessons, ranked as the scan ranks them,
    # the best match first.
    assert len(found) == CAP
    _same(found, [m for m in exact if m[0] in {i for i, _ in found}])
    assert found[0] == pytest.approx(exact[0])

    # Below the cap again, "narwhal" loses its count, is counted as the
    # caller sees it, and its lessons are all read: the scan's ranking.
    conn = await asyncpg.connect(database_url)
    try:
        deleted = await conn.execute("DELETE FROM lessons WHERE title LIKE 'Rarer 1%'")
        assert await lessons.count_terms() >= 2  # "narwhal" gone, "aardvark" lower
        counted = await conn.fetch(
            "SELECT lexeme, lessons FROM lesson_term_frequencies"
            " WHERE lexeme IN ('aardvark', 'narwhal')"
        )
    finally:
        await conn.close()
    remaining = common + rarer - int(deleted.split()[1])
    assert [tuple(r) for r in counted] == [("aardvark", remaining)]
    _same(
        await _all_matches(lesson_stub, "aardvark narwhal"),
        await _scan(database_url, "aardvark narwhal"),
    )


async def test_the_cap_is_a_setting(admin_stub, database_url, app_url) -> None:
    user = await register_user(admin_stub)
    await _insert(
        database_url,
        user,
        [(f"Herd {n}", "", " ".join(["wapiti"] * (1 + n % 4)), "draft") for n in range(30)],
    )
    running = await start(TEST_SETTINGS.with_overrides(search_candidates_per_word=20), app_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = lesson_service_pb2_grpc.LessonServiceStub(channel)
            found = await _all_matches(stub, "wapiti")
        # Its job counts the words past its own cap.
        await Lessons(LessonStore(running.database, 20), None).count_terms()
        counted = await _counted(database_url, "wapiti")
        # Counted again past the default cap, for the other tests.
        await Lessons(LessonStore(running.database), None).count_terms()
    finally:
        await running.stop(0.5)
    _same(found, (await _scan(database_url, "wapiti"))[:20])
    assert counted == 30
    assert await _counted(database_url, "wapiti") is None


async def test_processes_share_the_lesson_term_job(server, database_url) -> None:
    """A run does nothing while another process's holds the job, or when the last
    one started within the window it is given (migration 0021)."""
    lessons = Lessons(LessonStore(server.database), None)
    assert await lessons.count_terms() is not None  # no window: it runs
    started = await _term_job_started(database_url)
    assert await lessons.count_terms(3600) is None  # it just ran
    assert await _term_job_started(database_url) == started
    assert await lessons.count_terms(0.001) is not None  # the window has passed
    started = await _term_job_started(database_url)

    # Another process's run under way: its lock held, as a run holds it.
    other = await asyncpg.connect(database_url)
    try:
        await other.execute(
            "SELECT pg_advisory_lock($1, hashtext($2))", JOB_LOCK_NAMESPACE, TERM_JOB
        )
        assert await lessons.count_terms() is None
        assert await _term_job_started(database_url) == started
        await other.execute(
            "SELECT pg_advisory_unlock($1, hashtext($2))", JOB_LOCK_NAMESPACE, TERM_JOB
        )
        assert await lessons.count_terms() is not None
        assert await _term_job_started(database_url) > started
    finally:
        await other.close()


async def test_two_servers_recount_once_a_half_interval_at_most(app_url, database_url) -> None:
    """Each server runs the job every interval; across both, the runs that read
    the postings start at least half an interval apart."""
    interval = 2.0
    settings = TEST_SETTINGS.with_overrides(lesson_terms_interval_seconds=interval)
    before = await _term_job_started(database_url)
    starts = set()
    # Out of step: the second's runs come between the first's, where only the
    # window keeps them from reading the postings again.
    servers = [await start(settings, app_url)]
    try:
        await asyncio.sleep(0.3 * interval)
        servers.append(await start(settings, app_url))
        deadline = asyncio.get_running_loop().time() + 2.5 * interval
        while asyncio.get_running_loop().time() < deadline:
            starts.add(await _term_job_started(database_url))
            await asyncio.sleep(0.02)
    finally:
        for running in servers:
            await running.stop(0.5)
    runs = sorted(t for t in starts if t is not None and (before is None or t > before))
    assert runs, "no server ran the job"
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(runs)]
    assert all(gap >= interval / 2 for gap in gaps), gaps


async def _term_job_started(url: str) -> Any:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT started_at FROM job_runs WHERE job = $1", TERM_JOB)
    finally:
        await conn.close()


async def _counted(url: str, lexeme: str) -> int | None:
    conn = await asyncpg.connect(url)
    try:
        lessons: int | None = await conn.fetchval(
            "SELECT lessons FROM lesson_term_frequencies WHERE lexeme = $1", lexeme
        )
        return lessons
    finally:
        await conn.close()


async def _postings(url: str, lesson_id: int) -> set[tuple[str, float, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT lexeme, impact, status FROM lesson_terms WHERE lesson_id = $1", lesson_id
        )
        expected = await conn.fetch(
            "SELECT t.lexeme, t.impact, l.status FROM lessons l,"
            " faraday_lesson_terms(l.search_vector) t WHERE l.id = $1",
            lesson_id,
        )
    finally:
        await conn.close()
    got = {(r["lexeme"], r["impact"], r["status"]) for r in rows}
    assert got == {(r["lexeme"], r["impact"], r["status"]) for r in expected}
    return got


async def _ids(stub, query: str) -> list[int]:
    return [i for i, _ in await _all_matches(stub, query)]


async def test_postings_follow_updates_and_deletes(admin_stub, lesson_stub, database_url) -> None:
    user = await register_user(admin_stub)
    other = await register_user(admin_stub)
    lesson = await admin_stub.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(title="Volcano basics", user_id=user)
        )
    )
    kept = await admin_stub.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(title="Volcano safety", user_id=other)
        )
    )
    assert {p[0] for p in await _postings(database_url, lesson.id)} == {"volcano", "basic"}
    assert await _ids(lesson_stub, "volcano") == [kept.id, lesson.id]

    lesson.title = "Glacier basics"
    lesson.lesson_data.update({"text": "Ice moves slowly."})
    lesson.status = lesson_pb2.LESSON_STATUS_PUBLISHED
    await admin_stub.UpsertLesson(admin_service_pb2.UpsertLessonRequest(lesson=lesson))
    postings = await _postings(database_url, lesson.id)
    assert {p[0] for p in postings} == {"glacier", "basic", "ice", "move", "slowli"}
    assert {p[2] for p in postings} == {"published"}
    assert await _ids(lesson_stub, "volcano") == [kept.id]
    assert await _ids(lesson_stub, "glacier ice") == [lesson.id]

    await admin_stub.DeleteLesson(admin_service_pb2.DeleteLessonRequest(id=lesson.id))
    assert await _postings(database_url, lesson.id) == set()
    assert await _ids(lesson_stub, "basics") == []
    # Erasing a user takes their lessons' postings with the lessons.
    await admin_stub.DeleteUserData(admin_service_pb2.DeleteUserDataRequest(user_id=other))
    assert await _postings(database_url, kept.id) == set()
    assert await _ids(lesson_stub, "volcano") == []
