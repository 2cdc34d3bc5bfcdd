"""Use cases on lessons: read one (through the cache), list, search."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from typing import Any

from memory_service.domain import page_token
from memory_service.domain.errors import InvalidArgument, NotFound
from memory_service.domain.models import Lesson, LessonFilter, LessonMatch, LessonStatus
from memory_service.domain.principal import Principal
from memory_service.storage import session
from memory_service.storage.cache import LessonCache
from memory_service.storage.lessons import LessonStore

SEARCH_DEFAULT_PAGE_SIZE = 20
SEARCH_MAX_PAGE_SIZE = 100

_BIGINT_MAX = 2**63 - 1


class Lessons:
    def __init__(self, store: LessonStore, cache: LessonCache | None) -> None:
        self._store = store
        self._cache = cache

    async def get(self, caller: Principal, lesson_id: int) -> Lesson:
        cached = await self._cache.get(lesson_id) if self._cache is not None else None
        # The cache is shared by all callers, so visibility is checked here on
        # every hit, not only by the database's row-level security.
        if cached is not None and _visible(caller, cached):
            return cached
        # A miss, or someone else's cached draft: that one is answered after
        # the same database read as a lesson that does not exist (row-level
        # security hides it too), so timing cannot tell it is cached.
        # With a cache, from the primary only: the cache is shared by every
        # process, and a replica's older copy put there after an update's
        # invalidation would outlive the replica's lag by the cache's TTL.
        lesson = await self._store.get(lesson_id, replica_ok=self._cache is None)
        if not _visible(caller, lesson):
            raise NotFound("lesson", lesson_id)
        if self._cache is not None:
            await self._cache.put(lesson)
        return lesson

    async def list_lessons(
        self, caller: Principal, f: LessonFilter, token: str, size: int
    ) -> tuple[list[Lesson], str]:
        filters = asdict(f)
        after = _position(page_token.decode(token, filters, arity=1), minimum=1)
        page = await self._store.list_lessons(f, after, page_token.page_size(size), caller.user_id)
        next_token = page_token.encode(page.next_position, filters) if page.next_position else ""
        return page.items, next_token

    async def search(
        self,
        caller: Principal,
        query: str,
        user_id: uuid.UUID | None,
        status: LessonStatus | None,
        token: str,
        size: int,
    ) -> tuple[list[LessonMatch], str]:
        # Ranked results have no keyset to continue from: the rank is computed
        # per query, and ties and changing rows reorder them. An offset (kept
        # inside the opaque token, with the query's fingerprint) is the usual
        # answer: pages are small (at most 100), people read the first few,
        # and a lesson written between two pages can at worst repeat or skip
        # one hit, which a search tolerates.
        filters = {"query": query, "user_id": user_id, "status": status}
        offset = _position(page_token.decode(token, filters, arity=1), minimum=0) or 0
        limit = page_token.page_size(
            size, default=SEARCH_DEFAULT_PAGE_SIZE, maximum=SEARCH_MAX_PAGE_SIZE
        )
        matches = await self._store.search(
            query, user_id, status, offset, limit + 1, caller.user_id
        )
        more = len(matches) > limit
        next_token = page_token.encode([offset + limit], filters) if more else ""
        return matches[:limit], next_token

    async def count_terms(self, unless_started_within_seconds: float = 0.0) -> int | None:
        """The lesson term job: recount the search words common enough to need
        a count (migration 0020); how many counts changed. Every lesson
        counts, so as ALL_USERS. None if it did not run: another process's
        run is under way or started less than `unless_started_within_seconds`
        ago (migration 0021)."""
        with session.acting_as(session.ALL_USERS):
            return await self._store.count_terms(unless_started_within_seconds)


def _visible(caller: Principal, lesson: Lesson) -> bool:
    return (
        caller.user_id is None
        or lesson.user_id == caller.user_id
        or lesson.status is LessonStatus.PUBLISHED
    )


def _position(position: list[Any] | None, *, minimum: int) -> int | None:
    """The one integer of a decoded page token; a forged one is INVALID_ARGUMENT."""
    if position is None:
        return None
    value = position[0]
    if type(value) is not int or not minimum <= value <= _BIGINT_MAX:
        raise InvalidArgument.one("page_token", "is not a token this request can continue from")
    return value
