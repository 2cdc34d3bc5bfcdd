"""Every key of a per-user table leads with user_id, so the schema can be sharded by user.

Revision ID: 0017
Revises: 0016

Distributing the per-user tables by `user_id` (Citus, docs/scaling.md
"Distributing by user with Citus") needs the distribution column in every
primary and unique key, since uniqueness can only be checked inside one
shard. Three keys did not have it:

- `user_memories`: primary key (id) becomes (user_id, id). Ids stay
  globally unique (the identity sequence hands them out), so every id the
  API has issued stays valid. The unique (id, user_id) of migration 0008
  stays as it is: the composite foreign keys of memory_interactions,
  memory_revisions, memory_import_ids and memory_embeddings depend on its
  index, and re-pointing them would re-validate memory_interactions, the
  biggest table, under lock. Before, the table had two unique indexes, (id)
  and (id, user_id); it still has two.
- `memory_revisions`: primary key (id) becomes (user_id, id), as above.
- `idempotency_keys`: primary key (caller, request_id) becomes (user_id,
  caller, request_id). A caller's request id is now unique per user: a
  retry (always for the same user) still replays, and reusing an id for a
  different request of the same user is still INVALID_ARGUMENT, but the
  same id in a request for another user is another key. The index on
  user_id alone goes: the new primary key leads with it.

Every foreign key between per-user tables already carries user_id on both
sides (memory_id, user_id) -> user_memories (id, user_id), and
user_preferences' key is user_id itself. `users` and `lessons` keep their
keys: they are to be reference tables (docs/scaling.md says why).

Cost: each ALTER TABLE rebuilds one primary-key index under an ACCESS
EXCLUSIVE lock, inside the migration's transaction (CREATE INDEX
CONCURRENTLY cannot run in one); no row is rewritten and no foreign key is
re-validated (user_id and id are already NOT NULL). Measured in
docs/scaling.md. Downgrade restores the old keys (and fails, rightly, if
two users now share a caller's request id).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _primary_key(table: str, columns: str) -> None:
    op.execute(
        f"ALTER TABLE {table} DROP CONSTRAINT pk_{table},"
        f" ADD CONSTRAINT pk_{table} PRIMARY KEY ({columns})"
    )


def upgrade() -> None:
    _primary_key("user_memories", "user_id, id")
    _primary_key("memory_revisions", "user_id, id")
    _primary_key("idempotency_keys", "user_id, caller, request_id")
    op.drop_index("ix_idempotency_keys_user_id", table_name="idempotency_keys")


def downgrade() -> None:
    op.create_index("ix_idempotency_keys_user_id", "idempotency_keys", ["user_id"])
    _primary_key("idempotency_keys", "caller, request_id")
    _primary_key("memory_revisions", "id")
    _primary_key("user_memories", "id")
