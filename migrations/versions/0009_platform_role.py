"""Only the platform role may act for all users: faraday_platform, and '*' for it alone.

Revision ID: 0009
Revises: 0008

Until now faraday.acting_user = '*' showed every row to whoever set it, and
the service role sets it freely: any SQL run as faraday_app, a user-JWT
request's transaction included, could switch itself to all users (security
review, issue 8). Acting for all users is now a role, not a setting:

- `faraday_platform`, a second LOGIN role, with exactly faraday_app's
  privileges (0002's grants; no later migration added any). The service
  opens one pool per role (storage/database.py) and takes a platform
  connection only for transactions that act for all users: service-token
  calls, the expiry and request-key sweeps, seed-demo. User-scoped
  transactions run as faraday_app.
- faraday_sees_all() (0005) is true only for '*' AND current_user =
  'faraday_platform'. For faraday_app '*' now shows what '' shows: no
  user-owned row, and published lessons. The policies call the function
  by its oid, so CREATE OR REPLACE changes them all without touching them.

current_user, not session_user: it is the role whose privileges the
statement runs with, so a superuser can `SET ROLE faraday_platform` to see
what the platform sees, and the check follows the same identity as the
table grants. faraday_app is no member of faraday_platform, so it can
neither log in as it nor SET ROLE to it, and the schema has no SECURITY
DEFINER function that would run as it. The grants are per table rather
than `GRANT faraday_app TO faraday_platform`: membership is cluster-wide,
and a downgrade of one database would revoke it for every other database
of the cluster.

A data migration that must see every row (0007 did, with '*') now needs a
superuser, or `ALTER TABLE ... NO FORCE ROW LEVEL SECURITY` for its
transaction when the owner is not one.

The role is created without a password (local trust auth, the embedded
server); on a shared server give it one: ALTER ROLE faraday_platform
PASSWORD ... and set FARADAY_PLATFORM_DATABASE_URL. Roles are cluster-wide,
so downgrade revokes its privileges here but does not drop it.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PLATFORM_ROLE = "faraday_platform"

# Snapshot of 0002's grants to faraday_app.
_READ_WRITE = (
    "users",
    "user_preferences",
    "subject_categories",
    "assistant_profiles",
    "assistant_capabilities",
    "lessons",
    "user_memories",
    "memory_interactions",
)


def _sees_all(condition: str) -> None:
    op.execute(f"""
        CREATE OR REPLACE FUNCTION faraday_sees_all() RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT {condition}coalesce(current_setting('faraday.acting_user', true), '') = '*'
        $$""")


def upgrade() -> None:
    # Once per cluster; another database's migration may have created it.
    op.execute(f"""
        DO $$ BEGIN
            CREATE ROLE {PLATFORM_ROLE} LOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END $$""")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {PLATFORM_ROLE}")
    op.execute(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(_READ_WRITE)} TO {PLATFORM_ROLE}"
    )
    op.execute(f"GRANT SELECT, INSERT, DELETE ON idempotency_keys TO {PLATFORM_ROLE}")
    # Append-only, as for faraday_app.
    op.execute(f"GRANT SELECT, INSERT ON audit_log TO {PLATFORM_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {PLATFORM_ROLE}")
    _sees_all(f"current_user = '{PLATFORM_ROLE}' AND ")


def downgrade() -> None:
    _sees_all("")
    op.execute(
        f"REVOKE ALL ON {', '.join(_READ_WRITE)}, idempotency_keys, audit_log FROM {PLATFORM_ROLE}"
    )
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {PLATFORM_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {PLATFORM_ROLE}")
