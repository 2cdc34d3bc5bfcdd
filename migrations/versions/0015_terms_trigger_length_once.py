"""The term index's insert trigger computes each memory's length once, not once per posting.

Revision ID: 0015
Revises: 0014

faraday_memory_terms_insert (migration 0010) joined
`LATERAL (SELECT faraday_tsvector_length(content_tsv))` to each memory's
postings; PostgreSQL pulls that subquery up, so the length (a SQL function
that is not inlined: an unnest and a sum) ran once per posting, ~23 times a
memory, and once more per memory for the stats. For a statement inserting
1,000 memories (an ImportMemories chunk, ~23,000 postings) the trigger took
760-1,300 ms against 200-420 ms for this body, which takes the lengths once
in a MATERIALIZED CTE, as the benchmark's bulk loader does (bench/dataset.py
_BULK_TERMS, checked there to write the same rows). The rows written are the
same; only the plan changes. One StoreMemory (one memory) gains little; the
import, 85% of whose insert time was this trigger, about doubles.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ONCE = """
CREATE OR REPLACE FUNCTION faraday_memory_terms_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    WITH n AS MATERIALIZED (
        SELECT id, user_id, content_tsv, faraday_tsvector_length(content_tsv) AS doc_len
        FROM new_rows
    ), postings AS (
        INSERT INTO memory_terms (user_id, lexeme, memory_id, tf, doc_len)
        SELECT n.user_id, t.lexeme, n.id, coalesce(array_length(t.positions, 1), 1), n.doc_len
        FROM n, unnest(n.content_tsv) t
    )
    INSERT INTO memory_user_stats AS s (user_id, docs, total_len)
    SELECT user_id, count(*), sum(doc_len) FROM n GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
        SET docs = s.docs + excluded.docs, total_len = s.total_len + excluded.total_len;
    RETURN NULL;
END $$"""

# Migration 0010's body, for the downgrade.
_PER_POSTING = """
CREATE OR REPLACE FUNCTION faraday_memory_terms_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO memory_terms (user_id, lexeme, memory_id, tf, doc_len)
    SELECT n.user_id, t.lexeme, n.id, coalesce(array_length(t.positions, 1), 1), l.len
    FROM new_rows n
    CROSS JOIN LATERAL (SELECT faraday_tsvector_length(n.content_tsv) AS len) l
    CROSS JOIN LATERAL unnest(n.content_tsv) t;
    INSERT INTO memory_user_stats AS s (user_id, docs, total_len)
    SELECT user_id, count(*), sum(faraday_tsvector_length(content_tsv))
    FROM new_rows GROUP BY user_id ORDER BY user_id
    ON CONFLICT (user_id) DO UPDATE
        SET docs = s.docs + excluded.docs, total_len = s.total_len + excluded.total_len;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.execute(_ONCE)


def downgrade() -> None:
    op.execute(_PER_POSTING)
