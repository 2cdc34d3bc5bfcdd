"""Registry messages (users, preferences, subjects, assistants) <-> domain values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from faraday.memory.v1 import admin_service_pb2, registry_pb2
from google.protobuf import struct_pb2

from memory_service.domain import validation as check
from memory_service.domain.errors import InvalidArgument
from memory_service.domain.models import (
    AssistantProfile,
    Capability,
    SubjectCategory,
    User,
    UserPreferences,
)
from memory_service.rpc import wire

EMAIL_MAX_CHARS = 255
USER_TEXT_MAX_CHARS = 255
USER_LIST_MAX_COUNT = 50
USER_LIST_ENTRY_MAX_CHARS = 100
CUSTOM_INSTRUCTIONS_MAX_CHARS = 8000
THEME_MAX_CHARS = 50
LANGUAGE_MAX_CHARS = 35
TIMEZONE_MAX_CHARS = 64
NAME_MAX_CHARS = 100
CAPABILITIES_MAX_COUNT = 50
MODEL_VERSION_MAX_CHARS = 50
# Descriptions are unbounded text in the schema; this keeps one request's
# worth of them sane.
DESCRIPTION_MAX_CHARS = check.CONTENT_MAX_CHARS

# The users table's email_format CHECK, character for character. fullmatch,
# because `$` in a Python pattern also matches before a final newline.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _object(v: check.Violations, field: str, message: struct_pb2.Struct, present: bool) -> Any:
    """A JSON-object field that may be left unset (None)."""
    if not present:
        return None
    return check.json_value(v, field, wire.struct_to_dict(message))


def _flag(message: Any, field: str) -> bool | None:
    """An `optional bool`: None when left unset, which upserts read as "the default"."""
    return bool(getattr(message, field)) if message.HasField(field) else None


def user(request: admin_service_pb2.UpsertUserRequest) -> User:
    if not request.HasField("user"):
        raise InvalidArgument.one("user", "is required")
    m = request.user
    v = check.Violations()
    email = check.text(v, "user.email", m.email, max_chars=EMAIL_MAX_CHARS, required=True)
    if email is not None and not _EMAIL.fullmatch(email):
        v.add("user.email", "must be an address of the form local@domain.tld")
    result = User(
        id=check.user_id(v, "user.id", m.id, required=False),
        email=email or "",
        name=check.text(v, "user.name", m.name, max_chars=USER_TEXT_MAX_CHARS),
        is_active=_flag(m, "is_active"),
        school=check.text(v, "user.school", m.school, max_chars=USER_TEXT_MAX_CHARS),
        department=check.text(v, "user.department", m.department, max_chars=USER_TEXT_MAX_CHARS),
        subjects=check.string_list(
            v,
            "user.subjects",
            m.subjects,
            max_count=USER_LIST_MAX_COUNT,
            max_chars=USER_LIST_ENTRY_MAX_CHARS,
        ),
        grade_levels=check.string_list(
            v,
            "user.grade_levels",
            m.grade_levels,
            max_count=USER_LIST_MAX_COUNT,
            max_chars=USER_LIST_ENTRY_MAX_CHARS,
        ),
        custom_instructions=check.text(
            v,
            "user.custom_instructions",
            m.custom_instructions,
            max_chars=CUSTOM_INSTRUCTIONS_MAX_CHARS,
        ),
    )
    v.check()
    return result


def preferences(request: admin_service_pb2.UpsertUserPreferencesRequest) -> UserPreferences:
    if not request.HasField("preferences"):
        raise InvalidArgument.one("preferences", "is required")
    m = request.preferences
    v = check.Violations()
    user_id = check.user_id(v, "preferences.user_id", m.user_id)
    notifications = check.json_value(
        v, "preferences.notifications", wire.struct_to_dict(m.notifications)
    )
    theme = check.text(v, "preferences.theme", m.theme, max_chars=THEME_MAX_CHARS)
    language = check.text(v, "preferences.language", m.language, max_chars=LANGUAGE_MAX_CHARS)
    timezone = check.text(v, "preferences.timezone", m.timezone, max_chars=TIMEZONE_MAX_CHARS)
    v.check()
    assert user_id is not None
    return UserPreferences(
        user_id=user_id,
        theme=theme,
        notifications=notifications or {},
        language=language,
        timezone=timezone,
    )


def subject_category(request: admin_service_pb2.UpsertSubjectCategoryRequest) -> SubjectCategory:
    if not request.HasField("category"):
        raise InvalidArgument.one("category", "is required")
    m = request.category
    v = check.Violations()
    result = SubjectCategory(
        id=check.reference_id(v, "category.id", m.id),
        name=check.text(v, "category.name", m.name, max_chars=NAME_MAX_CHARS, required=True) or "",
        description=check.text(
            v, "category.description", m.description, max_chars=DESCRIPTION_MAX_CHARS
        ),
        parent_id=check.reference_id(v, "category.parent_id", m.parent_id),
        is_active=_flag(m, "is_active"),
        metadata=_object(v, "category.metadata", m.metadata, m.HasField("metadata")),
    )
    v.check()
    return result


def _capabilities(
    v: check.Violations, items: Sequence[registry_pb2.AssistantCapability]
) -> list[Capability]:
    result: list[Capability] = []
    if len(items) > CAPABILITIES_MAX_COUNT:
        v.add(
            "profile.capabilities",
            f"must have at most {CAPABILITIES_MAX_COUNT} entries, got {len(items)}",
        )
        return result
    first_index: dict[str, int] = {}
    for i, c in enumerate(items):
        field = f"profile.capabilities[{i}]"
        name = check.text(v, f"{field}.name", c.name, max_chars=NAME_MAX_CHARS, required=True)
        if name is not None and name in first_index:
            v.add(f"{field}.name", f"duplicates profile.capabilities[{first_index[name]}].name")
        elif name is not None:
            first_index[name] = i
        result.append(
            Capability(
                name=name or "",
                description=check.text(
                    v, f"{field}.description", c.description, max_chars=DESCRIPTION_MAX_CHARS
                ),
                parameters=_object(
                    v, f"{field}.parameters", c.parameters, c.HasField("parameters")
                ),
                is_enabled=_flag(c, "is_enabled"),
                priority=c.priority,
            )
        )
    return result


def assistant_profile(request: admin_service_pb2.UpsertAssistantProfileRequest) -> AssistantProfile:
    if not request.HasField("profile"):
        raise InvalidArgument.one("profile", "is required")
    m = request.profile
    v = check.Violations()
    result = AssistantProfile(
        id=check.reference_id(v, "profile.id", m.id),
        name=check.text(v, "profile.name", m.name, max_chars=NAME_MAX_CHARS, required=True) or "",
        description=check.text(
            v, "profile.description", m.description, max_chars=DESCRIPTION_MAX_CHARS
        ),
        model_version=check.text(
            v,
            "profile.model_version",
            m.model_version,
            max_chars=MODEL_VERSION_MAX_CHARS,
            required=True,
        )
        or "",
        is_active=_flag(m, "is_active"),
        configuration=_object(
            v, "profile.configuration", m.configuration, m.HasField("configuration")
        ),
        capabilities=_capabilities(v, m.capabilities),
    )
    v.check()
    return result


def user_message(u: User) -> registry_pb2.User:
    out = registry_pb2.User(
        id=str(u.id),
        email=u.email,
        name=u.name or "",
        is_active=u.is_active,
        school=u.school or "",
        department=u.department or "",
        subjects=u.subjects,
        grade_levels=u.grade_levels,
        custom_instructions=u.custom_instructions or "",
    )
    wire.fill_timestamp(out.create_time, u.created_at)
    wire.fill_timestamp(out.update_time, u.updated_at)
    return out


def preferences_message(p: UserPreferences) -> registry_pb2.UserPreferences:
    out = registry_pb2.UserPreferences(
        user_id=str(p.user_id),
        theme=p.theme or "",
        language=p.language or "",
        timezone=p.timezone or "",
    )
    wire.fill_struct(out.notifications, p.notifications)
    wire.fill_timestamp(out.update_time, p.updated_at)
    return out


def category_message(c: SubjectCategory) -> registry_pb2.SubjectCategory:
    out = registry_pb2.SubjectCategory(
        id=c.id or 0,
        name=c.name,
        description=c.description or "",
        parent_id=c.parent_id or 0,
        level=c.level,
        is_active=c.is_active,
    )
    wire.fill_struct(out.metadata, c.metadata)
    return out


def profile_message(p: AssistantProfile) -> registry_pb2.AssistantProfile:
    out = registry_pb2.AssistantProfile(
        id=p.id or 0,
        name=p.name,
        description=p.description or "",
        model_version=p.model_version,
        is_active=p.is_active,
    )
    wire.fill_struct(out.configuration, p.configuration)
    for c in p.capabilities:
        capability = out.capabilities.add(
            name=c.name,
            description=c.description or "",
            is_enabled=c.is_enabled,
            priority=c.priority,
        )
        wire.fill_struct(capability.parameters, c.parameters)
    return out
