"""A per-user inverted index of memory terms, for BM25 ranking the service role can use.

Revision ID: 0010
Revises: 0009

Recall ranked query matches with ts_rank_cd, which ignores how rare a word
is and how long a memory is, and could only find them by reading every row
of the user: under row-level security `@@` is not leakproof, so no
full-text index can serve the service role (migration 0004), and a
70,000-memory user's query recall read all 70,000 rows.

Options weighed (docs/schema.md, "Full-text ranking"):
- mark ts_match_vq LEAKPROOF and GIN-index (user_id, content_tsv) with
  btree_gin: needs a superuser for the migration and an extension, and a
  cluster-wide catalog change to a built-in function;
- a SECURITY DEFINER search function owned by a BYPASSRLS role: needs a
  superuser to create that role, and puts a second path to every row beside
  the policies;
- this: postings in a table of their own, under the same row-level
  security as the memories. Every lookup is an equality on (user_id,
  lexeme), which is leakproof, so the primary key serves the service role.

`memory_terms` holds one row per (user, lexeme, memory): the term's
frequency in the memory and the memory's length (term occurrences after
English stemming and stop words, as content_tsv has them).
`memory_user_stats` holds each user's memory count and total length, for
BM25's IDF and average length: IDF is over the user's own memories (their
vocabulary, not the whole platform's; no statistic about other users'
memories reaches a user's ranking). Both are kept by triggers on
user_memories: statement-level for INSERT and DELETE (one pass over all the
statement's rows, stats rows touched in user_id order so concurrent
multi-user statements cannot deadlock on them), row-level for an UPDATE of
content. No foreign key (it would need a second index on memory_id to
delete efficiently); the DELETE trigger removes a memory's postings by
their lexemes through the primary key. TRUNCATE of user_memories must also
truncate these two tables.

Cost: about 15 postings per memory (~1.5 KB with the index), written with
each StoreMemory; concurrent stores of one user take turns on its stats row
(held to commit).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLES = ("faraday_app", "faraday_platform")
_POLICY = "((SELECT faraday_sees_all()) OR user_id = (SELECT faraday_acting_user()))"

# Term occurrences in a tsvector: its BM25 document length.
_LENGTH = """
CREATE FUNCTION faraday_tsvector_length(tsv tsvector) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0)::integer FROM unnest(tsv)
$$"""

_ON_INSERT = """
CREATE FUNCTION faraday_memory_terms_insert() RETURNS trigger
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

_ON_DELETE = """
CREATE FUNCTION faraday_memory_terms_delete() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memory_terms m USING old_rows o, unnest(o.content_tsv) t
    WHERE m.user_id = o.user_id AND m.lexeme = t.lexeme AND m.memory_id = o.id;
    PERFORM 1 FROM memory_user_stats
    WHERE user_id IN (SELECT user_id FROM old_rows) ORDER BY user_id FOR UPDATE;
    UPDATE memory_user_stats s SET docs = s.docs - d.docs, total_len = s.total_len - d.len
    FROM (SELECT user_id, count(*) AS docs, sum(faraday_tsvector_length(content_tsv)) AS len
          FROM old_rows GROUP BY user_id) d
    WHERE s.user_id = d.user_id;
    DELETE FROM memory_user_stats
    WHERE user_id IN (SELECT user_id FROM old_rows) AND docs <= 0;
    RETURN NULL;
END $$"""

_ON_UPDATE = """
CREATE FUNCTION faraday_memory_terms_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.content_tsv IS NOT DISTINCT FROM OLD.content_tsv THEN
        RETURN NULL;
    END IF;
    DELETE FROM memory_terms
    WHERE user_id = OLD.user_id AND lexeme = ANY(tsvector_to_array(OLD.content_tsv))
      AND memory_id = OLD.id;
    INSERT INTO memory_terms (user_id, lexeme, memory_id, tf, doc_len)
    SELECT NEW.user_id, t.lexeme, NEW.id, coalesce(array_length(t.positions, 1), 1), l.len
    FROM (SELECT faraday_tsvector_length(NEW.content_tsv) AS len) l, unnest(NEW.content_tsv) t;
    UPDATE memory_user_stats
    SET total_len = total_len + faraday_tsvector_length(NEW.content_tsv)
                              - faraday_tsvector_length(OLD.content_tsv)
    WHERE user_id = NEW.user_id;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.create_table(
        "memory_terms",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("lexeme", sa.Text(), nullable=False),
        sa.Column("memory_id", sa.BigInteger(), nullable=False),
        sa.Column("tf", sa.Integer(), nullable=False),
        sa.Column("doc_len", sa.Integer(), nullable=False),
        # tf and doc_len in the key's index: recall scores postings without
        # visiting the table (an index-only scan once vacuum has run).
        sa.PrimaryKeyConstraint(
            "user_id",
            "lexeme",
            "memory_id",
            name=op.f("pk_memory_terms"),
            postgresql_include=["tf", "doc_len"],
        ),
    )
    op.create_table(
        "memory_user_stats",
        sa.Column("user_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("docs", sa.BigInteger(), nullable=False),
        sa.Column("total_len", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_memory_user_stats")),
    )
    for table in ("memory_terms", "memory_user_stats"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_owner ON {table} USING {_POLICY} WITH CHECK {_POLICY}")
        for role in _ROLES:
            op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}")
    for statement in (_LENGTH, _ON_INSERT, _ON_DELETE, _ON_UPDATE):
        op.execute(statement)
    op.execute(
        "CREATE TRIGGER trg_user_memories_terms_insert AFTER INSERT ON user_memories"
        " REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION faraday_memory_terms_insert()"
    )
    op.execute(
        "CREATE TRIGGER trg_user_memories_terms_delete AFTER DELETE ON user_memories"
        " REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"
        " EXECUTE FUNCTION faraday_memory_terms_delete()"
    )
    op.execute(
        "CREATE TRIGGER trg_user_memories_terms_update AFTER UPDATE OF content ON user_memories"
        " FOR EACH ROW EXECUTE FUNCTION faraday_memory_terms_update()"
    )
    # The memories already stored. The migrating role owns the tables: with
    # FORCE off for this transaction its policies do not hide any row from it.
    op.execute("ALTER TABLE user_memories NO FORCE ROW LEVEL SECURITY")
    op.execute("""
        INSERT INTO memory_terms (user_id, lexeme, memory_id, tf, doc_len)
        SELECT m.user_id, t.lexeme, m.id, coalesce(array_length(t.positions, 1), 1), l.len
        FROM user_memories m
        CROSS JOIN LATERAL (SELECT faraday_tsvector_length(m.content_tsv) AS len) l
        CROSS JOIN LATERAL unnest(m.content_tsv) t""")
    op.execute("""
        INSERT INTO memory_user_stats (user_id, docs, total_len)
        SELECT user_id, count(*), sum(faraday_tsvector_length(content_tsv))
        FROM user_memories GROUP BY user_id""")
    for table in ("user_memories", "memory_terms", "memory_user_stats"):
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    for trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER trg_user_memories_terms_{trigger} ON user_memories")
        op.execute(f"DROP FUNCTION faraday_memory_terms_{trigger}()")
    op.execute("DROP FUNCTION faraday_tsvector_length(tsvector)")
    op.drop_table("memory_user_stats")
    op.drop_table("memory_terms")
