"""Memory revisions: every change to what a memory says keeps the values it replaced.

Revision ID: 0013
Revises: 0012

`memory_revisions` holds one row per change of a memory's content,
importance, category, tags, metadata or expiry (issue 10): the memory's
values and `version` before the change, who made it (`changed_by`) and when
(`changed_at`). ListMemoryRevisions reads them newest first; they are
erased and exported with their memory's user.

Written by a row-level AFTER UPDATE trigger on user_memories, so no path
that changes a memory (UpdateMemory, RecordFeedback's importance, plain SQL)
can skip it. `UPDATE OF` those six columns plus a WHEN clause comparing OLD
and NEW: recall's last_accessed bump (the hottest update) never even
evaluates the condition, and an update that sets the same values keeps no
revision.

Who: the trigger reads `faraday.actor`, which the service sets with the
acting user in the BEGIN of every transaction (storage/database.py,
storage/session.py): the authenticated caller, `service:<token name>`,
`user:<user id>` or `local:local`, or `system` for the service's own
background work. A change made in SQL outside the service, where the
setting is unset, is recorded as `database`. The setting is the service
role's word: it can set any value, as it can write any memory, so this is
attribution, not proof against the service itself.

Keys and row-level security as memory_interactions (migration 0008): the
foreign key (memory_id, user_id) -> user_memories (id, user_id) makes a
revision always its memory's user's, and ON DELETE CASCADE takes revisions
with their memory (DeleteMemory, the expiry sweep, DeleteUserData). One
index, (user_id, memory_id, id), serves a memory's pages newest first (read
backwards), the cascade's lookup of a memory's revisions, and export and
erasure by user. The service roles may read, insert (the trigger runs as
them) and delete (erasure), never update: history is not rewritten.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLES = ("faraday_app", "faraday_platform")
_POLICY = "((SELECT faraday_sees_all()) OR user_id = (SELECT faraday_acting_user()))"

# The columns whose change keeps a revision (tables.REVISED_MEMORY_COLUMNS).
_TRACKED = ("content", "importance", "category", "tags", "metadata", "expires_at")

_ON_UPDATE = f"""
CREATE FUNCTION faraday_memory_revision() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO memory_revisions (memory_id, user_id, version, {", ".join(_TRACKED)}, changed_by)
    VALUES (OLD.id, OLD.user_id, OLD.version, {", ".join(f"OLD.{c}" for c in _TRACKED)},
            coalesce(nullif(current_setting('faraday.actor', true), ''), 'database'));
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.create_table(
        "memory_revisions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("memory_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("importance", sa.Double(), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("changed_by", sa.Text(), nullable=False),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["memory_id", "user_id"],
            ["user_memories.id", "user_memories.user_id"],
            name="fk_memory_revisions_memory_id_user_id_user_memories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_revisions")),
    )
    op.create_index(
        "ix_memory_revisions_user_id_memory_id_id",
        "memory_revisions",
        ["user_id", "memory_id", "id"],
    )
    op.execute("ALTER TABLE memory_revisions ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE memory_revisions FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY memory_revisions_owner ON memory_revisions"
        f" USING {_POLICY} WITH CHECK {_POLICY}"
    )
    for role in _ROLES:
        op.execute(f"GRANT SELECT, INSERT, DELETE ON memory_revisions TO {role}")
    op.execute(_ON_UPDATE)
    changed = " OR ".join(f"OLD.{c} IS DISTINCT FROM NEW.{c}" for c in _TRACKED)
    op.execute(
        "CREATE TRIGGER trg_user_memories_revisions"
        f" AFTER UPDATE OF {', '.join(_TRACKED)} ON user_memories"
        f" FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION faraday_memory_revision()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER trg_user_memories_revisions ON user_memories")
    op.execute("DROP FUNCTION faraday_memory_revision()")
    op.drop_table("memory_revisions")
