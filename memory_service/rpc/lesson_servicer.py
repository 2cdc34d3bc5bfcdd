"""LessonService: protobuf in -> one use case -> protobuf out."""

from __future__ import annotations

from typing import Any

import grpc
from faraday.memory.v1 import lesson_pb2, lesson_service_pb2, lesson_service_pb2_grpc

from memory_service.rpc import caller
from memory_service.rpc import lesson_messages as messages
from memory_service.rpc.errors import translate_errors
from memory_service.services.lessons import Lessons

Context = grpc.aio.ServicerContext[Any, Any]


@translate_errors
class LessonServicer(lesson_service_pb2_grpc.LessonServiceServicer):
    def __init__(self, lessons: Lessons) -> None:
        self._lessons = lessons

    async def GetLesson(
        self, request: lesson_service_pb2.GetLessonRequest, context: Context
    ) -> lesson_pb2.Lesson:
        lesson = await self._lessons.get(caller.current.get(), messages.lesson_id(request.id))
        return messages.lesson_message(lesson)

    async def ListLessons(
        self, request: lesson_service_pb2.ListLessonsRequest, context: Context
    ) -> lesson_service_pb2.ListLessonsResponse:
        items, token = await self._lessons.list_lessons(
            caller.current.get(),
            messages.lesson_filter(request),
            request.page_token,
            request.page_size,
        )
        return lesson_service_pb2.ListLessonsResponse(
            lessons=[messages.lesson_message(lesson) for lesson in items], next_page_token=token
        )

    async def SearchLessons(
        self, request: lesson_service_pb2.SearchLessonsRequest, context: Context
    ) -> lesson_service_pb2.SearchLessonsResponse:
        query, user_id, status = messages.search_terms(request)
        matches, token = await self._lessons.search(
            caller.current.get(), query, user_id, status, request.page_token, request.page_size
        )
        return lesson_service_pb2.SearchLessonsResponse(
            matches=[messages.match_message(m) for m in matches], next_page_token=token
        )
