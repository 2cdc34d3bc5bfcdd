"""Lesson messages <-> domain values. Validation rules live in domain.validation."""

from __future__ import annotations

import uuid
from typing import Any

from faraday.memory.v1 import admin_service_pb2, lesson_pb2, lesson_service_pb2
from google.protobuf import struct_pb2

from memory_service.domain import validation as check
from memory_service.domain.errors import InvalidArgument
from memory_service.domain.models import Lesson, LessonFilter, LessonMatch, LessonStatus
from memory_service.rpc import wire

TITLE_MAX_CHARS = 200
GRADE_LEVEL_MAX_CHARS = 20
CONTENT_AREA_MAX_CHARS = 100
SUBJECT_NAME_MAX_CHARS = 100
SEARCH_QUERY_MAX_CHARS = 500
RELATED_LESSONS_MAX_COUNT = 50

_STATUSES = {
    LessonStatus.DRAFT: lesson_pb2.LESSON_STATUS_DRAFT,
    LessonStatus.PUBLISHED: lesson_pb2.LESSON_STATUS_PUBLISHED,
    LessonStatus.ARCHIVED: lesson_pb2.LESSON_STATUS_ARCHIVED,
}
_STATUSES_BACK: dict[int, LessonStatus] = {v: k for k, v in _STATUSES.items()}

# The lesson's free-form JSON values (google.protobuf.Value).
_JSON_VALUES = ("objectives", "materials", "activities", "assessment_criteria", "feedback")


def _status(v: check.Violations, field: str, value: int) -> LessonStatus | None:
    """UNSPECIFIED is None; an unknown number is a violation."""
    if value == lesson_pb2.LESSON_STATUS_UNSPECIFIED:
        return None
    status = _STATUSES_BACK.get(value)
    if status is None:
        v.add(field, f"unknown lesson status {value}")
    return status


def _json_value(v: check.Violations, field: str, message: struct_pb2.Value, present: bool) -> Any:
    if not present:
        return None
    return check.json_value(
        v, field, wire.value_to_python(message), max_bytes=check.LESSON_JSON_MAX_BYTES
    )


def lesson(request: admin_service_pb2.UpsertLessonRequest) -> Lesson:
    if not request.HasField("lesson"):
        raise InvalidArgument.one("lesson", "is required")
    m = request.lesson
    v = check.Violations()
    lesson_id = check.positive_id(v, "lesson.id", m.id, required=False)
    title = check.text(v, "lesson.title", m.title, max_chars=TITLE_MAX_CHARS, required=True)
    user = check.user_id(v, "lesson.user_id", m.user_id)
    related: dict[int, None] = {}
    if len(m.related_lesson_ids) > RELATED_LESSONS_MAX_COUNT:
        v.add(
            "lesson.related_lesson_ids",
            f"must have at most {RELATED_LESSONS_MAX_COUNT} entries,"
            f" got {len(m.related_lesson_ids)}",
        )
    else:
        for i, related_id in enumerate(m.related_lesson_ids):
            valid = check.positive_id(v, f"lesson.related_lesson_ids[{i}]", related_id)
            if valid is not None:
                related.setdefault(valid, None)
    fields: dict[str, Any] = {
        "subject_category_id": check.reference_id(
            v, "lesson.subject_category_id", m.subject_category_id
        ),
        "assistant_profile_id": check.reference_id(
            v, "lesson.assistant_profile_id", m.assistant_profile_id
        ),
        "grade_level": check.text(
            v, "lesson.grade_level", m.grade_level, max_chars=GRADE_LEVEL_MAX_CHARS
        ),
        "week_of": wire.date_value(v, "lesson.week_of", m.week_of, m.HasField("week_of")),
        "content_area": check.text(
            v, "lesson.content_area", m.content_area, max_chars=CONTENT_AREA_MAX_CHARS
        ),
        "lesson_data": check.json_value(
            v,
            "lesson.lesson_data",
            wire.struct_to_dict(m.lesson_data),
            max_bytes=check.LESSON_JSON_MAX_BYTES,
        )
        or {},
        "objectives": _json_value(v, "lesson.objectives", m.objectives, m.HasField("objectives")),
        "materials": _json_value(v, "lesson.materials", m.materials, m.HasField("materials")),
        "activities": _json_value(v, "lesson.activities", m.activities, m.HasField("activities")),
        "assessment_criteria": _json_value(
            v,
            "lesson.assessment_criteria",
            m.assessment_criteria,
            m.HasField("assessment_criteria"),
        ),
        "feedback": _json_value(v, "lesson.feedback", m.feedback, m.HasField("feedback")),
        "status": _status(v, "lesson.status", m.status) or LessonStatus.DRAFT,
        "tags": check.tags(v, "lesson.tags", m.tags),
    }
    v.check()
    assert title is not None and user is not None
    return Lesson(id=lesson_id, title=title, user_id=user, related_lessons=list(related), **fields)


def lesson_filter(request: lesson_service_pb2.ListLessonsRequest) -> LessonFilter:
    v = check.Violations()
    lesson_data = (
        check.json_value(v, "lesson_data", wire.struct_to_dict(request.lesson_data))
        if request.HasField("lesson_data")
        else None
    )
    result = LessonFilter(
        user_id=check.user_id(v, "user_id", request.user_id, required=False),
        status=_status(v, "status", request.status),
        week_of_start=wire.date_value(
            v, "week_of_start", request.week_of_start, request.HasField("week_of_start")
        ),
        week_of_end=wire.date_value(
            v, "week_of_end", request.week_of_end, request.HasField("week_of_end")
        ),
        grade_level=check.text(
            v, "grade_level", request.grade_level, max_chars=GRADE_LEVEL_MAX_CHARS
        ),
        subject_category_id=check.reference_id(
            v, "subject_category_id", request.subject_category_id
        ),
        subject_category_name=check.text(
            v,
            "subject_category_name",
            request.subject_category_name,
            max_chars=SUBJECT_NAME_MAX_CHARS,
        ),
        tags=check.tags(v, "tags", request.tags),
        # {} contains nothing to match: no filter.
        lesson_data=lesson_data or None,
    )
    v.check()
    return result


def search_terms(
    request: lesson_service_pb2.SearchLessonsRequest,
) -> tuple[str, uuid.UUID | None, LessonStatus | None]:
    """The query, owner and status of a search."""
    v = check.Violations()
    query = check.text(v, "query", request.query, max_chars=SEARCH_QUERY_MAX_CHARS, required=True)
    user = check.user_id(v, "user_id", request.user_id, required=False)
    status = _status(v, "status", request.status)
    v.check()
    assert query is not None
    return query, user, status


def lesson_id(value: int, field: str = "id") -> int:
    v = check.Violations()
    result = check.positive_id(v, field, value)
    v.check()
    assert result is not None
    return result


def lesson_message(lesson: Lesson) -> lesson_pb2.Lesson:
    out = lesson_pb2.Lesson(
        id=lesson.id or 0,
        title=lesson.title,
        user_id=str(lesson.user_id),
        subject_category_id=lesson.subject_category_id or 0,
        subject_category_name=lesson.subject_category_name or "",
        assistant_profile_id=lesson.assistant_profile_id or 0,
        assistant_profile_name=lesson.assistant_profile_name or "",
        grade_level=lesson.grade_level or "",
        content_area=lesson.content_area or "",
        status=_STATUSES[lesson.status],
        tags=lesson.tags,
        related_lesson_ids=lesson.related_lessons,
    )
    wire.fill_date(out.week_of, lesson.week_of)
    wire.fill_struct(out.lesson_data, lesson.lesson_data)
    for name in _JSON_VALUES:
        wire.fill_value(getattr(out, name), getattr(lesson, name))
    wire.fill_timestamp(out.create_time, lesson.created_at)
    wire.fill_timestamp(out.update_time, lesson.updated_at)
    return out


def match_message(match: LessonMatch) -> lesson_service_pb2.LessonMatch:
    return lesson_service_pb2.LessonMatch(lesson=lesson_message(match.lesson), rank=match.rank)
