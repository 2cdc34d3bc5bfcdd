"""The schema, as SQLAlchemy Core tables: the single source Alembic compares against.

Where this differs from the platform's database documentation, the reason is
in docs/schema.md. Triggers (updated_at maintenance) are not expressible as
Core objects; they are created by the migration and listed in TRIGGERS so the
agreement test can check they exist.
"""

from __future__ import annotations

import re

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Computed,
    Date,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, REAL, TSVECTOR, UUID

from memory_service.domain import validation as check

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created_at() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated_at() -> Column[object]:
    return Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now())


_TIME_MIN = f"'{check.TIME_MIN.isoformat()}'::timestamptz"
_TIME_END = f"'{check.TIME_END.isoformat()}'::timestamptz"
_DATE_MIN = f"'{check.TIME_MIN.date().isoformat()}'::date"
_DATE_END = f"'{check.TIME_END.date().isoformat()}'::date"


def _json_object(column: str) -> CheckConstraint:
    return CheckConstraint(
        f"{column} IS NULL OR jsonb_typeof({column}) = 'object'", name=f"{column}_is_object"
    )


users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("email", String(255), nullable=False),
    Column("name", String(255)),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("school", String(255)),
    Column("department", String(255)),
    Column("subjects", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("grade_levels", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("custom_instructions", Text),
    Column("last_login", DateTime(timezone=True)),
    _created_at(),
    _updated_at(),
    # name, school, department and custom_instructions, encrypted by the
    # service (storage/encryption.py); those columns are then NULL. Rows from
    # before encryption keep them in plaintext until sealed (migration 0016).
    Column("encrypted_sensitive_data", LargeBinary),
    CheckConstraint(
        "encrypted_sensitive_data IS NULL"
        " OR num_nonnulls(name, school, department, custom_instructions) = 0",
        name="sealed_fields_not_in_plaintext",
    ),
    CheckConstraint(
        r"email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'", name="email_format"
    ),
    # Case-insensitive uniqueness: "A@x.org" and "a@x.org" are one mailbox.
    Index("uq_users_email_lower", func.lower(text("email")), unique=True),
)

user_preferences = Table(
    "user_preferences",
    metadata,
    Column(
        "user_id",
        UUID(as_uuid=True),
        ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("theme", String(50)),
    Column("notifications", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("language", String(35)),
    Column("timezone", String(64)),
    _created_at(),
    _updated_at(),
    _json_object("notifications"),
)

subject_categories = Table(
    "subject_categories",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("description", Text),
    Column("metadata", JSONB),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("parent_id", Integer, ForeignKey("subject_categories.id", ondelete="SET NULL")),
    Column("level", Integer, nullable=False, server_default=text("1")),
    _created_at(),
    _updated_at(),
    UniqueConstraint("name"),
    CheckConstraint("level >= 1 AND level <= 5", name="valid_level"),
    _json_object("metadata"),
    Index("ix_subject_categories_parent_id", "parent_id"),
)

assistant_profiles = Table(
    "assistant_profiles",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("description", Text),
    Column("model_version", String(50), nullable=False),
    Column("configuration", JSONB),
    Column("is_active", Boolean, nullable=False, server_default=text("true")),
    Column("max_context_length", Integer, nullable=False, server_default=text("4096")),
    Column("temperature", Double, nullable=False, server_default=text("0.7")),
    Column("top_p", Double, nullable=False, server_default=text("1.0")),
    Column("frequency_penalty", Double, nullable=False, server_default=text("0.0")),
    Column("presence_penalty", Double, nullable=False, server_default=text("0.0")),
    Column("stop_sequences", ARRAY(Text)),
    Column("metadata", JSONB),
    _created_at(),
    _updated_at(),
    UniqueConstraint("name"),
    _json_object("configuration"),
)

assistant_capabilities = Table(
    "assistant_capabilities",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column(
        "assistant_profile_id",
        Integer,
        ForeignKey("assistant_profiles.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(100), nullable=False),
    Column("description", Text),
    Column("parameters", JSONB),
    Column("is_enabled", Boolean, nullable=False, server_default=text("true")),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("version", String(20)),
    Column("metadata", JSONB),
    _created_at(),
    _updated_at(),
    # Leading profile id: also serves "capabilities of a profile".
    UniqueConstraint("assistant_profile_id", "name"),
    _json_object("parameters"),
)

LESSON_STATUSES = ("draft", "published", "archived")

lessons = Table(
    "lessons",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("title", String(200), nullable=False),
    Column(
        "user_id", UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    Column(
        "subject_category_id", Integer, ForeignKey("subject_categories.id", ondelete="SET NULL")
    ),
    Column(
        "assistant_profile_id", Integer, ForeignKey("assistant_profiles.id", ondelete="SET NULL")
    ),
    Column("grade_level", String(20)),
    Column("week_of", Date),
    Column("content_area", String(100)),
    Column("lesson_data", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("objectives", JSONB),
    Column("materials", JSONB),
    Column("activities", JSONB),
    Column("assessment_criteria", JSONB),
    Column("feedback", JSONB),
    Column("status", String(50), nullable=False, server_default=text("'draft'")),
    Column("tags", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("related_lessons", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # Full-text document: title (A), content area (B), lesson text (C).
    Column(
        "search_vector",
        TSVECTOR,
        Computed(
            "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
            "setweight(to_tsvector('english'::regconfig, coalesce(content_area, '')), 'B') || "
            "setweight(to_tsvector('english'::regconfig,"
            " coalesce(lesson_data ->> 'text', '')), 'C')",
            persisted=True,
        ),
        nullable=False,
    ),
    _created_at(),
    _updated_at(),
    CheckConstraint(
        "status IN (" + ", ".join(f"'{s}'" for s in LESSON_STATUSES) + ")", name="valid_status"
    ),
    _json_object("lesson_data"),
    CheckConstraint("jsonb_typeof(tags) = 'array'", name="tags_is_array"),
    CheckConstraint("jsonb_typeof(related_lessons) = 'array'", name="related_lessons_is_array"),
    CheckConstraint(f"week_of >= {_DATE_MIN} AND week_of < {_DATE_END}", name="week_of_range"),
    Index("ix_lessons_user_id_week_of", "user_id", "week_of"),
    # (column, id): ListLessons' equality filters read a page newest first
    # from the index and stop (migration 0019).
    Index("ix_lessons_user_id_id", "user_id", "id"),
    Index("ix_lessons_subject_category_id", "subject_category_id", "id"),
    Index("ix_lessons_assistant_profile_id", "assistant_profile_id"),
    Index("ix_lessons_week_of", "week_of"),
    Index("ix_lessons_grade_level", "grade_level", "id"),
    Index(
        "ix_lessons_published_user_id",
        "user_id",
        postgresql_where=text("status = 'published'"),
    ),
    Index("ix_lessons_status", "status", "id"),
    Index("ix_lessons_tags", "tags", postgresql_using="gin"),
    Index(
        "ix_lessons_lesson_data",
        "lesson_data",
        postgresql_using="gin",
        postgresql_ops={"lesson_data": "jsonb_path_ops"},
    ),
    Index("ix_lessons_search_vector", "search_vector", postgresql_using="gin"),
)

# SearchLessons' inverted index (migration 0019): one row per (lexeme,
# lesson), kept by triggers on lessons, under the lessons' read rule. impact
# is the rank a query of that lexeme alone gives the lesson; the primary key
# read backwards gives a word's best lessons first.
lesson_terms = Table(
    "lesson_terms",
    metadata,
    Column("lexeme", Text, nullable=False),
    Column("impact", REAL, nullable=False),
    Column("lesson_id", Integer, nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("status", Text, nullable=False),
    PrimaryKeyConstraint("lexeme", "impact", "lesson_id", postgresql_include=["user_id", "status"]),
    Index(
        "ix_lesson_terms_user_id_lexeme",
        "user_id",
        "lexeme",
        "impact",
        "lesson_id",
        postgresql_include=["status"],
    ),
)

# For every lexeme in more lessons than SearchLessons' candidate cap, how many
# lessons hold it: recounted by the lesson term job (migration 0020).
lesson_term_frequencies = Table(
    "lesson_term_frequencies",
    metadata,
    Column("lexeme", Text, primary_key=True),
    Column("lessons", Integer, nullable=False),
    CheckConstraint("lessons >= 0", name="lessons_not_negative"),
)

# When each periodic job that several service processes share last started
# (migration 0021): the lesson term job runs once an interval, not once a
# process.
job_runs = Table(
    "job_runs",
    metadata,
    Column("job", Text, primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
)

# importance_band: importance 0.0..1.0 in tenths, 1.0 a band of its own.
IMPORTANCE_BANDS = 11

# The dedup key of a memory's content (DedupPolicy EXACT): sha256 of the
# content after NFKC normalization, lower-casing and collapsing white space
# (migration 0014 creates the function and says why it is IMMUTABLE). Not a
# Core object: user_memories.content_key calls it, so whoever builds the
# schema from this metadata (the reference schema of
# tests/storage/test_migrations.py) runs this first.
CONTENT_KEY_FUNCTION = r"""
CREATE FUNCTION faraday_content_key(content text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN sha256(convert_to(
    btrim(regexp_replace(lower(normalize(content, NFKC)), '\s+', ' ', 'g')), 'UTF8'))
"""

user_memories = Table(
    "user_memories",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column(
        "user_id", UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    Column(
        "assistant_profile_id", Integer, ForeignKey("assistant_profiles.id", ondelete="SET NULL")
    ),
    Column("content", Text, nullable=False),
    Column("context", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("importance", Double, nullable=False, server_default=text("0.5")),
    Column("last_accessed", DateTime(timezone=True)),
    Column("category", String(100), nullable=False),
    Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'")),
    Column("source", String(100)),
    Column("confidence", Double),
    Column("version", Integer, nullable=False, server_default=text("1")),
    _created_at(),
    _updated_at(),
    Column("expires_at", DateTime(timezone=True)),
    Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    # Stored so recall ranks matches without re-parsing every matching
    # content (measured: to_tsvector per row was most of a query recall).
    Column(
        "content_tsv",
        TSVECTOR,
        Computed("to_tsvector('english'::regconfig, content)", persisted=True),
        nullable=False,
    ),
    Column(
        "importance_band",
        SmallInteger,
        Computed("floor(importance * 10)::smallint", persisted=True),
        nullable=False,
    ),
    # The content's dedup key (CONTENT_KEY_FUNCTION, migration 0014).
    Column(
        "content_key",
        LargeBinary,
        Computed("faraday_content_key(content)", persisted=True),
        nullable=False,
    ),
    # The ImportItem.import_id the memory was imported as (memory_import_ids).
    Column("import_id", Text),
    CheckConstraint("importance >= 0.0 AND importance <= 1.0", name="importance_range"),
    CheckConstraint("confidence >= 0.0 AND confidence <= 1.0", name="confidence_range"),
    CheckConstraint("length(content) > 0", name="content_not_empty"),
    CheckConstraint("version >= 1", name="version_positive"),
    CheckConstraint("length(import_id) >= 1 AND length(import_id) <= 128", name="import_id_length"),
    # Every stored time reads back into Python (migration 0007).
    CheckConstraint(
        f"expires_at >= {_TIME_MIN} AND expires_at < {_TIME_END}", name="expires_at_range"
    ),
    _json_object("context"),
    _json_object("metadata"),
    # Keyed by user, as every per-user table (migration 0017): ids are still
    # unique on their own, from the identity sequence.
    PrimaryKeyConstraint("user_id", "id"),
    # What the composite foreign keys of memory_interactions, memory_revisions,
    # memory_import_ids and memory_embeddings reference.
    UniqueConstraint("id", "user_id", name="uq_user_memories_id_user_id"),
    # Every hot query is scoped by user; these lead with user_id.
    Index(
        "ix_user_memories_user_id_created_at", "user_id", text("created_at DESC"), text("id DESC")
    ),
    # Recall walks each importance band newest first (storage/memories.py).
    # A stored column, not an expression: under row-level security only
    # leakproof comparisons can be index conditions (migration 0004), which
    # is also why user_memories has no GIN index (tags, context, content_tsv).
    # It covers id and assistant_profile_id (the row-level security policy's
    # column) so that query recall's `reach` is an index-only scan (0012).
    Index(
        "ix_user_memories_user_id_importance_band",
        "user_id",
        "importance_band",
        text("updated_at DESC"),
        postgresql_include=["id", "assistant_profile_id"],
    ),
    Index("ix_user_memories_user_id_category", "user_id", "category"),
    # The dedup lookup: equality on uuid and bytea, both leakproof, so an
    # index condition for the service role under row-level security.
    Index("ix_user_memories_user_id_content_key", "user_id", "content_key"),
    Index("ix_user_memories_assistant_profile_id", "assistant_profile_id"),
    Index(
        "ix_user_memories_expires_at",
        "expires_at",
        postgresql_where=text("expires_at IS NOT NULL"),
    ),
    # Room on each page for recall's last_accessed bump to stay a HOT update
    # (migration 0004).
    postgresql_with={"fillfactor": 90},
)

# BM25's inverted index of each user's memories, kept by triggers on
# user_memories (migration 0010): a term's frequency in a memory and the
# memory's length, and per user the memory count and total length.
memory_terms = Table(
    "memory_terms",
    metadata,
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("lexeme", Text, nullable=False),
    Column("memory_id", BigInteger, nullable=False),
    Column("tf", Integer, nullable=False),
    Column("doc_len", Integer, nullable=False),
    PrimaryKeyConstraint("user_id", "lexeme", "memory_id", postgresql_include=["tf", "doc_len"]),
)

memory_user_stats = Table(
    "memory_user_stats",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("docs", BigInteger, nullable=False),
    Column("total_len", BigInteger, nullable=False),
)

INTERACTION_TYPES = ("store", "recall", "update", "feedback", "merge")

memory_interactions = Table(
    "memory_interactions",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("memory_id", BigInteger, nullable=False),
    Column(
        "user_id", UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    ),
    Column("interaction_type", String(50), nullable=False),
    Column("timestamp", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("context", JSONB),
    Column("feedback", JSONB),
    Column("duration", Integer),
    Column("success", Boolean),
    Column("error_message", Text),
    Column("metadata", JSONB),
    CheckConstraint(
        "interaction_type IN (" + ", ".join(f"'{t}'" for t in INTERACTION_TYPES) + ")",
        name="valid_interaction_type",
    ),
    CheckConstraint("duration IS NULL OR duration >= 0", name="duration_not_negative"),
    # The interaction's user is its memory's user (migration 0008).
    ForeignKeyConstraint(
        ["memory_id", "user_id"],
        ["user_memories.id", "user_memories.user_id"],
        ondelete="CASCADE",
        name="fk_memory_interactions_memory_id_user_id_user_memories",
    ),
    # A key of a partitioned table holds its partition key; user_id leads
    # for distribution by user, and in this order the key is also the index
    # ListInteractions walks: a user's rows newest first, ties by id.
    PrimaryKeyConstraint("user_id", "timestamp", "id"),
    # A memory's interactions: its delete's cascade, in each partition.
    Index("ix_memory_interactions_memory_id_timestamp", "memory_id", text('"timestamp" DESC')),
    # By day; retention drops whole partitions (migration 0018).
    postgresql_partition_by='RANGE ("timestamp")',
)

# The columns of user_memories whose change keeps a revision (issue 10).
REVISED_MEMORY_COLUMNS = ("content", "importance", "category", "tags", "metadata", "expires_at")

# A memory's values before each change of REVISED_MEMORY_COLUMNS, with the
# version they belonged to, who changed them and when; written by an AFTER
# UPDATE trigger on user_memories (migration 0013), never by the service's
# SQL. Goes with its memory (the composite key, as memory_interactions').
memory_revisions = Table(
    "memory_revisions",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("memory_id", BigInteger, nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("importance", Double, nullable=False),
    Column("category", String(100), nullable=False),
    Column("tags", ARRAY(Text), nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    # The request's caller (storage/session.py actor), or 'database' for SQL
    # run outside the service.
    Column("changed_by", Text, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "id"),
    ForeignKeyConstraint(
        ["memory_id", "user_id"],
        ["user_memories.id", "user_memories.user_id"],
        ondelete="CASCADE",
        name="fk_memory_revisions_memory_id_user_id_user_memories",
    ),
    # A memory's revisions newest first (read backwards), its cascade, and
    # export and erasure by user.
    Index("ix_memory_revisions_user_id_memory_id_id", "user_id", "memory_id", "id"),
)

# Every import id ever taken (ImportMemories), and the memory it became or
# was merged into (migration 0014): a re-run import finds its ids here. Keyed
# by user first; goes with its memory (the composite key, as
# memory_interactions'), which is what the index on memory_id serves.
memory_import_ids = Table(
    "memory_import_ids",
    metadata,
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("import_id", Text, nullable=False),
    Column("memory_id", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "import_id"),
    ForeignKeyConstraint(
        ["memory_id", "user_id"],
        ["user_memories.id", "user_memories.user_id"],
        ondelete="CASCADE",
        name="fk_memory_import_ids_memory_id_user_id_user_memories",
    ),
    Index("ix_memory_import_ids_memory_id", "memory_id"),
)

# Append-only record of sensitive operations and denied calls. The service
# role may INSERT and SELECT here, never UPDATE or DELETE (migration 0002);
# partitioned by month, and only whole months older than the retention (at
# least a year) ever go (migration 0018).
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor_kind", String(20), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("method", String(200), nullable=False),
    Column("outcome", String(40), nullable=False),
    Column("peer", String(255)),
    Column("resource", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    PrimaryKeyConstraint("occurred_at", "id"),
    Index("ix_audit_log_actor", "actor", "occurred_at"),
    postgresql_partition_by="RANGE (occurred_at)",
)

# Client request ids of idempotent writes (StoreMemory, RecordFeedback),
# keyed by user and caller: one caller's key can never collide with, or
# reveal, another's, and a key lives with its user's rows (migration 0017).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("caller", String(300), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("method", String(100), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("user_id", UUID(as_uuid=True), nullable=False),
    Column("memory_id", BigInteger, nullable=False),
    Column("interaction_id", BigInteger),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("user_id", "caller", "request_id"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

# The role the service connects as: it owns nothing, so FORCE ROW LEVEL
# SECURITY holds for it (migration 0002 creates it and its grants).
APP_ROLE = "faraday_app"
# The role of transactions acting for all users (service tokens, sweeps):
# the same grants, and the only role for which acting user '*' shows every
# row (migration 0009).
PLATFORM_ROLE = "faraday_platform"
# Tables a migration creates only where the server can hold them, and so
# not in this metadata: memory_embeddings needs pgvector (migration 0011).
OPTIONAL_TABLES = frozenset({"memory_embeddings"})

# Tables partitioned by time (migration 0018): each has a DEFAULT partition
# <table>_default, its pre-partitioning rows in <table>_history, and one
# partition per period, <table>_pYYYYMMDD (days) or <table>_pYYYYMM (months).
PARTITIONED_TABLES = ("memory_interactions", "audit_log")


_PARTITION_NAME = re.compile(
    rf"^({'|'.join(PARTITIONED_TABLES)})_(default|history|p[0-9]{{6}}([0-9]{{2}})?)$"
)


def is_partition(name: str) -> bool:
    """Whether a table name is one of PARTITIONED_TABLES' partitions."""
    return _PARTITION_NAME.match(name) is not None


# User-owned tables under row-level security, with their owner column.
RLS_TABLES = {
    "users": "id",
    "user_preferences": "user_id",
    "lessons": "user_id",
    "lesson_terms": "user_id",
    "user_memories": "user_id",
    "memory_interactions": "user_id",
    "idempotency_keys": "user_id",
    "memory_terms": "user_id",
    "memory_user_stats": "user_id",
    "memory_revisions": "user_id",
    "memory_import_ids": "user_id",
}

# How the schema shards by user (Citus: docs/scaling.md, "Distributing by
# user with Citus"). Distributed by user_id, all co-located: every primary,
# unique and foreign key among them holds user_id
# (tests/storage/test_colocation.py).
DISTRIBUTED_TABLES = (
    "user_memories",
    "user_preferences",
    "memory_interactions",
    "memory_revisions",
    "memory_import_ids",
    "memory_terms",
    "memory_user_stats",
    "memory_embeddings",
    "idempotency_keys",
)
# Copied to every node, in this order (each refers only to those before it):
# few rows or rarely written, and read by id or across users.
REFERENCE_TABLES = (
    "users",
    "subject_categories",
    "assistant_profiles",
    "assistant_capabilities",
    "lessons",
    "lesson_terms",
    "lesson_term_frequencies",
)
# Kept on the coordinator alone.
LOCAL_TABLES = ("audit_log", "job_runs")

# Tables whose updated_at a BEFORE UPDATE trigger maintains. On user_memories
# the trigger fires only when `version` changes, so recall's last_accessed
# bump leaves updated_at (and so recency) alone.
UPDATED_AT_TABLES = (
    "users",
    "user_preferences",
    "subject_categories",
    "assistant_profiles",
    "assistant_capabilities",
    "lessons",
    "user_memories",
)
# The functions the tables' computed columns call, by name: created by the
# migrations, and listed here with their definition so a schema built from
# this metadata can create them first.
FUNCTIONS = {"faraday_content_key": CONTENT_KEY_FUNCTION}

# Every trigger the migrations create, and its table.
TRIGGERS = (
    {f"trg_{table}_updated_at": table for table in UPDATED_AT_TABLES}
    | {
        f"trg_user_memories_terms_{event}": "user_memories"
        for event in ("insert", "delete", "update")
    }
    | {"trg_user_memories_revisions": "user_memories"}
    | {f"trg_lessons_terms_{event}": "lessons" for event in ("insert", "delete", "update")}
)
