"""Profile-limited credentials read shared memories but change only their own profiles'.

Revision ID: 0006
Revises: 0005

A service token limited to some assistant profiles (docs/security.md) sees
the memories of those profiles and the ones shared by all assistants
(assistant_profile_id NULL). Until now only the service's SQL kept it from
changing the shared ones, and it did not: such a token could update,
delete, give feedback on, or move into its own profile a shared memory,
hiding it from every other assistant.

The rule, held by the SQL in storage/memories.py and here by row-level
security as the second wall: a profile-limited credential reads its
profiles' memories and the shared ones, and inserts, updates and deletes
only its profiles' memories. The service sets
`faraday.acting_profiles` per transaction (storage/session.py): '' for any
profile, or an int[] literal such as '{1,2}'. RESTRICTIVE policies are ANDed
with the owner policies of 0002/0005, so they only ever narrow them.

One consequence, documented in docs/security.md: a recall by a
profile-limited credential logs its interactions with shared memories but
does not move their last_access_time (that bump is an UPDATE of a row the
credential may not change).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Read once per scan through a scalar subquery, as the policies of 0005.
_PROFILES = "(SELECT faraday_acting_profiles())"
_OWN = f"({_PROFILES} IS NULL OR assistant_profile_id = ANY({_PROFILES}::int[]))"
_OWN_OR_SHARED = (
    f"({_PROFILES} IS NULL OR assistant_profile_id IS NULL"
    f" OR assistant_profile_id = ANY({_PROFILES}::int[]))"
)


def upgrade() -> None:
    # NULL ('' or unset): any profile. A malformed value fails the cast,
    # which fails the statement: never "all profiles" by accident.
    op.execute("""
        CREATE FUNCTION faraday_acting_profiles() RETURNS int[]
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT nullif(coalesce(current_setting('faraday.acting_profiles', true), ''), '')::int[]
        $$""")
    op.execute(
        "CREATE POLICY user_memories_profiles_read ON user_memories AS RESTRICTIVE"
        f" FOR SELECT USING {_OWN_OR_SHARED}"
    )
    op.execute(
        "CREATE POLICY user_memories_profiles_insert ON user_memories AS RESTRICTIVE"
        f" FOR INSERT WITH CHECK {_OWN}"
    )
    op.execute(
        "CREATE POLICY user_memories_profiles_update ON user_memories AS RESTRICTIVE"
        f" FOR UPDATE USING {_OWN} WITH CHECK {_OWN}"
    )
    op.execute(
        "CREATE POLICY user_memories_profiles_delete ON user_memories AS RESTRICTIVE"
        f" FOR DELETE USING {_OWN}"
    )


def downgrade() -> None:
    for command in ("read", "insert", "update", "delete"):
        op.execute(f"DROP POLICY user_memories_profiles_{command} ON user_memories")
    op.execute("DROP FUNCTION faraday_acting_profiles()")
