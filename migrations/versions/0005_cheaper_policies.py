"""Row-level security policies that read the acting user once per scan, not once per row.

Revision ID: 0005
Revises: 0004

0002's policies called faraday_may_see(owner), an inlinable SQL function:
PostgreSQL inlined it into every policy check, so each row a scan visited
paid for two current_setting() lookups and a text-to-uuid cast (its
comment's "evaluated once per statement" was wrong). Measured as
faraday_app on the 1M bench data (PostgreSQL 18): counting a
68,000-memory user's rows took 164 ms against the owner's 149 ms, and a
SearchLessons-style scan of 20,000 lessons 16.7 ms.

The policies now compare with scalar subqueries, which PostgreSQL runs once
per scan as InitPlans and then only compares values per row:

    (SELECT faraday_sees_all()) OR owner = (SELECT faraday_acting_user())

Same meaning as before: "*" sees every row, a user id that user's rows,
anything else (the default, '') none; a malformed id still fails the
uuid cast. After: the memory count costs what the owner's does (151 vs
155 ms), the lesson scan 12.5 ms. The tests that prove the policies hold
(tests/rpc/test_auth.py, tests/storage/test_database.py) run unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Table -> its owner column, as in 0002 (lessons has policies per command).
_OWNED = {
    "users": "id",
    "user_preferences": "user_id",
    "user_memories": "user_id",
    "memory_interactions": "user_id",
    "idempotency_keys": "user_id",
}


def _new(owner: str) -> str:
    return f"((SELECT faraday_sees_all()) OR {owner} = (SELECT faraday_acting_user()))"


def _old(owner: str) -> str:
    return f"faraday_may_see({owner})"


def _set_policies(rule: str) -> None:
    sees = _new if rule == "new" else _old
    for table, owner in _OWNED.items():
        op.execute(
            f"ALTER POLICY {table}_owner ON {table}"
            f" USING ({sees(owner)}) WITH CHECK ({sees(owner)})"
        )
    op.execute(
        f"ALTER POLICY lessons_read ON lessons USING ({sees('user_id')} OR status = 'published')"
    )
    op.execute(f"ALTER POLICY lessons_insert ON lessons WITH CHECK ({sees('user_id')})")
    op.execute(
        "ALTER POLICY lessons_update ON lessons"
        f" USING ({sees('user_id')}) WITH CHECK ({sees('user_id')})"
    )
    op.execute(f"ALTER POLICY lessons_delete ON lessons USING ({sees('user_id')})")


def upgrade() -> None:
    op.execute("""
        CREATE FUNCTION faraday_sees_all() RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT coalesce(current_setting('faraday.acting_user', true), '') = '*'
        $$""")
    # NULL for '' and '*', so `owner = NULL` admits nothing; '*' is
    # faraday_sees_all's. The CASE keeps both from reaching the uuid cast.
    op.execute("""
        CREATE FUNCTION faraday_acting_user() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT CASE WHEN coalesce(current_setting('faraday.acting_user', true), '')
                             IN ('', '*') THEN NULL
                        ELSE current_setting('faraday.acting_user', true)::uuid
                   END
        $$""")
    _set_policies("new")
    op.execute("DROP FUNCTION faraday_may_see(uuid)")


def downgrade() -> None:
    op.execute("""
        CREATE FUNCTION faraday_may_see(owner uuid) RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT CASE coalesce(current_setting('faraday.acting_user', true), '')
                WHEN '*' THEN true
                WHEN '' THEN false
                ELSE owner = current_setting('faraday.acting_user', true)::uuid
            END
        $$""")
    _set_policies("old")
    op.execute("DROP FUNCTION faraday_acting_user()")
    op.execute("DROP FUNCTION faraday_sees_all()")
