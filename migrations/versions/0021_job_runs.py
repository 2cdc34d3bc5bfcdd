"""When a periodic job last ran, so that several service processes run it once.

Revision ID: 0021
Revises: 0020

Every service process runs the lesson term job (services/lessons.py) on its
own timer, and one recount reads every posting of lesson_terms (7.9 s for
1,000,000 bench lessons): ten processes would recount ten times an hour
for the same counts. `job_runs` holds, for each such job, when its last run
started; a run that finds the last one started less than half an interval
ago, or another one running (an advisory lock), does nothing.

Not user-owned and without row-level security: it holds a job's name and a
time. Both service roles get the same privileges on it, as on every table
(tests/storage/test_roles.py). Kept on the coordinator under Citus
(docs/scaling.md): only the jobs, which run there, read it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | Sequence[str] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("job", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_job_runs")),
    )
    for role in ("faraday_app", "faraday_platform"):
        op.execute(f"GRANT SELECT, INSERT, UPDATE ON job_runs TO {role}")


def downgrade() -> None:
    op.drop_table("job_runs")
