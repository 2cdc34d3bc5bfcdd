"""AdminService over a real channel: the registry upserts, lesson writes, their errors."""

from __future__ import annotations

import math
import uuid
from typing import Any

import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    lesson_pb2,
    lesson_service_pb2,
    registry_pb2,
)
from google.type import date_pb2

from tests.rpc.helpers import field_violations, register_user

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _error(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def _invalid(call: object) -> list[str]:
    """The field paths of an INVALID_ARGUMENT answer."""
    error = await _error(call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    return field_violations(error)


def _upsert_user(stub, **fields: Any) -> Any:
    return stub.UpsertUser(admin_service_pb2.UpsertUserRequest(user=registry_pb2.User(**fields)))


def _upsert_category(stub, **fields: Any) -> Any:
    return stub.UpsertSubjectCategory(
        admin_service_pb2.UpsertSubjectCategoryRequest(
            category=registry_pb2.SubjectCategory(**fields)
        )
    )


def _upsert_profile(stub, **fields: Any) -> Any:
    return stub.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(**fields)
        )
    )


def _upsert_lesson(stub, **fields: Any) -> Any:
    return stub.UpsertLesson(
        admin_service_pb2.UpsertLessonRequest(lesson=lesson_pb2.Lesson(**fields))
    )


# --- Users -----------------------------------------------------------------


async def test_upsert_user_creates_then_matches_by_email(admin_stub) -> None:
    created = await _upsert_user(
        admin_stub,
        email="Ada@School.example.org",
        name="Ada",
        is_active=True,
        school="Hill School",
        department="Maths",
        subjects=["Math", "Science", "Math"],
        grade_levels=["6", "7"],
        custom_instructions="Use metric units.",
    )
    uuid.UUID(created.id)
    assert created.subjects == ["Math", "Science"]
    assert created.grade_levels == ["6", "7"]
    assert created.HasField("create_time") and created.HasField("update_time")

    # Same mailbox, other capitalisation: the same user, every field replaced
    # but is_active, which was left unset and so keeps its value.
    again = await _upsert_user(admin_stub, email="ada@school.example.org", name="Ada L.")
    assert again.id == created.id
    assert again.email == "ada@school.example.org" and again.name == "Ada L."
    assert again.school == "" and list(again.subjects) == []
    assert again.HasField("is_active") and again.is_active
    assert again.create_time == created.create_time


async def test_unset_is_active_registers_an_active_user(admin_stub) -> None:
    by_email = await _upsert_user(admin_stub, email="new@school.example.org")
    assert by_email.HasField("is_active") and by_email.is_active
    by_id = await _upsert_user(admin_stub, id=str(uuid.uuid4()), email="new2@school.example.org")
    assert by_id.HasField("is_active") and by_id.is_active


@pytest.mark.parametrize("match_by", ["email", "id"])
async def test_unset_is_active_keeps_an_existing_users_value(admin_stub, match_by: str) -> None:
    platform_id = str(uuid.uuid4())
    key = {"id": platform_id} if match_by == "id" else {}
    email = "keep@school.example.org"
    inactive = await _upsert_user(admin_stub, **key, email=email, is_active=False)
    assert inactive.HasField("is_active") and not inactive.is_active

    renamed = await _upsert_user(admin_stub, **key, email=email, name="Renamed")
    assert renamed.id == inactive.id and renamed.name == "Renamed"
    assert not renamed.is_active  # still inactive: unset did not reactivate

    active = await _upsert_user(admin_stub, **key, email=email, is_active=True)
    assert active.is_active
    again = await _upsert_user(admin_stub, **key, email=email, school="Hill School")
    assert again.is_active and again.school == "Hill School"  # still active


async def test_explicit_false_deactivates_a_user(admin_stub) -> None:
    email = "ada@school.example.org"
    user_id = await register_user(admin_stub, email)
    off = await _upsert_user(admin_stub, id=user_id, email=email, is_active=False)
    assert off.id == user_id and off.HasField("is_active") and not off.is_active
    # What was stored, read back by another path than the upsert's RETURNING.
    exported = [
        r
        async for r in admin_stub.ExportUserData(
            admin_service_pb2.ExportUserDataRequest(user_id=user_id)
        )
    ]
    assert exported[0].user.id == user_id and not exported[0].user.is_active


async def test_upsert_user_keeps_the_platforms_id(admin_stub) -> None:
    platform_id = str(uuid.uuid4())
    created = await _upsert_user(admin_stub, id=platform_id, email="grace@school.example.org")
    assert created.id == platform_id
    renamed = await _upsert_user(admin_stub, id=platform_id, email="hopper@school.example.org")
    assert renamed.id == platform_id and renamed.email == "hopper@school.example.org"


@pytest.mark.parametrize("email", ["taken@school.example.org", "TAKEN@school.example.org"])
async def test_email_of_another_user_id_already_exists(admin_stub, email: str) -> None:
    await register_user(admin_stub, "taken@school.example.org")
    error = await _error(_upsert_user(admin_stub, id=str(uuid.uuid4()), email=email))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS

    other = await register_user(admin_stub)
    error = await _error(_upsert_user(admin_stub, id=other, email=email))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({}, ["user.email"]),
        ({"email": "no-at-sign.example.org"}, ["user.email"]),
        ({"email": "a@b"}, ["user.email"]),
        ({"email": "a@example.org\n"}, ["user.email"]),
        ({"email": "a b@example.org"}, ["user.email"]),
        ({"email": "a" * 250 + "@example.org"}, ["user.email"]),
        ({"email": "a@example.org", "id": "42"}, ["user.id"]),
        ({"email": "a@example.org", "name": "x" * 256}, ["user.name"]),
        ({"email": "a@example.org", "school": "a\x00b"}, ["user.school"]),
        ({"email": "a@example.org", "subjects": ["s"] * 51}, ["user.subjects"]),
        ({"email": "a@example.org", "grade_levels": ["7", "x" * 101]}, ["user.grade_levels[1]"]),
        (
            {"email": "a@example.org", "custom_instructions": "x" * 8001},
            ["user.custom_instructions"],
        ),
        ({"email": "bad", "department": "x" * 256}, ["user.email", "user.department"]),
    ],
)
async def test_upsert_user_rejects_bad_fields(
    admin_stub, fields: dict[str, Any], violations: list[str]
) -> None:
    assert await _invalid(_upsert_user(admin_stub, **fields)) == violations


async def test_upsert_user_needs_a_user(admin_stub) -> None:
    assert await _invalid(admin_stub.UpsertUser(admin_service_pb2.UpsertUserRequest())) == ["user"]


# --- Preferences -----------------------------------------------------------


async def test_upsert_preferences_creates_then_replaces(admin_stub) -> None:
    user = await register_user(admin_stub)
    prefs = registry_pb2.UserPreferences(
        user_id=user, theme="dark", language="en-US", timezone="America/Chicago"
    )
    prefs.notifications.update({"email": True, "digest": "weekly"})
    saved = await admin_stub.UpsertUserPreferences(
        admin_service_pb2.UpsertUserPreferencesRequest(preferences=prefs)
    )
    assert saved.user_id == user and saved.theme == "dark" and saved.timezone == "America/Chicago"
    assert saved.notifications["digest"] == "weekly"
    assert saved.HasField("update_time")

    replaced = await admin_stub.UpsertUserPreferences(
        admin_service_pb2.UpsertUserPreferencesRequest(
            preferences=registry_pb2.UserPreferences(user_id=user, theme="light")
        )
    )
    assert replaced.theme == "light" and replaced.language == ""
    assert not replaced.HasField("notifications")


async def test_preferences_of_an_unknown_user_are_not_found(admin_stub) -> None:
    error = await _error(
        admin_stub.UpsertUserPreferences(
            admin_service_pb2.UpsertUserPreferencesRequest(
                preferences=registry_pb2.UserPreferences(user_id=str(uuid.uuid4()))
            )
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "user" in (error.details() or "")


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({}, ["preferences.user_id"]),
        ({"user_id": "me"}, ["preferences.user_id"]),
        ({"theme": "x" * 51}, ["preferences.theme"]),
        ({"language": "x" * 36}, ["preferences.language"]),
        ({"timezone": "x" * 65}, ["preferences.timezone"]),
    ],
)
async def test_upsert_preferences_rejects_bad_fields(
    admin_stub, fields: dict[str, Any], violations: list[str]
) -> None:
    fields = {"user_id": str(uuid.uuid4()), **fields} if fields else fields
    request = admin_service_pb2.UpsertUserPreferencesRequest(
        preferences=registry_pb2.UserPreferences(**fields)
    )
    assert await _invalid(admin_stub.UpsertUserPreferences(request)) == violations


# --- Subject categories ----------------------------------------------------


async def test_subject_levels_follow_parents_and_upserts_match_by_name(admin_stub) -> None:
    math = await _upsert_category(admin_stub, name="Math", description="Numbers", is_active=True)
    assert math.id > 0 and math.level == 1 and math.parent_id == 0
    algebra = await _upsert_category(admin_stub, name="Algebra", parent_id=math.id)
    assert algebra.level == 2 and algebra.parent_id == math.id

    metadata = {"color": "blue"}
    request = registry_pb2.SubjectCategory(name="Math", description="All of it")
    request.metadata.update(metadata)
    again = await admin_stub.UpsertSubjectCategory(
        admin_service_pb2.UpsertSubjectCategoryRequest(category=request)
    )
    assert again.id == math.id and again.description == "All of it"
    assert again.metadata["color"] == "blue"
    assert again.is_active  # left unset: kept


async def test_unset_subject_is_active_means_in_use_if_new_else_unchanged(admin_stub) -> None:
    new = await _upsert_category(admin_stub, name="Art")
    assert new.HasField("is_active") and new.is_active
    retired = await _upsert_category(admin_stub, name="Art", is_active=False)
    assert retired.id == new.id and not retired.is_active
    described = await _upsert_category(admin_stub, name="Art", description="Drawing")
    assert described.description == "Drawing" and not described.is_active
    renamed = await _upsert_category(admin_stub, id=new.id, name="Arts")
    assert renamed.name == "Arts" and not renamed.is_active  # by id, too
    back = await _upsert_category(admin_stub, id=new.id, name="Arts", is_active=True)
    assert back.is_active
    assert (await _upsert_category(admin_stub, name="Arts")).is_active


async def test_subjects_nest_five_levels_deep_and_no_deeper(admin_stub) -> None:
    parent = 0
    for level in range(1, 6):
        category = await _upsert_category(admin_stub, name=f"Level {level}", parent_id=parent)
        assert category.level == level
        parent = category.id
    error = await _error(_upsert_category(admin_stub, name="Level 6", parent_id=parent))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_moving_a_subject_moves_its_subtree(admin_stub) -> None:
    a = await _upsert_category(admin_stub, name="A")
    b = await _upsert_category(admin_stub, name="B", parent_id=a.id)
    c = await _upsert_category(admin_stub, name="C", parent_id=b.id)
    x = await _upsert_category(admin_stub, name="X")
    y = await _upsert_category(admin_stub, name="Y", parent_id=x.id)
    z = await _upsert_category(admin_stub, name="Z", parent_id=y.id)

    moved = await _upsert_category(admin_stub, name="B", parent_id=y.id)
    assert moved.id == b.id and moved.level == 3
    assert (await _upsert_category(admin_stub, name="C", parent_id=b.id)).level == 4

    # Under Z (level 3), B would be 4 and C 5: allowed; one deeper is not.
    assert (await _upsert_category(admin_stub, name="B", parent_id=z.id)).level == 4
    w = await _upsert_category(admin_stub, name="W", parent_id=z.id)
    v = await _upsert_category(admin_stub, name="V", parent_id=w.id)
    error = await _error(_upsert_category(admin_stub, name="B", parent_id=v.id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    # Rejected as a whole: B and C stay where they were.
    c_again = await _upsert_category(admin_stub, name="C", parent_id=b.id)
    assert c_again.id == c.id and c_again.level == 5


async def test_a_subject_cannot_be_its_own_ancestor(admin_stub) -> None:
    a = await _upsert_category(admin_stub, name="A")
    b = await _upsert_category(admin_stub, name="B", parent_id=a.id)
    own = await _error(_upsert_category(admin_stub, name="A", parent_id=a.id))
    assert own.code() == grpc.StatusCode.FAILED_PRECONDITION
    cycle = await _error(_upsert_category(admin_stub, name="A", parent_id=b.id))
    assert cycle.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_subject_rename_by_id(admin_stub) -> None:
    math = await _upsert_category(admin_stub, name="Math")
    await _upsert_category(admin_stub, name="Science")
    renamed = await _upsert_category(admin_stub, id=math.id, name="Mathematics")
    assert renamed.id == math.id and renamed.name == "Mathematics"

    taken = await _error(_upsert_category(admin_stub, id=math.id, name="Science"))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    missing = await _error(_upsert_category(admin_stub, id=9999, name="History"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


async def test_subject_with_unknown_parent_is_not_found(admin_stub) -> None:
    error = await _error(_upsert_category(admin_stub, name="Orphan", parent_id=4242))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "subject_category" in (error.details() or "")


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({}, ["category.name"]),
        ({"name": " "}, ["category.name"]),
        ({"name": "x" * 101}, ["category.name"]),
        ({"name": "Math", "parent_id": -1}, ["category.parent_id"]),
        ({"name": "Math", "parent_id": 2**31}, ["category.parent_id"]),
        ({"name": "Math", "description": "a\x00"}, ["category.description"]),
    ],
)
async def test_upsert_subject_rejects_bad_fields(
    admin_stub, fields: dict[str, Any], violations: list[str]
) -> None:
    assert await _invalid(_upsert_category(admin_stub, **fields)) == violations


# --- Assistant profiles ----------------------------------------------------


def _capability(name: str, priority: int = 0, **fields: Any) -> registry_pb2.AssistantCapability:
    return registry_pb2.AssistantCapability(name=name, priority=priority, **fields)


async def test_upsert_profile_replaces_its_capabilities(admin_stub) -> None:
    search = _capability("search", 1, description="Web search", is_enabled=True)
    search.parameters.update({"engine": "internal"})
    profile = await _upsert_profile(
        admin_stub,
        name="Planner",
        description="Plans lessons",
        model_version="gpt-4o-2024-08-06",
        is_active=True,
        capabilities=[search, _capability("rubrics", 5), _capability("quiz", 3)],
    )
    assert profile.id > 0 and profile.is_active and profile.description == "Plans lessons"
    # Higher priority runs first.
    assert [c.name for c in profile.capabilities] == ["rubrics", "quiz", "search"]
    assert profile.capabilities[2].parameters["engine"] == "internal"
    assert profile.capabilities[2].is_enabled

    again = await _upsert_profile(
        admin_stub,
        name="Planner",
        model_version="gpt-4.1",
        capabilities=[_capability("search", 9), _capability("images", 2)],
    )
    assert again.id == profile.id and again.model_version == "gpt-4.1"
    assert [(c.name, c.priority) for c in again.capabilities] == [("search", 9), ("images", 2)]
    assert not again.capabilities[0].HasField("parameters")

    emptied = await _upsert_profile(admin_stub, name="Planner", model_version="gpt-4.1")
    assert list(emptied.capabilities) == []


async def test_unset_profile_and_capability_flags_mean_on_if_new_else_unchanged(
    admin_stub,
) -> None:
    new = await _upsert_profile(
        admin_stub, name="Tutor", model_version="m", capabilities=[_capability("quiz")]
    )
    assert new.HasField("is_active") and new.is_active
    assert new.capabilities[0].HasField("is_enabled") and new.capabilities[0].is_enabled

    off = await _upsert_profile(
        admin_stub,
        name="Tutor",
        model_version="m",
        is_active=False,
        capabilities=[_capability("quiz", is_enabled=False), _capability("hints", 1)],
    )
    assert not off.is_active
    assert {c.name: c.is_enabled for c in off.capabilities} == {"quiz": False, "hints": True}

    # Unset everywhere: the profile stays out of use, quiz stays off (it
    # exists), hints stays on, and the new capability is on.
    kept = await _upsert_profile(
        admin_stub,
        name="Tutor",
        model_version="m2",
        capabilities=[_capability("quiz"), _capability("hints", 1), _capability("rubrics", 2)],
    )
    assert kept.id == new.id and kept.model_version == "m2" and not kept.is_active
    assert {c.name: c.is_enabled for c in kept.capabilities} == {
        "quiz": False,
        "hints": True,
        "rubrics": True,
    }
    by_id = await _upsert_profile(admin_stub, id=new.id, name="Tutor", model_version="m3")
    assert not by_id.is_active
    on = await _upsert_profile(
        admin_stub, id=new.id, name="Tutor", model_version="m3", is_active=True
    )
    assert on.is_active


async def test_profile_rename_by_id(admin_stub) -> None:
    first = await _upsert_profile(admin_stub, name="One", model_version="m")
    await _upsert_profile(admin_stub, name="Two", model_version="m")
    renamed = await _upsert_profile(admin_stub, id=first.id, name="Uno", model_version="m")
    assert renamed.id == first.id and renamed.name == "Uno"
    taken = await _error(_upsert_profile(admin_stub, id=first.id, name="Two", model_version="m"))
    assert taken.code() == grpc.StatusCode.ALREADY_EXISTS
    missing = await _error(_upsert_profile(admin_stub, id=777, name="Dos", model_version="m"))
    assert missing.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({"model_version": "m"}, ["profile.name"]),
        ({"name": "P"}, ["profile.model_version"]),
        ({"name": "P", "model_version": "m" * 51}, ["profile.model_version"]),
        ({"name": "x" * 101, "model_version": "m"}, ["profile.name"]),
        (
            {
                "name": "P",
                "model_version": "m",
                "capabilities": [_capability("a"), _capability("")],
            },
            ["profile.capabilities[1].name"],
        ),
        (
            {
                "name": "P",
                "model_version": "m",
                "capabilities": [_capability("a"), _capability("b"), _capability("a")],
            },
            ["profile.capabilities[2].name"],
        ),
    ],
)
async def test_upsert_profile_rejects_bad_fields(
    admin_stub, fields: dict[str, Any], violations: list[str]
) -> None:
    assert await _invalid(_upsert_profile(admin_stub, **fields)) == violations


# --- Lessons ---------------------------------------------------------------


async def test_upsert_lesson_creates_then_replaces_by_id(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    created = await _upsert_lesson(
        admin_stub, title="Draft", user_id=user, grade_level="7", tags=["a"]
    )
    assert created.id > 0 and created.status == lesson_pb2.LESSON_STATUS_DRAFT

    replaced = await _upsert_lesson(
        admin_stub,
        id=created.id,
        title="Final",
        user_id=user,
        status=lesson_pb2.LESSON_STATUS_PUBLISHED,
    )
    assert replaced.id == created.id and replaced.title == "Final"
    assert replaced.status == lesson_pb2.LESSON_STATUS_PUBLISHED
    assert replaced.grade_level == "" and list(replaced.tags) == []  # replaced, not merged
    assert replaced.create_time == created.create_time
    got = await lesson_stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=created.id))
    assert got == replaced


@pytest.mark.parametrize(
    ("fields", "resource"),
    [
        ({"id": 4242}, "lesson"),
        ({"id": 2**40}, "lesson"),
        ({"user_id": "00000000-0000-4000-8000-000000000000"}, "user"),
        ({"subject_category_id": 4242}, "subject_category"),
        ({"assistant_profile_id": 4242}, "assistant_profile"),
    ],
)
async def test_upsert_lesson_with_unknown_references_is_not_found(
    admin_stub, fields: dict[str, Any], resource: str
) -> None:
    user = await register_user(admin_stub)
    error = await _error(_upsert_lesson(admin_stub, **{"title": "T", "user_id": user, **fields}))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert (error.details() or "").startswith(f"{resource} ")


def _lesson_with(
    *, lesson_data: dict[str, Any] | None = None, objectives: str = "", **fields: Any
) -> lesson_pb2.Lesson:
    """A valid lesson (for the user "{user}", registered by the test) but for `fields`."""
    lesson = lesson_pb2.Lesson(**{"title": "T", "user_id": "{user}", **fields})
    if lesson_data is not None:
        lesson.lesson_data.update(lesson_data)
    if objectives:
        lesson.objectives.string_value = objectives
    return lesson


@pytest.mark.parametrize(
    ("lesson", "violations"),
    [
        (_lesson_with(title=""), ["lesson.title"]),
        (_lesson_with(title="   "), ["lesson.title"]),
        (_lesson_with(title="Frac\x00tions"), ["lesson.title"]),
        (_lesson_with(title="x" * 201), ["lesson.title"]),
        (_lesson_with(user_id=""), ["lesson.user_id"]),
        (_lesson_with(user_id="teacher-7"), ["lesson.user_id"]),
        (_lesson_with(id=-3), ["lesson.id"]),
        (_lesson_with(subject_category_id=2**31), ["lesson.subject_category_id"]),
        (_lesson_with(assistant_profile_id=-1), ["lesson.assistant_profile_id"]),
        (_lesson_with(grade_level="x" * 21), ["lesson.grade_level"]),
        (_lesson_with(content_area="x" * 101), ["lesson.content_area"]),
        (_lesson_with(status=42), ["lesson.status"]),
        (_lesson_with(tags=[f"t{i}" for i in range(33)]), ["lesson.tags"]),
        (_lesson_with(tags=["ok", "x" * 65]), ["lesson.tags[1]"]),
        (_lesson_with(related_lesson_ids=[1, 0]), ["lesson.related_lesson_ids[1]"]),
        (_lesson_with(lesson_data={"text": "x" * 70_000}), ["lesson.lesson_data"]),
        (_lesson_with(lesson_data={"text": "a\x00b"}), ["lesson.lesson_data"]),
        (_lesson_with(objectives="x" * 70_000), ["lesson.objectives"]),
        (
            _lesson_with(title="", user_id="", grade_level="x" * 21),
            ["lesson.title", "lesson.user_id", "lesson.grade_level"],
        ),
    ],
)
async def test_upsert_lesson_rejects_bad_fields(
    admin_stub, lesson: lesson_pb2.Lesson, violations: list[str]
) -> None:
    if lesson.user_id == "{user}":
        lesson.user_id = await register_user(admin_stub)
    request = admin_service_pb2.UpsertLessonRequest(lesson=lesson)
    assert await _invalid(admin_stub.UpsertLesson(request)) == violations


@pytest.mark.parametrize("field", ["lesson_data", "objectives"])
async def test_upsert_lesson_rejects_non_finite_numbers(admin_stub, field: str) -> None:
    lesson = _lesson_with(user_id=await register_user(admin_stub))
    if field == "lesson_data":
        lesson.lesson_data.update({"score": math.inf})
    else:
        lesson.objectives.number_value = math.nan
    request = admin_service_pb2.UpsertLessonRequest(lesson=lesson)
    assert await _invalid(admin_stub.UpsertLesson(request)) == [f"lesson.{field}"]


@pytest.mark.parametrize(
    ("week_of", "ok"),
    [
        (date_pb2.Date(year=2025, month=9, day=1), True),
        (date_pb2.Date(year=2025, month=2, day=29), False),
        (date_pb2.Date(year=2025, month=9), False),  # a month, not a date
        (date_pb2.Date(month=9, day=1), False),  # an anniversary, not a date
    ],
)
async def test_upsert_lesson_week_of_must_be_a_full_date(
    admin_stub, week_of: date_pb2.Date, ok: bool
) -> None:
    user = await register_user(admin_stub)
    call = _upsert_lesson(admin_stub, title="T", user_id=user, week_of=week_of)
    if ok:
        assert (await call).week_of == week_of
    else:
        assert await _invalid(call) == ["lesson.week_of"]


async def test_upsert_lesson_needs_a_lesson(admin_stub) -> None:
    request = admin_service_pb2.UpsertLessonRequest()
    assert await _invalid(admin_stub.UpsertLesson(request)) == ["lesson"]


async def test_delete_lesson(admin_stub, lesson_stub) -> None:
    user = await register_user(admin_stub)
    lesson = await _upsert_lesson(admin_stub, title="Gone soon", user_id=user)
    await admin_stub.DeleteLesson(admin_service_pb2.DeleteLessonRequest(id=lesson.id))

    error = await _error(lesson_stub.GetLesson(lesson_service_pb2.GetLessonRequest(id=lesson.id)))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    again = await _error(
        admin_stub.DeleteLesson(admin_service_pb2.DeleteLessonRequest(id=lesson.id))
    )
    assert again.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("lesson_id", [0, -7])
async def test_delete_lesson_needs_a_positive_id(admin_stub, lesson_id: int) -> None:
    request = admin_service_pb2.DeleteLessonRequest(id=lesson_id)
    assert await _invalid(admin_stub.DeleteLesson(request)) == ["id"]
