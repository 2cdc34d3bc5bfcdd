"""Recall's importance-band index carries each memory's id and profile.

Revision ID: 0012
Revises: 0011

Query recall for a heavy user walks the bands (user_id, importance_band,
updated_at DESC) to bound which memories could still reach the top
(storage/memories.py, `reach`) and joins what it finds with the memories'
text scores. With `id` in the index that walk is an index-only scan, and
with `assistant_profile_id` too, because the row-level security policy
reads it and an index-only scan needs every column its filters use. The
index grows by about 12 bytes a row; the walk stops reading the heap.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME = "ix_user_memories_user_id_importance_band"


def upgrade() -> None:
    op.drop_index(_NAME, table_name="user_memories")
    op.create_index(
        _NAME,
        "user_memories",
        ["user_id", "importance_band", text("updated_at DESC")],
        postgresql_include=["id", "assistant_profile_id"],
    )


def downgrade() -> None:
    op.drop_index(_NAME, table_name="user_memories")
    op.create_index(_NAME, "user_memories", ["user_id", "importance_band", text("updated_at DESC")])
