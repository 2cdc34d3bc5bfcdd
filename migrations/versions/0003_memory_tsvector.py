"""Store the memories' full-text vector instead of recomputing it.

Revision ID: 0003
Revises: 0002

Recall ranked query matches with ts_rank_cd(to_tsvector(content), ...),
re-parsing the content of every candidate: at 1M memories that was most of
a query recall's database time (bench/). A stored generated column, GIN
indexed, is parsed once per write; the expression index it replaces is
dropped. The service role's grants cover the new column (table-level).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "user_memories",
        sa.Column(
            "content_tsv",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english'::regconfig, content)", persisted=True),
            nullable=False,
        ),
    )
    op.create_index(
        op.f("ix_user_memories_content_tsv"),
        "user_memories",
        ["content_tsv"],
        postgresql_using="gin",
    )
    op.drop_index(op.f("ix_user_memories_content_fts"), table_name="user_memories")


def downgrade() -> None:
    op.create_index(
        op.f("ix_user_memories_content_fts"),
        "user_memories",
        [sa.text("to_tsvector('english'::regconfig, content)")],
        postgresql_using="gin",
    )
    op.drop_index(op.f("ix_user_memories_content_tsv"), table_name="user_memories")
    op.drop_column("user_memories", "content_tsv")
