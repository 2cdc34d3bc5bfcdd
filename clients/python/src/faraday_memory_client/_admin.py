"""The typed asyncio client of AdminService."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import date
from functools import cached_property
from typing import Any, Literal

from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    registry_pb2,
)

from faraday_memory_client._base import BaseClient
from faraday_memory_client._convert import date_message, struct_message, value_message

_EXPORT_FORMAT = {
    "protobuf": admin_service_pb2.EXPORT_FORMAT_PROTOBUF,
    "json_lines": admin_service_pb2.EXPORT_FORMAT_JSON_LINES,
}


def capability(
    name: str,
    *,
    description: str = "",
    parameters: Mapping[str, Any] | None = None,
    is_enabled: bool | None = None,
    priority: int = 0,
) -> registry_pb2.AssistantCapability:
    """One capability for :meth:`AdminClient.upsert_assistant_profile`.

    `is_enabled` None (the default) turns a capability new to the profile on
    and leaves one the profile already has as it is. Higher `priority` runs
    first.
    """
    return registry_pb2.AssistantCapability(
        name=name,
        description=description,
        parameters=None if parameters is None else struct_message(parameters),
        is_enabled=is_enabled,
        priority=priority,
    )


class AdminClient(BaseClient):
    """Asyncio client of AdminService: the platform's registry and privacy calls.

    Every call needs a credential with scope ``admin`` (pass it through
    `metadata_provider`); the server writes each one to its audit log. Like
    :class:`MemoryClient`, methods take keyword arguments, return the
    generated messages, raise ``grpc.aio.AioRpcError`` and have a deadline.

    Retries, on UNAVAILABLE (and RESOURCE_EXHAUSTED, as :class:`MemoryClient`)
    and within the deadline, are limited to what
    is safe to send twice. The registry upserts are idempotent (the server
    matches the record by id, else by its natural key: email or name), and
    so is :meth:`upsert_lesson` with an `id`: those are retried. Creating a
    lesson (no `id`) is not, since a repeat would create a second lesson.
    :meth:`delete_lesson` and :meth:`delete_user_data` are not retried: a
    repeat after a lost response would answer NOT_FOUND for a delete that
    succeeded. :meth:`export_user_data` is retried only before its first
    record.
    """

    @cached_property
    def _admin(self) -> admin_service_pb2_grpc.AdminServiceAsyncStub:
        return admin_service_pb2_grpc.AdminServiceStub(self._channel)

    @cached_property
    def _admin_once(self) -> admin_service_pb2_grpc.AdminServiceAsyncStub:
        """AdminService over the channel without retries (creating a lesson)."""
        return admin_service_pb2_grpc.AdminServiceStub(self._once_channel)

    async def upsert_user(
        self,
        *,
        email: str,
        id: str = "",
        name: str = "",
        is_active: bool | None = None,
        school: str = "",
        department: str = "",
        subjects: Sequence[str] = (),
        grade_levels: Sequence[str] = (),
        custom_instructions: str = "",
        timeout_seconds: float | None = None,
    ) -> registry_pb2.User:
        """Create or replace a user, matched by `id` (UUID) if given, else by
        `email`; return it with its id.

        Every field is replaced, so a field left out is cleared, except
        `is_active`: None (the default) makes a new user active and leaves an
        existing one as it is. Fails with ALREADY_EXISTS if `email` belongs to
        another user id, INVALID_ARGUMENT for a bad field. Retried on
        UNAVAILABLE: a repeat matches the user the first attempt wrote.
        """
        request = admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(
                id=id,
                email=email,
                name=name,
                is_active=is_active,
                school=school,
                department=department,
                subjects=subjects,
                grade_levels=grade_levels,
                custom_instructions=custom_instructions,
            )
        )
        return await self._call(self._admin.UpsertUser, request, timeout_seconds)

    async def upsert_user_preferences(
        self,
        user_id: str,
        *,
        theme: str = "",
        notifications: Mapping[str, Any] | None = None,
        language: str = "",
        timezone: str = "",
        timeout_seconds: float | None = None,
    ) -> registry_pb2.UserPreferences:
        """Create or replace the preferences of a registered user; a field
        left out is cleared. `language` is a BCP 47 tag, `timezone` an IANA
        zone. Fails with NOT_FOUND if the user is not registered. Retried on
        UNAVAILABLE: a user has one preferences record, so a repeat writes
        the same one.
        """
        request = admin_service_pb2.UpsertUserPreferencesRequest(
            preferences=registry_pb2.UserPreferences(
                user_id=user_id,
                theme=theme,
                notifications=None if notifications is None else struct_message(notifications),
                language=language,
                timezone=timezone,
            )
        )
        return await self._call(self._admin.UpsertUserPreferences, request, timeout_seconds)

    async def upsert_subject_category(
        self,
        *,
        name: str,
        id: int = 0,
        description: str = "",
        parent_id: int = 0,
        is_active: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout_seconds: float | None = None,
    ) -> registry_pb2.SubjectCategory:
        """Create or replace a subject category, matched by `id` if given (a
        rename), else by `name`; `parent_id` 0 puts it at the top level.

        `is_active` None (the default) makes a new category active and
        leaves an existing one as it is. Fails with NOT_FOUND if `id` or
        `parent_id` does not exist, ALREADY_EXISTS if a rename takes another
        category's name, FAILED_PRECONDITION if it would end up deeper than 5
        levels or under itself. Retried on UNAVAILABLE: a repeat matches the
        category the first attempt wrote.
        """
        request = admin_service_pb2.UpsertSubjectCategoryRequest(
            category=registry_pb2.SubjectCategory(
                id=id,
                name=name,
                description=description,
                parent_id=parent_id,
                is_active=is_active,
                metadata=None if metadata is None else struct_message(metadata),
            )
        )
        return await self._call(self._admin.UpsertSubjectCategory, request, timeout_seconds)

    async def upsert_assistant_profile(
        self,
        *,
        name: str,
        model_version: str,
        id: int = 0,
        description: str = "",
        is_active: bool | None = None,
        configuration: Mapping[str, Any] | None = None,
        capabilities: Sequence[registry_pb2.AssistantCapability] = (),
        timeout_seconds: float | None = None,
    ) -> registry_pb2.AssistantProfile:
        """Create or replace an assistant profile, matched by `id` if given (a
        rename), else by `name`.

        `capabilities` (built with :func:`capability`) replace the profile's
        whole list. `is_active` None (the default) makes a new profile active
        and leaves an existing one as it is. Fails with NOT_FOUND if `id` does
        not exist, ALREADY_EXISTS if a rename takes another profile's name.
        Retried on UNAVAILABLE: a repeat matches the profile the first
        attempt wrote.
        """
        request = admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(
                id=id,
                name=name,
                description=description,
                model_version=model_version,
                is_active=is_active,
                configuration=None if configuration is None else struct_message(configuration),
                capabilities=capabilities,
            )
        )
        return await self._call(self._admin.UpsertAssistantProfile, request, timeout_seconds)

    async def upsert_lesson(
        self,
        *,
        title: str,
        user_id: str,
        id: int = 0,
        subject_category_id: int = 0,
        assistant_profile_id: int = 0,
        grade_level: str = "",
        week_of: date | None = None,
        content_area: str = "",
        lesson_data: Mapping[str, Any] | None = None,
        objectives: Any = None,
        materials: Any = None,
        activities: Any = None,
        assessment_criteria: Any = None,
        feedback: Any = None,
        status: lesson_pb2.LessonStatus.ValueType = lesson_pb2.LESSON_STATUS_UNSPECIFIED,
        tags: Sequence[str] = (),
        related_lesson_ids: Sequence[int] = (),
        timeout_seconds: float | None = None,
    ) -> lesson_pb2.Lesson:
        """Create a lesson (`id` 0, the default) or replace lesson `id`; return it.

        `week_of` is the Monday of the planned week; `lesson_data` a JSON
        object, and `objectives` to `feedback` any JSON value (None: unset).
        Status UNSPECIFIED writes DRAFT. Fails with NOT_FOUND if the lesson
        `id`, the user, the subject category or the assistant profile does
        not exist.

        Replacing (`id` set) is retried on UNAVAILABLE: a repeat writes the
        same lesson again. Creating is not: the request carries nothing that
        identifies the lesson, so a repeat after a lost response would create
        a second one.
        """
        request = admin_service_pb2.UpsertLessonRequest(
            lesson=lesson_pb2.Lesson(
                id=id,
                title=title,
                user_id=user_id,
                subject_category_id=subject_category_id,
                assistant_profile_id=assistant_profile_id,
                grade_level=grade_level,
                week_of=None if week_of is None else date_message(week_of),
                content_area=content_area,
                lesson_data=None if lesson_data is None else struct_message(lesson_data),
                objectives=None if objectives is None else value_message(objectives),
                materials=None if materials is None else value_message(materials),
                activities=None if activities is None else value_message(activities),
                assessment_criteria=(
                    None if assessment_criteria is None else value_message(assessment_criteria)
                ),
                feedback=None if feedback is None else value_message(feedback),
                status=status,
                tags=tags,
                related_lesson_ids=related_lesson_ids,
            )
        )
        # UpsertLesson is retried by the service config; a create goes over
        # the channel that never retries.
        stub = self._admin if id else self._admin_once
        return await self._call(stub.UpsertLesson, request, timeout_seconds)

    async def delete_lesson(self, id: int, *, timeout_seconds: float | None = None) -> None:
        """Delete a lesson. Fails with NOT_FOUND if it does not exist.

        Not retried: a repeat after a lost response would fail with NOT_FOUND
        for a delete that succeeded. Where you retry it yourself, NOT_FOUND
        after your own delete means done.
        """
        request = admin_service_pb2.DeleteLessonRequest(id=id)
        await self._call(self._admin.DeleteLesson, request, timeout_seconds)

    async def delete_user_data(
        self, user_id: str, *, timeout_seconds: float | None = None
    ) -> admin_service_pb2.DeleteUserDataResponse:
        """Erase a user and everything of theirs (preferences, memories and
        their revisions, interactions, lessons) in one transaction; return
        how many rows of each kind went. The audit log records that it
        happened, not the data. Fails with NOT_FOUND if the user does not
        exist.

        Not retried: a repeat after a lost response would fail with NOT_FOUND
        for an erasure that succeeded, and lose its counts. Where you retry
        it yourself, NOT_FOUND after your own call means the user is gone.
        """
        request = admin_service_pb2.DeleteUserDataRequest(user_id=user_id)
        return await self._call(self._admin.DeleteUserData, request, timeout_seconds)

    def export_user_data(
        self,
        user_id: str,
        *,
        format: Literal["protobuf", "json_lines"] = "protobuf",
        timeout_seconds: float | None = None,
    ) -> AsyncIterator[admin_service_pb2.ExportUserDataResponse]:
        """Yield every record of a user, to answer a privacy (access) request:
        the user first, then preferences, memories, memory revisions,
        interactions and lessons, one record per response.

        With `format` "protobuf" each response sets one of ``user``,
        ``preferences``, ``memory``, ``memory_revision``, ``interaction`` and
        ``lesson`` (``response.WhichOneof("record")`` names it); with
        "json_lines" each sets ``json_line``, one JSON object and a newline.
        Fails with NOT_FOUND, before any record, if the user does not exist.

        `timeout_seconds` bounds the whole export, so give a large one for a
        user with much data. Retried on UNAVAILABLE only before the first
        record; an error after it ends the iteration with that error, after
        the records already yielded. Leaving the loop early cancels the call.
        """
        request = admin_service_pb2.ExportUserDataRequest(
            user_id=user_id, format=_EXPORT_FORMAT[format]
        )
        return self._stream(self._admin.ExportUserData, request, timeout_seconds)
