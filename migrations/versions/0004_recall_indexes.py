"""Indexes that let recall read a few rows of a heavy user instead of all of them.

Revision ID: 0004
Revises: 0003

- `ix_user_memories_user_id_importance_band` on (user_id, importance band,
  updated_at DESC), band = floor(importance * 10): recall without query text
  walks each band from its most recently updated memory and stops where no
  row can reach the top (storage/memories.py explains the bound). A recall
  for a user with 68,000 memories went from a 205 ms scan of every row to
  0.4 ms. It leads with user_id and importance, so it also replaces
  `ix_user_memories_user_id_importance`.
- `ix_user_memories_user_id_content_tsv`, GIN on (user_id, content_tsv),
  replaces the GIN on content_tsv alone: that one made every query recall
  read the posting list of each word across all users (629,000 rows for
  "students" at 1M memories, 28 ms for a user with 29 memories; 0.5 ms now).
  A GIN index on a uuid column needs the `btree_gin` extension: it ships in
  PostgreSQL's contrib (the platform documentation already lists it), is
  marked trusted, so the database owner may create it without superuser,
  and every managed PostgreSQL we know of offers it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    op.create_index(
        op.f("ix_user_memories_user_id_importance_band"),
        "user_memories",
        ["user_id", sa.text("(floor(importance * 10)::int)"), sa.text("updated_at DESC")],
    )
    op.drop_index(op.f("ix_user_memories_user_id_importance"), table_name="user_memories")
    op.create_index(
        op.f("ix_user_memories_user_id_content_tsv"),
        "user_memories",
        ["user_id", "content_tsv"],
        postgresql_using="gin",
    )
    op.drop_index(op.f("ix_user_memories_content_tsv"), table_name="user_memories")


def downgrade() -> None:
    op.create_index(
        op.f("ix_user_memories_content_tsv"),
        "user_memories",
        ["content_tsv"],
        postgresql_using="gin",
    )
    op.drop_index(op.f("ix_user_memories_user_id_content_tsv"), table_name="user_memories")
    op.create_index(
        op.f("ix_user_memories_user_id_importance"),
        "user_memories",
        ["user_id", sa.text("importance DESC")],
    )
    op.drop_index(op.f("ix_user_memories_user_id_importance_band"), table_name="user_memories")
    # Without CASCADE: if anything else has come to depend on it, this fails
    # rather than dropping someone else's objects.
    op.execute("DROP EXTENSION IF EXISTS btree_gin")
