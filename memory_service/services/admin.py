"""Use cases of the platform's registry: users, subjects, assistants, lessons.

Each write that changes what GetLesson answers invalidates the cached
lessons it touches, after the write has committed (invalidating earlier
would let a concurrent GetLesson re-cache the old row).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator

from memory_service.domain.models import (
    AssistantProfile,
    Lesson,
    SubjectCategory,
    User,
    UserPreferences,
)
from memory_service.storage.cache import LessonCache
from memory_service.storage.lessons import LessonStore
from memory_service.storage.registry import RegistryStore
from memory_service.storage.user_data import ErasedUserData, ExportRecord, UserDataStore


class Admin:
    def __init__(
        self,
        registry: RegistryStore,
        lessons: LessonStore,
        cache: LessonCache | None,
        user_data: UserDataStore | None = None,
    ) -> None:
        self._registry = registry
        self._lessons = lessons
        self._cache = cache
        self._user_data = user_data or UserDataStore(registry.database, registry.cipher)

    async def upsert_user(self, user: User) -> User:
        return await self._registry.upsert_user(user)

    async def upsert_preferences(self, prefs: UserPreferences) -> UserPreferences:
        return await self._registry.upsert_preferences(prefs)

    async def upsert_subject_category(self, category: SubjectCategory) -> SubjectCategory:
        saved = await self._registry.upsert_subject_category(category)
        # GetLesson shows the subject's name, which a rename changes.
        if self._cache is not None:
            assert saved.id is not None
            await self._cache.invalidate(
                *await self._lessons.ids_referencing(subject_category_id=saved.id)
            )
        return saved

    async def upsert_assistant_profile(self, profile: AssistantProfile) -> AssistantProfile:
        saved = await self._registry.upsert_assistant_profile(profile)
        # GetLesson shows the assistant's name, which a rename changes.
        if self._cache is not None:
            assert saved.id is not None
            await self._cache.invalidate(
                *await self._lessons.ids_referencing(assistant_profile_id=saved.id)
            )
        return saved

    async def upsert_lesson(self, lesson: Lesson) -> Lesson:
        saved = await self._lessons.upsert(lesson)
        # A new lesson's id cannot be cached yet; a replaced one's can.
        if self._cache is not None and lesson.id is not None:
            await self._cache.invalidate(lesson.id)
        return saved

    async def delete_lesson(self, lesson_id: int) -> None:
        await self._lessons.delete(lesson_id)
        if self._cache is not None:
            await self._cache.invalidate(lesson_id)

    async def delete_user_data(self, user_id: uuid.UUID) -> ErasedUserData:
        """Erase the user and all their data; NotFound if the user does not exist."""
        erased = await self._user_data.erase_user(user_id)
        # After the commit: GetLesson must not find the deleted lessons in
        # the cache, and invalidating earlier would let it re-cache them.
        if self._cache is not None:
            await self._cache.invalidate(*erased.lesson_ids)
        return erased

    def export_user_data(self, user_id: uuid.UUID) -> AsyncGenerator[ExportRecord, None]:
        """Every record of the user, the user first; NotFound before any record if none.

        The caller should close the generator (contextlib.aclosing) so that an
        abandoned export gives its database connection back at once.
        """
        return self._user_data.export_user(user_id)
