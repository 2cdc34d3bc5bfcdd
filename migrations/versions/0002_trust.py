"""Trust: service role, row-level security, audit log, idempotency keys.

Revision ID: 0002
Revises: 0001

The service connects as `faraday_app`, a role that owns nothing: the
migrating role keeps ownership, and FORCE ROW LEVEL SECURITY makes the
policies hold even for the owner (superusers and BYPASSRLS roles excepted,
which the service must never use). Every transaction of the service starts
with SET LOCAL faraday.acting_user (storage/session.py): a user id shows
that user's rows, "*" all rows (service tokens, the expiry sweep), and
anything else nothing, so a query that forgets its WHERE clause still sees
one user's rows at most.

The role is created without a password (local trust auth, the embedded
server); on a shared server give it one: ALTER ROLE faraday_app PASSWORD ...
Roles are cluster-wide, so downgrade revokes its privileges here but does
not drop it (other databases of the cluster may use it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "faraday_app"

# Snapshot of tables.RLS_TABLES: user-owned table -> owner column.
_RLS_TABLES = {
    "users": "id",
    "user_preferences": "user_id",
    "lessons": "user_id",
    "user_memories": "user_id",
    "memory_interactions": "user_id",
    "idempotency_keys": "user_id",
}
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
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("method", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("peer", sa.String(length=255), nullable=True),
        sa.Column(
            "resource",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_occurred_at"), "audit_log", ["occurred_at"])
    op.create_index(op.f("ix_audit_log_actor"), "audit_log", ["actor", "occurred_at"])
    op.create_table(
        "idempotency_keys",
        sa.Column("caller", sa.String(length=300), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("method", sa.String(length=100), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("memory_id", sa.BigInteger(), nullable=False),
        sa.Column("interaction_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("caller", "request_id", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"])
    op.create_index(op.f("ix_idempotency_keys_user_id"), "idempotency_keys", ["user_id"])

    # The role, created once per cluster; a concurrent migration of another
    # database may create it first.
    op.execute(f"""
        DO $$ BEGIN
            CREATE ROLE {APP_ROLE} LOGIN;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END $$""")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {', '.join(_READ_WRITE)} TO {APP_ROLE}")
    op.execute(f"GRANT SELECT, INSERT, DELETE ON idempotency_keys TO {APP_ROLE}")
    # Append-only: no UPDATE, no DELETE, not even by the service.
    op.execute(f"GRANT SELECT, INSERT ON audit_log TO {APP_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")

    # Who may see a row owned by `owner`. The CASE keeps '*' and '' from
    # ever reaching the uuid cast. STABLE: evaluated once per statement.
    op.execute("""
        CREATE FUNCTION faraday_may_see(owner uuid) RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE AS $$
            SELECT CASE coalesce(current_setting('faraday.acting_user', true), '')
                WHEN '*' THEN true
                WHEN '' THEN false
                ELSE owner = current_setting('faraday.acting_user', true)::uuid
            END
        $$""")
    for table, owner in _RLS_TABLES.items():
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        if table == "lessons":
            # Published lessons are readable by everyone (the documentation's
            # published_lessons_policy); writing stays with the owner.
            op.execute(
                "CREATE POLICY lessons_read ON lessons FOR SELECT"
                " USING (faraday_may_see(user_id) OR status = 'published')"
            )
            for command in ("INSERT", "UPDATE", "DELETE"):
                check = "" if command == "DELETE" else " WITH CHECK (faraday_may_see(user_id))"
                using = "" if command == "INSERT" else " USING (faraday_may_see(user_id))"
                op.execute(
                    f"CREATE POLICY lessons_{command.lower()} ON lessons FOR {command}"
                    f"{using}{check}"
                )
            continue
        op.execute(
            f"CREATE POLICY {table}_owner ON {table}"
            f" USING (faraday_may_see({owner})) WITH CHECK (faraday_may_see({owner}))"
        )


def downgrade() -> None:
    for table in _RLS_TABLES:
        if table == "lessons":
            for name in ("read", "insert", "update", "delete"):
                op.execute(f"DROP POLICY lessons_{name} ON lessons")
        else:
            op.execute(f"DROP POLICY {table}_owner ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    op.execute("DROP FUNCTION faraday_may_see(uuid)")
    op.execute(f"REVOKE ALL ON {', '.join(_READ_WRITE)} FROM {APP_ROLE}")
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {APP_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")
    op.drop_table("idempotency_keys")
    op.drop_table("audit_log")
