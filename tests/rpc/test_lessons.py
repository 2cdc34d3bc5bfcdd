"""LessonService over a real channel: get, list filters, pagination, search, the Redis cache."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    registry_pb2,
)
from google.type import date_pb2

from memory_service.server import start
from tests.rpc.conftest import TEST_SETTINGS
from tests.rpc.helpers import field_violations, register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


def _date(year: int, month: int, day: int) -> date_pb2.Date:
    return date_pb2.Date(year=year, month=month, day=day)


async def _category(admin_stub, name: str, parent_id: int = 0) -> registry_pb2.SubjectCategory:
    return await admin_stub.UpsertSubjectCategory(
        admin_service_pb2.UpsertSubjectCategoryRequest(
            category=registry_pb2.SubjectCategory(name=name, parent_id=parent_id, is_active=True)
        )
    )


async def _profile(admin_stub, name: str) -> registry_pb2.AssistantProfile:
    return await admin_stub.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(name=name, model_version="gpt-4o-2024-08-06")
        )
    )


async def _lesson(
    admin_stub,
    user_id: str,
    title: str,
    *,
    lesson_data: dict[str, Any] | None = None,
    **fields: Any,
) -> lesson_pb2.Lesson:
    lesson = lesson_pb2.Lesson(title=title, user_id=user_id, **fields)
    if lesson_data:
        lesson.lesson_data.update(lesson_data)
    return await admin_stub.UpsertLesson(admin_service_pb2.UpsertLessonRequest(lesson=lesson))


async def _get(
    stub: lesson_service_pb2_grpc.LessonServiceStub, lesson_id: int
) -> lesson_pb2.Lesson:
    return await stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=lesson_id))


# --- GetLesson -------------------------------------------------------------


async def test_get_lesson_round_trips_every_field_with_names(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    math = await _category(admin_stub, "Mathematics")
    helper = await _profile(admin_stub, "Lesson Planner")
    lesson = lesson_pb2.Lesson(
        title="Adding fractions",
        user_id=user,
        subject_category_id=math.id,
        assistant_profile_id=helper.id,
        grade_level="5",
        week_of=_date(2025, 9, 1),
        content_area="Fractions",
        status=lesson_pb2.LESSON_STATUS_PUBLISHED,
        tags=["fractions", "group-work", "fractions"],
        related_lesson_ids=[7, 3, 7],
    )
    lesson.lesson_data.update({"text": "Use pizza slices.", "subject": "Math", "minutes": 45})
    lesson.objectives.list_value.values.add().string_value = "Add like denominators"
    lesson.materials.struct_value.update({"paper": True})
    lesson.activities.string_value = "Pair work"
    lesson.assessment_criteria.number_value = 3
    lesson.feedback.bool_value = True
    saved = await admin_stub.UpsertLesson(admin_service_pb2.UpsertLessonRequest(lesson=lesson))

    assert saved.id > 0
    assert saved.subject_category_name == "Mathematics"
    assert saved.assistant_profile_name == "Lesson Planner"
    assert saved.tags == ["fractions", "group-work"]  # duplicates dropped, order kept
    assert saved.related_lesson_ids == [7, 3]
    assert saved.week_of == _date(2025, 9, 1)
    assert saved.lesson_data["minutes"] == 45
    assert saved.objectives.list_value.values[0].string_value == "Add like denominators"
    assert saved.materials.struct_value["paper"] is True
    assert saved.activities.string_value == "Pair work"
    assert saved.assessment_criteria.number_value == 3
    assert saved.feedback.bool_value is True
    assert saved.HasField("create_time") and saved.HasField("update_time")
    assert await _get(lesson_stub, saved.id) == saved


async def test_get_lesson_without_subject_or_assistant_is_found(admin_stub, lesson_stub) -> None:
    # The documented query's inner joins would hide this lesson.
    user = await register_user(admin_stub)
    saved = await _lesson(admin_stub, user, "Free reading")
    got = await _get(lesson_stub, saved.id)
    assert got.title == "Free reading"
    assert got.status == lesson_pb2.LESSON_STATUS_DRAFT  # UNSPECIFIED on write
    assert got.subject_category_id == 0 and got.subject_category_name == ""
    assert got.assistant_profile_id == 0 and got.assistant_profile_name == ""
    assert not got.HasField("week_of") and not got.HasField("objectives")


@pytest.mark.parametrize("lesson_id", [12345, 2**31, 2**63 - 1])
async def test_get_missing_lesson_is_not_found(lesson_stub, lesson_id: int) -> None:
    error = await _error(_get(lesson_stub, lesson_id))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "lesson" in (error.details() or "")


@pytest.mark.parametrize("lesson_id", [0, -1])
async def test_get_lesson_needs_a_positive_id(lesson_stub, lesson_id: int) -> None:
    error = await _error(_get(lesson_stub, lesson_id))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["id"]


# --- ListLessons -----------------------------------------------------------


@dataclass
class Catalog:
    alice: str
    bob: str
    math: int
    science: int


@pytest.fixture
async def catalog(admin_stub) -> Catalog:
    """Five lessons, created in this order (so listed in the reverse order)."""
    alice = await register_user(admin_stub, "alice@school.example.org")
    bob = await register_user(admin_stub, "bob@school.example.org")
    math = (await _category(admin_stub, "Math")).id
    science = (await _category(admin_stub, "Science")).id
    published = lesson_pb2.LESSON_STATUS_PUBLISHED
    await _lesson(
        admin_stub, alice, "Fractions intro",
        subject_category_id=math, grade_level="5", week_of=_date(2025, 9, 1),
        status=published, tags=["fractions", "group-work"],
        lesson_data={"subject": "Math", "grade_level": "5"},
    )  # fmt: skip
    await _lesson(
        admin_stub, alice, "Decimals",
        subject_category_id=math, grade_level="7", week_of=_date(2025, 9, 8),
        tags=["decimals"], lesson_data={"subject": "Math", "grade_level": "7"},
    )  # fmt: skip
    await _lesson(
        admin_stub, bob, "Ratios",
        subject_category_id=math, grade_level="7", week_of=_date(2025, 9, 15),
        status=published, tags=["fractions", "ratios"],
        lesson_data={"subject": "Math", "grade_level": "7", "unit": {"name": "ratios"}},
    )  # fmt: skip
    await _lesson(
        admin_stub, bob, "Cells",
        subject_category_id=science, grade_level="7", week_of=_date(2025, 9, 22),
        status=lesson_pb2.LESSON_STATUS_ARCHIVED, tags=["biology"],
        lesson_data={"subject": "Science", "grade_level": "7"},
    )  # fmt: skip
    await _lesson(admin_stub, alice, "Untitled plan")
    return Catalog(alice, bob, math, science)


FILTERS: list[tuple[str, Callable[[Catalog], dict[str, Any]], list[str]]] = [
    ("none", lambda c: {}, ["Untitled plan", "Cells", "Ratios", "Decimals", "Fractions intro"]),
    ("owner", lambda c: {"user_id": c.alice}, ["Untitled plan", "Decimals", "Fractions intro"]),
    (
        "status",
        lambda c: {"status": lesson_pb2.LESSON_STATUS_PUBLISHED},
        ["Ratios", "Fractions intro"],
    ),
    ("status archived", lambda c: {"status": lesson_pb2.LESSON_STATUS_ARCHIVED}, ["Cells"]),
    ("week from", lambda c: {"week_of_start": _date(2025, 9, 8)}, ["Cells", "Ratios", "Decimals"]),
    ("week to", lambda c: {"week_of_end": _date(2025, 9, 8)}, ["Decimals", "Fractions intro"]),
    (
        "week range",
        lambda c: {"week_of_start": _date(2025, 9, 8), "week_of_end": _date(2025, 9, 15)},
        ["Ratios", "Decimals"],
    ),
    ("grade", lambda c: {"grade_level": "7"}, ["Cells", "Ratios", "Decimals"]),
    ("subject id", lambda c: {"subject_category_id": c.science}, ["Cells"]),
    (
        "subject name",
        lambda c: {"subject_category_name": "Math"},
        ["Ratios", "Decimals", "Fractions intro"],
    ),
    ("subject name unknown", lambda c: {"subject_category_name": "History"}, []),
    ("one tag", lambda c: {"tags": ["fractions"]}, ["Ratios", "Fractions intro"]),
    ("all tags", lambda c: {"tags": ["fractions", "ratios"]}, ["Ratios"]),
    (
        "lesson_data attributes",
        lambda c: {"lesson_data": {"subject": "Math", "grade_level": "7"}},
        ["Ratios", "Decimals"],
    ),
    ("lesson_data nested", lambda c: {"lesson_data": {"unit": {"name": "ratios"}}}, ["Ratios"]),
    ("lesson_data no match", lambda c: {"lesson_data": {"subject": "Art"}}, []),
    (
        "combined",
        lambda c: {
            "user_id": c.bob,
            "grade_level": "7",
            "status": lesson_pb2.LESSON_STATUS_PUBLISHED,
        },
        ["Ratios"],
    ),
]


@pytest.mark.parametrize(
    ("request_fields", "titles"), [f[1:] for f in FILTERS], ids=[f[0] for f in FILTERS]
)
async def test_list_lessons_filters(
    lesson_stub,
    catalog: Catalog,
    request_fields: Callable[[Catalog], dict[str, Any]],
    titles: list[str],
) -> None:
    fields = request_fields(catalog)
    request = lesson_service_pb2.ListLessonsRequest(
        **{k: v for k, v in fields.items() if k != "lesson_data"}
    )
    if "lesson_data" in fields:
        request.lesson_data.update(fields["lesson_data"])
    response = await lesson_stub.ListLessons(request)
    assert [lesson.title for lesson in response.lessons] == titles
    assert response.next_page_token == ""


async def test_list_lessons_pages_without_duplicates_or_gaps(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    other = await register_user(admin_stub)
    created = [(await _lesson(admin_stub, user, f"Lesson {i}")).id for i in range(8)]
    await _lesson(admin_stub, other, "Someone else's")
    seen: list[int] = []
    token = ""
    pages = 0
    while True:
        response = await lesson_stub.ListLessons(
            lesson_service_pb2.ListLessonsRequest(user_id=user, page_size=3, page_token=token)
        )
        pages += 1
        seen.extend(lesson.id for lesson in response.lessons)
        token = response.next_page_token
        if not token:
            break
    assert pages == 3
    assert seen == sorted(created, reverse=True)


async def test_list_lessons_page_size_zero_means_fifty(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    for i in range(51):
        await _lesson(admin_stub, user, f"Lesson {i}")
    response = await lesson_stub.ListLessons(lesson_service_pb2.ListLessonsRequest())
    assert len(response.lessons) == 50 and response.next_page_token


async def test_list_token_reused_with_other_filters_is_rejected(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    for i in range(3):
        await _lesson(admin_stub, user, f"Lesson {i}", grade_level="7")
    first = await lesson_stub.ListLessons(
        lesson_service_pb2.ListLessonsRequest(grade_level="7", page_size=1)
    )
    assert first.next_page_token
    error = await _error(
        lesson_stub.ListLessons(
            lesson_service_pb2.ListLessonsRequest(
                grade_level="8", page_size=1, page_token=first.next_page_token
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["page_token"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (lesson_service_pb2.ListLessonsRequest(page_size=-1), "page_size"),
        (lesson_service_pb2.ListLessonsRequest(page_token="not a token"), "page_token"),
        (lesson_service_pb2.ListLessonsRequest(user_id="not-a-uuid"), "user_id"),
        (lesson_service_pb2.ListLessonsRequest(status=99), "status"),  # type: ignore[arg-type]
        (
            lesson_service_pb2.ListLessonsRequest(week_of_start=_date(2025, 2, 30)),
            "week_of_start",
        ),
        (lesson_service_pb2.ListLessonsRequest(week_of_end=_date(2025, 13, 1)), "week_of_end"),
        (lesson_service_pb2.ListLessonsRequest(grade_level="x" * 21), "grade_level"),
        (lesson_service_pb2.ListLessonsRequest(subject_category_id=-4), "subject_category_id"),
        (lesson_service_pb2.ListLessonsRequest(tags=[f"t{i}" for i in range(33)]), "tags"),
        (lesson_service_pb2.ListLessonsRequest(tags=["ok", " "]), "tags[1]"),
    ],
)
async def test_list_lessons_rejects_bad_filters(
    lesson_stub, bad: lesson_service_pb2.ListLessonsRequest, field: str
) -> None:
    error = await _error(lesson_stub.ListLessons(bad))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == [field]


async def test_list_lessons_lesson_data_filter_is_limited_to_16_kib(lesson_stub) -> None:
    request = lesson_service_pb2.ListLessonsRequest()
    request.lesson_data.update({"text": "x" * 17_000})
    error = await _error(lesson_stub.ListLessons(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["lesson_data"]


# --- SearchLessons ---------------------------------------------------------


async def _search(stub, query: str, **fields: Any) -> lesson_service_pb2.SearchLessonsResponse:
    return await stub.SearchLessons(lesson_service_pb2.SearchLessonsRequest(query=query, **fields))


async def test_search_ranks_title_above_content_area_above_text(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    body = await _lesson(
        admin_stub, user, "Number sense", lesson_data={"text": "We practise fractions daily."}
    )
    area = await _lesson(admin_stub, user, "Ratios", content_area="Fractions")
    title = await _lesson(admin_stub, user, "Fraction basics")
    await _lesson(admin_stub, user, "Photosynthesis", lesson_data={"text": "Plants and light."})

    # "fractions" and "Fraction" stem to the same lexeme.
    response = await _search(lesson_stub, "fractions")
    assert [m.lesson.id for m in response.matches] == [title.id, area.id, body.id]
    ranks = [m.rank for m in response.matches]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1]
    assert all(0.0 < r < 1.0 for r in ranks)
    assert response.matches[0].lesson == await _get(lesson_stub, title.id)
    assert response.next_page_token == ""


async def test_search_web_syntax_and_misses(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    await _lesson(admin_stub, user, "Fractions on the number line")
    pizza = await _lesson(admin_stub, user, "Fractions with pizza")
    assert [m.lesson.id for m in (await _search(lesson_stub, "fraction -line")).matches] == [
        pizza.id
    ]
    assert len((await _search(lesson_stub, '"number line"')).matches) == 1
    assert len((await _search(lesson_stub, "pizza or line")).matches) == 2
    assert list((await _search(lesson_stub, "photosynthesis")).matches) == []
    assert list((await _search(lesson_stub, "the")).matches) == []  # only a stop word


async def test_search_filters_by_owner_and_status(admin_stub, lesson_stub) -> None:
    alice = await register_user(admin_stub)
    bob = await register_user(admin_stub)
    mine = await _lesson(admin_stub, alice, "Fractions", status=lesson_pb2.LESSON_STATUS_PUBLISHED)
    draft = await _lesson(admin_stub, alice, "Fractions draft")
    theirs = await _lesson(admin_stub, bob, "Fractions", status=lesson_pb2.LESSON_STATUS_PUBLISHED)

    def ids(response: lesson_service_pb2.SearchLessonsResponse) -> set[int]:
        return {m.lesson.id for m in response.matches}

    assert ids(await _search(lesson_stub, "fractions", user_id=alice)) == {mine.id, draft.id}
    published = lesson_pb2.LESSON_STATUS_PUBLISHED
    assert ids(await _search(lesson_stub, "fractions", status=published)) == {mine.id, theirs.id}
    assert ids(await _search(lesson_stub, "fractions", user_id=bob, status=published)) == {
        theirs.id
    }


async def test_search_pages_through_every_match_once(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    created = {(await _lesson(admin_stub, user, f"Fractions part {i}")).id for i in range(5)}
    seen: list[int] = []
    token = ""
    for _ in range(3):
        response = await _search(lesson_stub, "fractions", page_size=2, page_token=token)
        seen.extend(m.lesson.id for m in response.matches)
        token = response.next_page_token
    assert token == ""
    assert sorted(seen) == sorted(created) and len(seen) == len(created)

    first = await _search(lesson_stub, "fractions", page_size=2)
    error = await _error(
        _search(lesson_stub, "part", page_size=2, page_token=first.next_page_token)
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == ["page_token"]


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        (lesson_service_pb2.SearchLessonsRequest(), "query"),
        (lesson_service_pb2.SearchLessonsRequest(query="   "), "query"),
        (lesson_service_pb2.SearchLessonsRequest(query="x" * 501), "query"),
        (lesson_service_pb2.SearchLessonsRequest(query="a\x00b"), "query"),
        (lesson_service_pb2.SearchLessonsRequest(query="x", user_id="bob"), "user_id"),
        (lesson_service_pb2.SearchLessonsRequest(query="x", page_size=-5), "page_size"),
        (lesson_service_pb2.SearchLessonsRequest(query="x", page_token="%%%"), "page_token"),
    ],
)
async def test_search_rejects_bad_requests(
    lesson_stub, bad: lesson_service_pb2.SearchLessonsRequest, field: str
) -> None:
    error = await _error(lesson_stub.SearchLessons(bad))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error) == [field]


# --- The Redis cache -------------------------------------------------------


def _key(lesson_id: int) -> str:
    return f"faraday:lesson:v1:{lesson_id}"


async def _sql(database_url: str, statement: str, *args: Any) -> None:
    """Change a row behind the service's back."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def test_get_lesson_is_served_from_the_cache(cached_stubs, database_url) -> None:
    user = await register_user(cached_stubs.admin_stub)
    saved = await _lesson(cached_stubs.admin_stub, user, "Cached title")
    assert await cached_stubs.redis.get(_key(saved.id)) is None

    first = await _get(cached_stubs.lesson_stub, saved.id)
    assert first == saved
    assert await cached_stubs.redis.get(_key(saved.id))
    assert 0 < await cached_stubs.redis.ttl(_key(saved.id)) <= TEST_SETTINGS.cache_ttl_seconds

    await _sql(database_url, "UPDATE lessons SET title = 'Changed in SQL' WHERE id = $1", saved.id)
    assert await _get(cached_stubs.lesson_stub, saved.id) == first  # from Redis

    await cached_stubs.redis.delete(_key(saved.id))
    assert (await _get(cached_stubs.lesson_stub, saved.id)).title == "Changed in SQL"


async def test_upsert_lesson_invalidates_the_cache(cached_stubs) -> None:
    user = await register_user(cached_stubs.admin_stub)
    saved = await _lesson(cached_stubs.admin_stub, user, "Before")
    await _get(cached_stubs.lesson_stub, saved.id)

    changed = lesson_pb2.Lesson(id=saved.id, title="After", user_id=user)
    await cached_stubs.admin_stub.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(lesson=changed)
    )
    assert (await _get(cached_stubs.lesson_stub, saved.id)).title == "After"


async def test_delete_lesson_invalidates_the_cache(cached_stubs) -> None:
    user = await register_user(cached_stubs.admin_stub)
    saved = await _lesson(cached_stubs.admin_stub, user, "Doomed")
    await _get(cached_stubs.lesson_stub, saved.id)

    await cached_stubs.admin_stub.DeleteLesson(admin_service_pb2.DeleteLessonRequest(id=saved.id))
    error = await _error(_get(cached_stubs.lesson_stub, saved.id))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_renaming_a_subject_or_assistant_invalidates_its_lessons(cached_stubs) -> None:
    admin = cached_stubs.admin_stub
    user = await register_user(admin)
    math = await _category(admin, "Math")
    helper = await _profile(admin, "Helper")
    lessons = [
        await _lesson(admin, user, f"Lesson {i}", subject_category_id=math.id,
                      assistant_profile_id=helper.id)
        for i in range(3)
    ]  # fmt: skip
    unrelated = await _lesson(admin, user, "No subject")
    for lesson in [*lessons, unrelated]:
        await _get(cached_stubs.lesson_stub, lesson.id)

    await admin.UpsertSubjectCategory(
        admin_service_pb2.UpsertSubjectCategoryRequest(
            category=registry_pb2.SubjectCategory(id=math.id, name="Mathematics", is_active=True)
        )
    )
    renamed = [await _get(cached_stubs.lesson_stub, lesson.id) for lesson in lessons]
    assert {lesson.subject_category_name for lesson in renamed} == {"Mathematics"}
    assert await cached_stubs.redis.get(_key(unrelated.id))  # untouched

    await admin.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(
                id=helper.id, name="Planner", model_version="gpt-4o-2024-08-06"
            )
        )
    )
    renamed = [await _get(cached_stubs.lesson_stub, lesson.id) for lesson in lessons]
    assert {lesson.assistant_profile_name for lesson in renamed} == {"Planner"}


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def _frozen_redis() -> AsyncIterator[str]:
    """A server that accepts connections and never answers, like a hung Redis."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("redis_state", ["refusing", "frozen"])
async def test_lessons_are_served_from_postgres_when_redis_fails(
    database_url, redis_state: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        if redis_state == "frozen":
            url = await stack.enter_async_context(_frozen_redis())
        else:
            url = f"redis://127.0.0.1:{_unused_port()}/0"
        running = await start(TEST_SETTINGS.with_overrides(redis_url=url), database_url)
        stack.push_async_callback(running.stop, 1.0)
        channel = await stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        )
        admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        lessons = lesson_service_pb2_grpc.LessonServiceStub(channel)
        user = await register_user(admin)
        saved = await _lesson(admin, user, "Still here")
        began = time.monotonic()
        for _ in range(3):
            assert await _get(lessons, saved.id) == saved
        # Each call costs at most a get and a put timeout (50 ms), no retries.
        assert time.monotonic() - began < 2.0
        await admin.UpsertLesson(
            admin_service_pb2.UpsertLessonRequest(
                lesson=lesson_pb2.Lesson(id=saved.id, title="Changed", user_id=user)
            )
        )
        assert (await _get(lessons, saved.id)).title == "Changed"
