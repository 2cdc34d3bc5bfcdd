"""AdminService: protobuf in -> one use case -> protobuf out."""

from __future__ import annotations

from typing import Any

import grpc
from faraday.memory.v1 import admin_service_pb2, admin_service_pb2_grpc, lesson_pb2, registry_pb2
from google.protobuf import empty_pb2

from memory_service.rpc import lesson_messages, registry_messages
from memory_service.rpc.errors import translate_errors
from memory_service.services.admin import Admin

Context = grpc.aio.ServicerContext[Any, Any]


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
