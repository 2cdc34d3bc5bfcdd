"""Every SQL statement on one user's data as a whole: erasure and export.

The row converters are those of the stores that own each table, so an
exported record reads exactly like what the other RPCs return.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from memory_service.domain import audit
from memory_service.domain.errors import NotFound
from memory_service.domain.models import (
    Interaction,
    Lesson,
    Memory,
    MemoryRevision,
    User,
    UserPreferences,
)
from memory_service.storage.database import Database
from memory_service.storage.encryption import FieldCipher
from memory_service.storage.lessons import LESSON_COLUMNS, LESSON_NAMES_JOIN, lesson_from_row
from memory_service.storage.memories import (
    INTERACTION_COLUMNS,
    MEMORY_COLUMNS,
    REVISION_COLUMNS,
    interaction_from_row,
    memory_from_row,
    revision_from_row,
)
from memory_service.storage.recall_log import RecallLog
from memory_service.storage.registry import USER_COLUMNS, preferences_from_row, user_from_row

# One exported record, in the order ExportUserData promises: the user, its
# preferences, then memories, memory revisions, interactions and lessons.
ExportRecord = User | UserPreferences | Memory | MemoryRevision | Interaction | Lesson

# Rows fetched per round trip from a server-side cursor: few enough that a
# user with a million memories costs the service a bounded amount of memory.
CURSOR_PREFETCH_ROWS = 100

# FOR UPDATE, not FOR SHARE: every insert of a memory, interaction, lesson or
# preference row takes FOR KEY SHARE on the user row (its foreign key check),
# which FOR UPDATE conflicts with. A concurrent write for this user therefore
# either committed before the lock (and the deletes below see it: each
# statement of a READ COMMITTED transaction takes a fresh snapshot) or waits
# for the erasure to commit and then fails its foreign key check.
_LOCK_USER = "SELECT id FROM users WHERE id = $1 FOR UPDATE"

# One statement, one snapshot. The explicit child deletes are for the counts
# (and the lesson ids, whose cache entries must go); ON DELETE CASCADE would
# remove the same rows. Deleting a row both here and by a cascade is safe:
# the cascade runs at the end of the statement and finds the row gone.
# Interactions, revisions and import ids are matched by their own user_id, which is
# always their memory's user (the composite foreign keys); any row that
# disagreed would still go by cascade.
_ERASE = """
WITH interactions AS (
    DELETE FROM memory_interactions WHERE user_id = $1 RETURNING id
), revisions AS (
    DELETE FROM memory_revisions WHERE user_id = $1 RETURNING id
), import_ids AS (
    DELETE FROM memory_import_ids WHERE user_id = $1 RETURNING import_id
), memories AS (
    DELETE FROM user_memories WHERE user_id = $1 RETURNING id
), lessons AS (
    DELETE FROM lessons WHERE user_id = $1 RETURNING id
), preferences AS (
    DELETE FROM user_preferences WHERE user_id = $1 RETURNING user_id
), erased_user AS (
    DELETE FROM users WHERE id = $1 RETURNING id
)
SELECT (SELECT count(*) FROM interactions) AS interactions,
       (SELECT count(*) FROM revisions) AS revisions,
       (SELECT count(*) FROM memories) AS memories,
       (SELECT count(*) FROM import_ids) AS import_ids,
       (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM lessons) AS lesson_ids,
       (SELECT count(*) FROM preferences) AS preferences,
       (SELECT count(*) FROM erased_user) AS users
"""

_EXPORT_USER = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1"

_EXPORT_PREFERENCES = """
SELECT user_id, theme, notifications, language, timezone, updated_at
FROM user_preferences WHERE user_id = $1
"""

# In ix_user_memories_user_id_created_at order (read backwards): no sort
# before the first row.
_EXPORT_MEMORIES = f"""
SELECT {MEMORY_COLUMNS} FROM user_memories WHERE user_id = $1 ORDER BY created_at, id
"""

# By memory, each memory's oldest first: ix_memory_revisions_user_id_memory_id_id's order.
_EXPORT_REVISIONS = f"""
SELECT {REVISION_COLUMNS} FROM memory_revisions WHERE user_id = $1 ORDER BY memory_id, id
"""

_EXPORT_INTERACTIONS = f"""
SELECT {INTERACTION_COLUMNS} FROM memory_interactions WHERE user_id = $1 ORDER BY "timestamp", id
"""

# With the subject's and assistant's names, as GetLesson answers.
_EXPORT_LESSONS = f"""
SELECT {LESSON_COLUMNS} FROM lessons l {LESSON_NAMES_JOIN} WHERE l.user_id = $1 ORDER BY l.id
"""


@dataclass(frozen=True, slots=True)
class ErasedUserData:
    """What erase_user deleted: row counts, and the lessons whose cache entries must go."""

    memories: int
    interactions: int
    lesson_ids: list[int]
    preferences: int
    memory_revisions: int

    @property
    def lessons(self) -> int:
        return len(self.lesson_ids)


class UserDataStore:
    def __init__(
        self,
        db: Database,
        cipher: FieldCipher | None = None,
        recall_log: RecallLog | None = None,
    ) -> None:
        """`recall_log`: the process's queued recall bookkeeping, written
        before an erasure or export so both count every acknowledged recall."""
        self._db = db
        self._cipher = cipher
        self._recall_log = recall_log

    async def _flush_recall_log(self) -> None:
        if self._recall_log is not None:
            await self._recall_log.flush()

    async def erase_user(self, user_id: uuid.UUID) -> ErasedUserData:
        """Delete the user and everything of theirs in one transaction (NotFound if no user).

        The caller invalidates cached lessons after this returns, that is
        after the commit: earlier, a concurrent GetLesson could re-cache a
        lesson that is about to be deleted.
        """
        audit.note(user_id=user_id)
        await self._flush_recall_log()
        async with self._db.connection() as conn:  # one transaction, committed on exit
            if await conn.fetchval(_LOCK_USER, user_id) is None:
                raise NotFound("user", user_id)
            row = await conn.fetchrow(_ERASE, user_id)
            assert row is not None and row["users"] == 1
            # The counts, never the data, go into the erasure's audit row.
            audit.note(
                erased={
                    "memories": row["memories"],
                    "memory_revisions": row["revisions"],
                    "memory_import_ids": row["import_ids"],
                    "interactions": row["interactions"],
                    "lessons": len(row["lesson_ids"]),
                    "preferences": row["preferences"],
                }
            )
        return ErasedUserData(
            memories=row["memories"],
            interactions=row["interactions"],
            lesson_ids=list(row["lesson_ids"]),
            preferences=row["preferences"],
            memory_revisions=row["revisions"],
        )

    async def export_user(self, user_id: uuid.UUID) -> AsyncGenerator[ExportRecord, None]:
        """Every record of the user, streamed: the user first (NotFound before anything else).

        One REPEATABLE READ, READ ONLY transaction, so the export is one
        consistent snapshot even while the user keeps working: no interaction
        of a memory stored after the memories were read, no half-applied
        erasure. Memories, revisions, interactions and lessons come through server-side
        cursors, so memory use does not grow with the user's data. The
        connection stays checked out until the consumer finishes or closes
        this generator; close it (contextlib.aclosing) when abandoning it
        early, so the connection goes back to the pool at once rather than
        when the generator is garbage collected.
        """
        audit.note(user_id=user_id)
        await self._flush_recall_log()
        async with self._db.connection(read_only_snapshot=True, replica_ok=True) as conn:
            user_row = await conn.fetchrow(_EXPORT_USER, user_id)
            if user_row is None:
                raise NotFound("user", user_id)
            yield user_from_row(user_row, self._cipher)
            prefs_row = await conn.fetchrow(_EXPORT_PREFERENCES, user_id)
            if prefs_row is not None:
                yield preferences_from_row(prefs_row)
            async for row in conn.cursor(_EXPORT_MEMORIES, user_id, prefetch=CURSOR_PREFETCH_ROWS):
                yield memory_from_row(row)
            async for row in conn.cursor(_EXPORT_REVISIONS, user_id, prefetch=CURSOR_PREFETCH_ROWS):
                yield revision_from_row(row)
            async for row in conn.cursor(
                _EXPORT_INTERACTIONS, user_id, prefetch=CURSOR_PREFETCH_ROWS
            ):
                yield interaction_from_row(row)
            async for row in conn.cursor(_EXPORT_LESSONS, user_id, prefetch=CURSOR_PREFETCH_ROWS):
                yield lesson_from_row(row)
