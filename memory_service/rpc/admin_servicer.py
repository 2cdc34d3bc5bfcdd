"""AdminService: protobuf in -> one use case -> protobuf out."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import grpc
from faraday.memory.v1 import admin_service_pb2, admin_service_pb2_grpc, lesson_pb2, registry_pb2
from google.protobuf import empty_pb2
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from memory_service.domain import validation as check
from memory_service.domain.models import (
    Interaction,
    Lesson,
    Memory,
    MemoryRevision,
    User,
    UserPreferences,
)
from memory_service.rpc import lesson_messages, memory_messages, registry_messages
from memory_service.rpc.errors import translate_errors
from memory_service.services.admin import Admin

Context = grpc.aio.ServicerContext[Any, Any]

# What Admin.export_user_data yields (storage.user_data.ExportRecord, spelled
# out here so that rpc/ names domain types only).
ExportRecord = User | UserPreferences | Memory | MemoryRevision | Interaction | Lesson

_EXPORT_FORMATS = (
    admin_service_pb2.EXPORT_FORMAT_UNSPECIFIED,
    admin_service_pb2.EXPORT_FORMAT_PROTOBUF,
    admin_service_pb2.EXPORT_FORMAT_JSON_LINES,
)


def _user_id(value: str) -> uuid.UUID:
    v = check.Violations()
    result = check.user_id(v, "user_id", value)
    v.check()
    assert result is not None
    return result


def _json_lines(value: int) -> bool:
    """Whether the export is JSON Lines (else protobuf); an unknown format is a violation."""
    v = check.Violations()
    if value not in _EXPORT_FORMATS:
        v.add("format", f"unknown export format {value}")
    v.check()
    return value == admin_service_pb2.EXPORT_FORMAT_JSON_LINES


def _export_record(record: ExportRecord) -> tuple[str, Message]:
    """The record's kind (the response's oneof field, and "kind" in JSON Lines) and message."""
    if isinstance(record, User):
        return "user", registry_messages.user_message(record)
    if isinstance(record, UserPreferences):
        return "preferences", registry_messages.preferences_message(record)
    if isinstance(record, Memory):
        return "memory", memory_messages.memory_message(record)
    if isinstance(record, MemoryRevision):
        return "memory_revision", memory_messages.revision_message(record)
    if isinstance(record, Interaction):
        return "interaction", memory_messages.interaction_message(record)
    if isinstance(record, Lesson):
        return "lesson", lesson_messages.lesson_message(record)
    raise TypeError(f"not an exportable record: {type(record).__name__}")


def _export_response(
    record: ExportRecord, json_lines: bool
) -> admin_service_pb2.ExportUserDataResponse:
    kind, message = _export_record(record)
    if json_lines:
        data = MessageToDict(message, preserving_proto_field_name=True)
        line = json.dumps({"kind": kind, "data": data}) + "\n"
        return admin_service_pb2.ExportUserDataResponse(json_line=line)
    response = admin_service_pb2.ExportUserDataResponse()
    getattr(response, kind).CopyFrom(message)
    return response


@translate_errors
class AdminServicer(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, admin: Admin) -> None:
        self._admin = admin

    async def UpsertUser(
        self, request: admin_service_pb2.UpsertUserRequest, context: Context
    ) -> registry_pb2.User:
        user = await self._admin.upsert_user(registry_messages.user(request))
        return registry_messages.user_message(user)

    async def UpsertUserPreferences(
        self, request: admin_service_pb2.UpsertUserPreferencesRequest, context: Context
    ) -> registry_pb2.UserPreferences:
        prefs = await self._admin.upsert_preferences(registry_messages.preferences(request))
        return registry_messages.preferences_message(prefs)

    async def UpsertSubjectCategory(
        self, request: admin_service_pb2.UpsertSubjectCategoryRequest, context: Context
    ) -> registry_pb2.SubjectCategory:
        category = await self._admin.upsert_subject_category(
            registry_messages.subject_category(request)
        )
        return registry_messages.category_message(category)

    async def UpsertAssistantProfile(
        self, request: admin_service_pb2.UpsertAssistantProfileRequest, context: Context
    ) -> registry_pb2.AssistantProfile:
        profile = await self._admin.upsert_assistant_profile(
            registry_messages.assistant_profile(request)
        )
        return registry_messages.profile_message(profile)

    async def UpsertLesson(
        self, request: admin_service_pb2.UpsertLessonRequest, context: Context
    ) -> lesson_pb2.Lesson:
        lesson = await self._admin.upsert_lesson(lesson_messages.lesson(request))
        return lesson_messages.lesson_message(lesson)

    async def DeleteLesson(
        self, request: admin_service_pb2.DeleteLessonRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._admin.delete_lesson(lesson_messages.lesson_id(request.id))
        return empty_pb2.Empty()

    async def DeleteUserData(
        self, request: admin_service_pb2.DeleteUserDataRequest, context: Context
    ) -> admin_service_pb2.DeleteUserDataResponse:
        erased = await self._admin.delete_user_data(_user_id(request.user_id))
        return admin_service_pb2.DeleteUserDataResponse(
            memories=erased.memories,
            interactions=erased.interactions,
            lessons=erased.lessons,
            preferences=erased.preferences,
            memory_revisions=erased.memory_revisions,
        )

    # The user is read before the first record is yielded, so NOT_FOUND (like
    # INVALID_ARGUMENT) is the call's status with no message sent; a failure
    # mid-stream (the database going away) ends the stream with its status
    # after the records sent so far (translate_errors wraps streams too).
    async def ExportUserData(
        self, request: admin_service_pb2.ExportUserDataRequest, context: Context
    ) -> AsyncIterator[admin_service_pb2.ExportUserDataResponse]:
        user_id = _user_id(request.user_id)
        json_lines = _json_lines(request.format)
        # aclosing: when the caller goes away mid-export, grpc closes this
        # generator, and this closes the store's, which gives the database
        # connection (and its snapshot) back at once.
        async with aclosing(self._admin.export_user_data(user_id)) as records:
            async for record in records:
                yield _export_response(record, json_lines)
