"""users.encrypted_sensitive_data: the users' sensitive fields, encrypted by the service.

Revision ID: 0016
Revises: 0015

The service seals a user's name, school, department and custom instructions
into this column with its own keys (storage/encryption.py; keys never reach
the database, so this migration cannot encrypt the existing rows). Until the
service seals them (at start-up with keys configured, or `memory-service
rotate-keys`), existing rows keep their plaintext columns and a NULL here,
and readers accept both. The CHECK keeps a row from holding both forms: a
sealed row's plaintext columns are NULL.

Downgrade refuses while any row is sealed: dropping the column would lose
those fields, and only the service's keys can put them back in plaintext.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("encrypted_sensitive_data", sa.LargeBinary(), nullable=True))
    op.create_check_constraint(
        "sealed_fields_not_in_plaintext",
        "users",
        "encrypted_sensitive_data IS NULL"
        " OR num_nonnulls(name, school, department, custom_instructions) = 0",
    )


def downgrade() -> None:
    op.execute("""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM users WHERE encrypted_sensitive_data IS NOT NULL) THEN
                RAISE EXCEPTION 'users hold encrypted fields: decrypt them before downgrading';
            END IF;
        END $$""")
    op.drop_constraint(op.f("ck_users_sealed_fields_not_in_plaintext"), "users", type_="check")
    op.drop_column("users", "encrypted_sensitive_data")
