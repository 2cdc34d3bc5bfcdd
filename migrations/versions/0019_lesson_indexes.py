"""Lesson search and listing through indexes the service role can use.

Revision ID: 0019
Revises: 0018

SearchLessons matched with `search_vector @@ tsquery`, which is not
LEAKPROOF: under FORCE ROW LEVEL SECURITY it cannot be an index condition,
so for faraday_platform and faraday_app the GIN index on search_vector was
never used and every search read and ranked every visible lesson (16.6 ms
at 20,000 lessons, linear in the table). ListLessons ordered by id with
filters whose indexes ((status), (grade_level), (subject_category_id))
return ties in heap order, so a filtered page sorted every matching row.

Options weighed (docs/schema.md, "Lesson search and listing"):
- mark ts_match_vq LEAKPROOF: needs a superuser and changes a built-in
  function for the whole cluster (as for memories, migration 0010);
- a SECURITY DEFINER search function owned by a BYPASSRLS role: a second
  path to every lesson beside the policies;
- this: `lesson_terms`, one posting per (lexeme, lesson) under the same
  read rule as the lessons (the owner, or anyone when published), with the
  lexeme's own ts_rank_cd in the lesson (`impact`, the rank a one-word
  query gives it). The primary key (lexeme, impact, lesson_id) INCLUDE
  (user_id, status) read backwards gives a word's lessons best first with
  an equality on text, which is leakproof, and the policy and the status
  filter are checked in the index (an index-only scan). A second index
  leads with user_id for searches filtered by owner. SearchLessons takes
  at most a fixed number of postings per query word (the candidate cap,
  storage/lessons.py) and ranks only those lessons, exactly as before.

Postings are kept by triggers on lessons: statement-level for INSERT and
DELETE (an erased user's lessons cascade through the latter), row-level
for an UPDATE that changes the text, the status or the owner. The
triggers run as the caller, whose policy lets it write only the postings
of lessons it may write. TRUNCATE of lessons must truncate lesson_terms.
Cost: one posting per distinct lexeme of a lesson (about 30 for a
lesson-plan paragraph), written with each UpsertLesson.

ListLessons: the single-column status, grade_level and subject_category_id
indexes become (column, id), and (user_id, id) is added, so every equality
filter's page is a backward index scan stopping after the page.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLES = ("faraday_app", "faraday_platform")
_SEES = "((SELECT faraday_sees_all()) OR user_id = (SELECT faraday_acting_user()))"

# Each lexeme of a lesson's search_vector with the rank a query of that
# lexeme alone gives the lesson: the same ts_rank_cd, normalization 32, as
# SearchLessons computes, so a one-word search's best postings are its best
# lessons. The lexeme is quoted as tsquery input wants (backslash and quote
# doubled), never parsed by a text search configuration.
_TERMS = """
CREATE FUNCTION faraday_lesson_terms(tsv tsvector)
RETURNS TABLE (lexeme text, impact real)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT t.lexeme, ts_rank_cd(
        tsv,
        ('''' || replace(replace(t.lexeme, '\\', '\\\\'), '''', '''''') || '''')::tsquery,
        32)
    FROM unnest(tsv) t
$$"""

# The lexemes a match must or may contain: querytree() drops the negated
# ones (an exclusion finds no candidates), the rest are read back from the
# query's text form, where each lexeme is quoted with '' and \\ escaped.
_QUERY_LEXEMES = """
CREATE FUNCTION faraday_tsquery_lexemes(q tsquery) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(DISTINCT regexp_replace(
        replace(m[1], '''''', ''''), '\\\\(.)', '\\1', 'g')), '{}')
    FROM regexp_matches(querytree(q), '''((?:[^''\\\\]|''''|\\\\.)*)''', 'g') m
$$"""

_ON_INSERT = """
CREATE FUNCTION faraday_lesson_terms_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lesson_terms (lexeme, impact, lesson_id, user_id, status)
    SELECT t.lexeme, t.impact, n.id, n.user_id, n.status
    FROM new_rows n CROSS JOIN LATERAL faraday_lesson_terms(n.search_vector) t;
    RETURN NULL;
END $$"""

_ON_DELETE = """
CREATE FUNCTION faraday_lesson_terms_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM lesson_terms p
    USING old_rows o CROSS JOIN LATERAL faraday_lesson_terms(o.search_vector) t
    WHERE p.lexeme = t.lexeme AND p.impact = t.impact AND p.lesson_id = o.id;
    RETURN NULL;
END $$"""

# Fires only when the text, status or owner changed (the trigger's WHEN):
# UpsertLesson rewrites every column, and the subject's ON DELETE SET NULL
# touches lessons too.
_ON_UPDATE = """
CREATE FUNCTION faraday_lesson_terms_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM lesson_terms p USING faraday_lesson_terms(OLD.search_vector) t
    WHERE p.lexeme = t.lexeme AND p.impact = t.impact AND p.lesson_id = OLD.id;
    INSERT INTO lesson_terms (lexeme, impact, lesson_id, user_id, status)
    SELECT t.lexeme, t.impact, NEW.id, NEW.user_id, NEW.status
    FROM faraday_lesson_terms(NEW.search_vector) t;
    RETURN NULL;
END $$"""

# index name -> (old columns, new columns)
_LIST_INDEXES = {
    "ix_lessons_status": (["status"], ["status", "id"]),
    "ix_lessons_grade_level": (["grade_level"], ["grade_level", "id"]),
    "ix_lessons_subject_category_id": (["subject_category_id"], ["subject_category_id", "id"]),
}


def upgrade() -> None:
    op.create_table(
        "lesson_terms",
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("impact", postgresql.REAL(), nullable=False),
        sa.Column("lesson_id", sa.Integer(), nullable=False),
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        # user_id and status in the index: the policy and the status filter
        # are checked without visiting the table (once vacuum has run).
        sa.PrimaryKeyConstraint(
            "lexeme",
            "impact",
            "lesson_id",
            name=op.f("pk_lesson_terms"),
            postgresql_include=["user_id", "status"],
        ),
    )
    op.create_index(
        op.f("ix_lesson_terms_user_id_lexeme"),
        "lesson_terms",
        ["user_id", "lexeme", "impact", "lesson_id"],
        postgresql_include=["status"],
    )
    op.execute("ALTER TABLE lesson_terms ENABLE ROW LEVEL SECURITY")
    # The lessons' rules: read your own and the published ones, write your own.
    op.execute(
        f"CREATE POLICY lesson_terms_read ON lesson_terms FOR SELECT"
        f" USING ({_SEES} OR status = 'published')"
    )
    op.execute(f"CREATE POLICY lesson_terms_write ON lesson_terms USING {_SEES} WITH CHECK {_SEES}")
    for role in _ROLES:
        op.execute(f"GRANT SELECT, INSERT, DELETE ON lesson_terms TO {role}")
    for statement in (_TERMS, _QUERY_LEXEMES, _ON_INSERT, _ON_DELETE, _ON_UPDATE):
        op.execute(statement)
    op.execute(
        "CREATE TRIGGER trg_lessons_terms_insert AFTER INSERT ON lessons"
        " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION faraday_lesson_terms_insert()"
    )
    op.execute(
        "CREATE TRIGGER trg_lessons_terms_delete AFTER DELETE ON lessons"
        " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION faraday_lesson_terms_delete()"
    )
    op.execute(
        "CREATE TRIGGER trg_lessons_terms_update AFTER UPDATE ON lessons FOR EACH ROW"
        " WHEN (OLD.search_vector IS DISTINCT FROM NEW.search_vector"
        " OR OLD.status IS DISTINCT FROM NEW.status OR OLD.user_id IS DISTINCT FROM NEW.user_id)"
        " EXECUTE FUNCTION faraday_lesson_terms_update()"
    )
    # The lessons already stored. The migrating role owns the tables: with
    # FORCE off for this transaction its policies do not hide any row from it.
    op.execute("ALTER TABLE lessons NO FORCE ROW LEVEL SECURITY")
    op.execute("""
        INSERT INTO lesson_terms (lexeme, impact, lesson_id, user_id, status)
        SELECT t.lexeme, t.impact, l.id, l.user_id, l.status
        FROM lessons l CROSS JOIN LATERAL faraday_lesson_terms(l.search_vector) t""")
    for table in ("lessons", "lesson_terms"):
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")

    op.create_index(op.f("ix_lessons_user_id_id"), "lessons", ["user_id", "id"])
    for name, (_old, new) in _LIST_INDEXES.items():
        op.drop_index(name, table_name="lessons")
        op.create_index(name, "lessons", new)


def downgrade() -> None:
    for name, (old, _new) in _LIST_INDEXES.items():
        op.drop_index(name, table_name="lessons")
        op.create_index(name, "lessons", old)
    op.drop_index(op.f("ix_lessons_user_id_id"), table_name="lessons")
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER trg_lessons_terms_{trigger} ON lessons")
        op.execute(f"DROP FUNCTION faraday_lesson_terms_{trigger}()")
    op.execute("DROP FUNCTION faraday_tsquery_lexemes(tsquery)")
    op.execute("DROP FUNCTION faraday_lesson_terms(tsvector)")
    op.drop_table("lesson_terms")
