"""An interaction belongs to its memory's user: a composite foreign key says so.

Revision ID: 0008
Revises: 0007

memory_interactions.memory_id referenced user_memories.id alone, so at the
SQL level an interaction row could name one user's memory and another
user's user_id: row-level security would then show a user an interaction
(and its context) about a memory that is not theirs. The service never
writes such a row, but the schema should make it impossible, not the
service's care. The key is now (memory_id, user_id) -> user_memories (id,
user_id), which needs a unique constraint on those two columns (the primary
key on id alone stays: other tables and the API name memories by id).

On a large table the new foreign key is added NOT VALID (a brief lock) and
then validated (a scan that does not block writes). Rows that would fail it
cannot have been written by the service; any that exist are deleted first,
as they describe a memory their user does not have.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_FK = "fk_memory_interactions_memory_id_user_memories"
_NEW_FK = "fk_memory_interactions_memory_id_user_id_user_memories"


def upgrade() -> None:
    op.execute(
        "ALTER TABLE user_memories ADD CONSTRAINT uq_user_memories_id_user_id UNIQUE (id, user_id)"
    )
    op.execute("""
        DELETE FROM memory_interactions i USING user_memories m
        WHERE m.id = i.memory_id AND m.user_id <> i.user_id""")
    op.execute(f"ALTER TABLE memory_interactions DROP CONSTRAINT {_OLD_FK}")
    op.execute(
        f"ALTER TABLE memory_interactions ADD CONSTRAINT {_NEW_FK}"
        " FOREIGN KEY (memory_id, user_id) REFERENCES user_memories (id, user_id)"
        " ON DELETE CASCADE NOT VALID"
    )
    op.execute(f"ALTER TABLE memory_interactions VALIDATE CONSTRAINT {_NEW_FK}")


def downgrade() -> None:
    op.execute(f"ALTER TABLE memory_interactions DROP CONSTRAINT {_NEW_FK}")
    op.execute(
        f"ALTER TABLE memory_interactions ADD CONSTRAINT {_OLD_FK}"
        " FOREIGN KEY (memory_id) REFERENCES user_memories (id) ON DELETE CASCADE"
    )
    op.execute("ALTER TABLE user_memories DROP CONSTRAINT uq_user_memories_id_user_id")
