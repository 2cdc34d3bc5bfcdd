"""Caller-chosen times stay within 1970-01-01 .. 9000-01-01, so every row reads back.

Revision ID: 0007
Revises: 0006

`user_memories.expires_at` and `lessons.week_of` are the only times a
caller chooses (the others are the server's now()). asyncpg 0.32 writes
Python's datetime.max as PostgreSQL's `infinity` and datetime.min as
`-infinity` (and date.max as `infinity`), and reads `infinity` back as a
naive datetime, which the service cannot turn into a Timestamp: one
StoreMemory with expire_time 9999-12-31T23:59:59.999999Z answered INTERNAL
after its row committed, and from then on every GetMemory, ListMemories,
RecallMemories and ExportUserData of that user did too. A year past 9999
cannot be read into Python at all (OverflowError).

The service now refuses such values (domain/validation.py TIME_MIN and
TIME_END, the same range); these CHECK constraints make sure nothing else
can store one either. Rows already outside the range are repaired first:
an expiry at or past 9000 (`infinity` included) meant "never", which is
NULL; one before 1970 has long passed and becomes 1970-01-01, still
expired, for the sweep to delete; a week_of outside the range is not a
week anyone plans for and becomes NULL (the lesson's update_time moves).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of domain/validation.py TIME_MIN and TIME_END: a migration
# must not import the live code.
_TIME_MIN = "'1970-01-01 00:00:00+00'::timestamptz"
_TIME_END = "'9000-01-01 00:00:00+00'::timestamptz"
_DATE_MIN = "'1970-01-01'::date"
_DATE_END = "'9000-01-01'::date"


def upgrade() -> None:
    # The tables FORCE row-level security, which binds the owner too: see
    # every user's rows for the repair, in this transaction only.
    op.execute("SELECT set_config('faraday.acting_user', '*', true)")
    op.execute(f"UPDATE user_memories SET expires_at = NULL WHERE expires_at >= {_TIME_END}")
    op.execute(f"UPDATE user_memories SET expires_at = {_TIME_MIN} WHERE expires_at < {_TIME_MIN}")
    op.execute(
        f"UPDATE lessons SET week_of = NULL WHERE week_of < {_DATE_MIN} OR week_of >= {_DATE_END}"
    )
    op.create_check_constraint(
        op.f("ck_user_memories_expires_at_range"),
        "user_memories",
        f"expires_at >= {_TIME_MIN} AND expires_at < {_TIME_END}",
    )
    op.create_check_constraint(
        op.f("ck_lessons_week_of_range"),
        "lessons",
        f"week_of >= {_DATE_MIN} AND week_of < {_DATE_END}",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_lessons_week_of_range"), "lessons", type_="check")
    op.drop_constraint(op.f("ck_user_memories_expires_at_range"), "user_memories", type_="check")
