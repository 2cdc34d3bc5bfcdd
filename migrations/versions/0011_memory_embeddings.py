"""Memory embeddings in a pgvector table, where the server has pgvector.

Revision ID: 0011
Revises: 0010

`memory_embeddings (user_id, memory_id, model, embedding)`: one vector per
memory and embedding model, so a model change can backfill the new model's
vectors while the old ones still serve, and a memory without a vector yet is
still found lexically. The key leads with user_id (the per-user scan recall
does, and the foreign key's cascade on (memory_id, user_id) uses it too);
row-level security as on the memories.

pgvector is optional: the embedded PostgreSQL 18 ships it, the machine's
PostgreSQL 15 does not, and a managed server may not allow it. Without the
extension available this migration creates nothing and the service runs
lexical-only (it says so at start-up and answers FAILED_PRECONDITION to a
request that needs vectors). The table is therefore not in tables.py's
metadata but listed in tables.OPTIONAL_TABLES. To add vectors later,
install pgvector and run `memory-service migrate` after
`alembic downgrade 0010` (nothing else depends on this table).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ROLES = ("faraday_app", "faraday_platform")
_POLICY = "((SELECT faraday_sees_all()) OR user_id = (SELECT faraday_acting_user()))"


def upgrade() -> None:
    available = (
        op.get_bind()
        .execute(text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
        .scalar()
    )
    if not available:
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("""
        CREATE TABLE memory_embeddings (
            user_id uuid NOT NULL,
            memory_id bigint NOT NULL,
            model text NOT NULL,
            embedding vector NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_memory_embeddings PRIMARY KEY (user_id, memory_id, model),
            CONSTRAINT fk_memory_embeddings_memory_id_user_id_user_memories
                FOREIGN KEY (memory_id, user_id) REFERENCES user_memories (id, user_id)
                ON DELETE CASCADE
        )""")
    op.execute("ALTER TABLE memory_embeddings ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE memory_embeddings FORCE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY memory_embeddings_owner ON memory_embeddings"
        f" USING {_POLICY} WITH CHECK {_POLICY}"
    )
    for role in _ROLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON memory_embeddings TO {role}")
    # A heavy user's nearest neighbours come from an HNSW index over every
    # user's vectors (storage/migrate.py ensure_vector_index); the user filter
    # applies after the index, so let the scan continue until enough rows
    # pass it (pgvector 0.8's iterative scans), for every new session here.
    op.execute("""
        DO $$ BEGIN
            EXECUTE format('ALTER DATABASE %I SET hnsw.iterative_scan = relaxed_order',
                           current_database());
        END $$""")


def downgrade() -> None:
    op.execute("""
        DO $$ BEGIN
            EXECUTE format('ALTER DATABASE %I RESET hnsw.iterative_scan', current_database());
        END $$""")
    op.execute("DROP TABLE IF EXISTS memory_embeddings")
    # Extensions are per database; without CASCADE this fails, rightly, if
    # anything else here has come to use pgvector.
    op.execute("DROP EXTENSION IF EXISTS vector")
