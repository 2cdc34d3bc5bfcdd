"""Indexes the service role can use under row-level security, and none it cannot.

Revision ID: 0004
Revises: 0003

Under FORCE ROW LEVEL SECURITY, PostgreSQL evaluates the policy before any
condition whose functions are not LEAKPROOF, so such a condition can never
be an index condition for the service role (`faraday_app`). Checked with
EXPLAIN as that role on the 1M-memory bench data set: `tags && ...`,
`context @> ...` and `content_tsv @@ ...` all become sequential scans, and
`floor(importance * 10)::int = ...` on an expression index becomes a filter.
Only plain comparisons (uuid, integer, timestamptz, float8 `=`/`<`/`>=`) are
leakproof.

- `importance_band` (smallint, stored, floor(importance * 10)) and
  `ix_user_memories_user_id_importance_band` on (user_id, importance_band,
  updated_at DESC): recall without query text walks each band from its most
  recently updated memory and stops where no row can reach the top
  (storage/memories.py has the bound). A logged recall for a user with
  68,000 memories, as the service role: ~2 s with the bound as an expression
  (the band became a filter, so each band scanned the whole user), 2.5 ms
  mean over the bench's user mix now. It replaces
  `ix_user_memories_user_id_importance`.
- The GIN indexes on tags, context and content_tsv (0001, 0003) are dropped:
  the service role cannot use them, every recall is narrowed by the user_id
  btree instead, and each StoreMemory paid for ~30 GIN entries.
- fillfactor 90, so that recall's last_accessed bump (no indexed column)
  can be a HOT update on the same page: at 100 most first bumps were not
  (15% HOT on the bench data), and each wrote an entry into every index.
  Existing rows move to pages with room when the column is added (a rewrite).
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
    op.execute("ALTER TABLE user_memories SET (fillfactor = 90)")
    op.add_column(
        "user_memories",
        sa.Column(
            "importance_band",
            sa.SmallInteger(),
            sa.Computed("floor(importance * 10)::smallint", persisted=True),
            nullable=False,
        ),
    )
    op.create_index(
        op.f("ix_user_memories_user_id_importance_band"),
        "user_memories",
        ["user_id", "importance_band", sa.text("updated_at DESC")],
    )
    for name in ("user_id_importance", "content_tsv", "tags", "context"):
        op.drop_index(op.f(f"ix_user_memories_{name}"), table_name="user_memories")


def downgrade() -> None:
    op.create_index(
        op.f("ix_user_memories_context"),
        "user_memories",
        ["context"],
        postgresql_using="gin",
        postgresql_ops={"context": "jsonb_path_ops"},
    )
    op.create_index(
        op.f("ix_user_memories_tags"), "user_memories", ["tags"], postgresql_using="gin"
    )
    op.create_index(
        op.f("ix_user_memories_content_tsv"),
        "user_memories",
        ["content_tsv"],
        postgresql_using="gin",
    )
    op.create_index(
        op.f("ix_user_memories_user_id_importance"),
        "user_memories",
        ["user_id", sa.text("importance DESC")],
    )
    op.drop_index(op.f("ix_user_memories_user_id_importance_band"), table_name="user_memories")
    op.drop_column("user_memories", "importance_band")
    op.execute("ALTER TABLE user_memories RESET (fillfactor)")
