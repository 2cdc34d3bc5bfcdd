"""How many lessons hold each common search word, to pick a search's rarest word.

Revision ID: 0020
Revises: 0019

SearchLessons (storage/lessons.py) draws the candidates of a query whose
words must all match from one word's postings: the rarest, so that its
lessons are few and the ranking of them exact. It counts each word's
postings up to the candidate cap plus one, which tells a rare word from a
common one but not two common words apart: past the cap every count was
the same and the tie went to the alphabetically first word. With 20,000
bench lessons that picked "homework" (2,377 lessons) over "newton" (964)
for "Newton's laws homework": of 165 bench queries, 26% got a first page
other than the exact ranking's (86% of the exact top ten found), against
none once the rarer word is read (bench/search_quality.py).

`lesson_term_frequencies` holds, for every lexeme in more lessons than the
cap, the number of lessons that hold it (all lessons: a tie-break, not a
visibility rule, and a count is all it tells). Rare lexemes are not in it,
so it stays small (the few thousand common words of the language). It is
not kept by triggers, which would make every lesson write update the same
few hundred counter rows and serialize concurrent writes on them: the
lesson term job (Lessons.count_terms in services/lessons.py) recounts it periodically, and
a count a little out of date only changes which common word is read first.

Not user-owned and without row-level security: it holds counts, not text a
user wrote, and only the service reads it. The job writes it as
faraday_platform; both service roles get the same privileges on it, as on
every table (tests/storage/test_roles.py): a count can only reorder which
common word is read first.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | Sequence[str] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The candidate cap when this migration was written
# (storage/lessons.py SEARCH_CANDIDATES_PER_WORD); the job recounts with the
# cap of the code that runs it.
_CAP = 500


def upgrade() -> None:
    op.create_table(
        "lesson_term_frequencies",
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("lessons", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("lexeme", name=op.f("pk_lesson_term_frequencies")),
        sa.CheckConstraint(
            "lessons >= 0", name=op.f("ck_lesson_term_frequencies_lessons_not_negative")
        ),
    )
    for role in ("faraday_app", "faraday_platform"):
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON lesson_term_frequencies TO {role}")
    # The lessons already stored, counted by the owner (FORCE off for this
    # transaction, as in 0019, so the policies hide no row from it).
    op.execute("ALTER TABLE lesson_terms NO FORCE ROW LEVEL SECURITY")
    op.execute(f"""
        INSERT INTO lesson_term_frequencies (lexeme, lessons)
        SELECT lexeme, count(*) FROM lesson_terms GROUP BY lexeme HAVING count(*) > {_CAP}""")
    op.execute("ALTER TABLE lesson_terms FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.drop_table("lesson_term_frequencies")
