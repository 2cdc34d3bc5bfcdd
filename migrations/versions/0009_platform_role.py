"""A second service role, faraday_platform, for transactions that act for all users.

Revision ID: 0009
Revises: 0008

faraday.acting_user = '*' shows every row to whoever sets it, and the
service role sets it freely: any SQL run as faraday_app, a user-JWT
request's transaction included, can switch itself to all users (security
review, issue 8). The first step is a role of their own for the
transactions that must act for all users (service-token calls, the expiry
and request-key sweeps, seed-demo): the service opens one pool per role
(storage/database.py) and takes a platform connection only for those, so
that '*' can then be made to count for that role alone.

faraday_platform gets exactly faraday_app's privileges (0002's grants; no
later migration added any). They are granted per table rather than as
`GRANT faraday_app TO faraday_platform`: membership is cluster-wide, and a
downgrade of one database would revoke it for every other database of the
cluster.

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


def downgrade() -> None:
    op.execute(
        f"REVOKE ALL ON {', '.join(_READ_WRITE)}, idempotency_keys, audit_log FROM {PLATFORM_ROLE}"
    )
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {PLATFORM_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {PLATFORM_ROLE}")
