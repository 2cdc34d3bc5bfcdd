"""Dedup and import ids: a content key per memory, `merge` interactions, import ids.

Revision ID: 0014
Revises: 0013

Issue 10's StoreMemory, BatchStoreMemories and ImportMemories take a dedup
policy (memory_service.proto DedupPolicy). EXACT compares a normalized form
of the content within a user and assistant profile; that comparison has to
be an index lookup, not a scan of the user's memories, so:

`faraday_content_key(text) -> bytea`: sha256 of the content after Unicode
NFKC normalization, lower-casing, collapsing runs of white space to one
space and trimming both ends. Declared IMMUTABLE although convert_to() is
only STABLE (it depends on the database encoding): a database's encoding is
fixed at CREATE DATABASE, and normalize() refuses to run unless it is UTF8
anyway, so within one database the function's result never changes. Two
things that are fixed per database but not across them: lower() and the
regular expression's `\\s` follow the database's LC_CTYPE (C.UTF-8 and
en_US.UTF-8 agree on letters and white space for the texts we tested; a
dump restored into a database of another LC_CTYPE should run `UPDATE
user_memories SET content = content` to recompute the keys). A hash, not
the normalized text: a fixed 32 bytes in the index whatever the content's
length (contents may be 16 KB, past a btree entry's limit), and
user_memories keeps no second copy of every text.

`user_memories.content_key`: a stored generated column, so no path that
writes content (StoreMemory, UpdateMemory, import, plain SQL) can leave it
stale, and index `(user_id, content_key)` for the dedup lookup. Under
row-level security (PITFALLS) an index condition must be leakproof:
`bytea = bytea` (byteaeq) and `uuid = uuid` are, so the service role's
lookup is an index scan (checked with EXPLAIN as faraday_app,
tests/storage/test_dedup.py). The assistant profile is not in the index:
a user's memories with one content key are few, and the profile is a
filter on them.

`merge`: a store that repeated an existing memory logs a `merge`
interaction on it (InteractionType MERGE); the check constraint allows it.
Downgrading deletes those interactions (the older schema cannot hold them).

Import ids (ImportMemories): `user_memories.import_id` is the id the memory
was imported as (Memory.import_id, 1..128 characters); `memory_import_ids
(user_id, import_id) -> memory_id` remembers every import id ever taken,
including those merged into another memory, so re-running an import changes
nothing. Its primary key leads with the user (PITFALLS: a caller's key must
not reveal another user's row); the foreign key (memory_id, user_id) ->
user_memories (id, user_id) ON DELETE CASCADE makes an id its memory's
user's and takes it with its memory (DeleteMemory, the expiry sweep,
DeleteUserData), which needs the index on memory_id. Row-level security and
grants as memory_revisions (0013): the service roles read, insert and
delete (erasure), never update.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLES = ("faraday_app", "faraday_platform")
_POLICY = "((SELECT faraday_sees_all()) OR user_id = (SELECT faraday_acting_user()))"

# tables.CONTENT_KEY_FUNCTION holds the same text (the reference schema of
# tests/storage/test_migrations.py is built from it).
_CONTENT_KEY = r"""
CREATE FUNCTION faraday_content_key(content text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN sha256(convert_to(
    btrim(regexp_replace(lower(normalize(content, NFKC)), '\s+', ' ', 'g')), 'UTF8'))
"""

_OLD_TYPES = ("store", "recall", "update", "feedback")
_NEW_TYPES = (*_OLD_TYPES, "merge")
_TYPE_CHECK = "ck_memory_interactions_valid_interaction_type"


def _type_check(types: tuple[str, ...]) -> str:
    return "interaction_type IN (" + ", ".join(f"'{t}'" for t in types) + ")"


def upgrade() -> None:
    op.execute(_CONTENT_KEY)
    op.add_column(
        "user_memories",
        sa.Column(
            "content_key",
            postgresql.BYTEA(),
            sa.Computed("faraday_content_key(content)", persisted=True),
            nullable=False,
        ),
    )
    op.create_index(
        "ix_user_memories_user_id_content_key", "user_memories", ["user_id", "content_key"]
    )

    op.drop_constraint(op.f(_TYPE_CHECK), "memory_interactions", type_="check")
    op.create_check_constraint(op.f(_TYPE_CHECK), "memory_interactions", _type_check(_NEW_TYPES))

    op.add_column("user_memories", sa.Column("import_id", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_user_memories_import_id_length"),
        "user_memories",
        "length(import_id) >= 1 AND length(import_id) <= 128",
    )
    op.create_table(
        "memory_import_ids",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("import_id", sa.Text(), nullable=False),
        sa.Column("memory_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["memory_id", "user_id"],
            ["user_memories.id", "user_memories.user_id"],
            name="fk_memory_import_ids_memory_id_user_id_user_memories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "import_id", name=op.f("pk_memory_import_ids")),
    )
    op.create_index("ix_memory_import_ids_memory_id", "memory_import_ids", ["memory_id"])
    op.execute("ALTER TABLE memory_import_ids ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE memory_import_ids FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY memory_import_ids_owner ON memory_import_ids"
        f" USING {_POLICY} WITH CHECK {_POLICY}"
    )
    for role in _ROLES:
        op.execute(f"GRANT SELECT, INSERT, DELETE ON memory_import_ids TO {role}")


def downgrade() -> None:
    op.drop_table("memory_import_ids")
    op.drop_constraint(op.f("ck_user_memories_import_id_length"), "user_memories", type_="check")
    op.drop_column("user_memories", "import_id")

    # The older schema has no `merge`: those interactions go.
    op.execute("DELETE FROM memory_interactions WHERE interaction_type = 'merge'")
    op.drop_constraint(op.f(_TYPE_CHECK), "memory_interactions", type_="check")
    op.create_check_constraint(op.f(_TYPE_CHECK), "memory_interactions", _type_check(_OLD_TYPES))

    op.drop_index("ix_user_memories_user_id_content_key", table_name="user_memories")
    op.drop_column("user_memories", "content_key")
    op.execute("DROP FUNCTION faraday_content_key(text)")
