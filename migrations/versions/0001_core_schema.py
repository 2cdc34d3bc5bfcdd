"""Core schema: users, assistants, lessons, memories and their interactions.

Revision ID: 0001
Revises:
Create Date: 2025-11-26

Written by hand to match memory_service/storage/tables.py as it stood for
this revision (tests/storage/test_migrations.py checks they agree). Every
name is given in full through op.f(), so the result does not depend on the
naming convention of whatever metadata env.py happens to load. Requires no
extensions: gen_random_uuid() is built in since PostgreSQL 13.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables whose updated_at the set_updated_at() trigger maintains, with the
# trigger's WHEN condition (None: every UPDATE). On user_memories it fires
# only when `version` changes, so recall's last_accessed bump leaves
# updated_at, and so recency ordering, alone. A snapshot of
# tables.UPDATED_AT_TABLES; a migration must not import the live schema.
_UPDATED_AT_TRIGGERS: dict[str, str | None] = {
    "users": None,
    "user_preferences": None,
    "subject_categories": None,
    "assistant_profiles": None,
    "assistant_capabilities": None,
    "lessons": None,
    "user_memories": "OLD.version IS DISTINCT FROM NEW.version",
}


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    ]


def _json_object(table: str, column: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(
        f"{column} IS NULL OR jsonb_typeof({column}) = 'object'",
        name=op.f(f"ck_{table}_{column}_is_object"),
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), server_default=sa.func.gen_random_uuid(), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("school", sa.String(255)),
        sa.Column("department", sa.String(255)),
        sa.Column(
            "subjects", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column(
            "grade_levels",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
        sa.Column("custom_instructions", sa.Text()),
        sa.Column("last_login", sa.DateTime(timezone=True)),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.CheckConstraint(
            r"email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'",
            name=op.f("ck_users_email_format"),
        ),
    )
    # Case-insensitive uniqueness: a unique expression index, since a UNIQUE
    # constraint can only cover plain columns.
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "user_preferences",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("theme", sa.String(50)),
        sa.Column(
            "notifications",
            postgresql.JSONB(),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("language", sa.String(35)),
        sa.Column("timezone", sa.String(64)),
        *_timestamps(),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_preferences")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_preferences_user_id_users"),
            ondelete="CASCADE",
        ),
        _json_object("user_preferences", "notifications"),
    )

    op.create_table(
        "subject_categories",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("metadata", postgresql.JSONB()),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("parent_id", sa.Integer()),
        sa.Column("level", sa.Integer(), server_default=sa.text("1"), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subject_categories")),
        sa.UniqueConstraint("name", name=op.f("uq_subject_categories_name")),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["subject_categories.id"],
            name=op.f("fk_subject_categories_parent_id_subject_categories"),
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "level >= 1 AND level <= 5", name=op.f("ck_subject_categories_valid_level")
        ),
        _json_object("subject_categories", "metadata"),
    )
    op.create_index(op.f("ix_subject_categories_parent_id"), "subject_categories", ["parent_id"])

    op.create_table(
        "assistant_profiles",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("model_version", sa.String(50), nullable=False),
        sa.Column("configuration", postgresql.JSONB()),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "max_context_length", sa.Integer(), server_default=sa.text("4096"), nullable=False
        ),
        sa.Column("temperature", sa.Double(), server_default=sa.text("0.7"), nullable=False),
        sa.Column("top_p", sa.Double(), server_default=sa.text("1.0"), nullable=False),
        sa.Column("frequency_penalty", sa.Double(), server_default=sa.text("0.0"), nullable=False),
        sa.Column("presence_penalty", sa.Double(), server_default=sa.text("0.0"), nullable=False),
        sa.Column("stop_sequences", postgresql.ARRAY(sa.Text())),
        sa.Column("metadata", postgresql.JSONB()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assistant_profiles")),
        sa.UniqueConstraint("name", name=op.f("uq_assistant_profiles_name")),
        _json_object("assistant_profiles", "configuration"),
    )

    op.create_table(
        "assistant_capabilities",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("assistant_profile_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("parameters", postgresql.JSONB()),
        sa.Column("is_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("priority", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("version", sa.String(20)),
        sa.Column("metadata", postgresql.JSONB()),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_assistant_capabilities")),
        sa.UniqueConstraint(
            "assistant_profile_id",
            "name",
            name=op.f("uq_assistant_capabilities_assistant_profile_id_name"),
        ),
        sa.ForeignKeyConstraint(
            ["assistant_profile_id"],
            ["assistant_profiles.id"],
            # The convention's name (65 characters) exceeds PostgreSQL's 63;
            # this is SQLAlchemy's deterministic truncation of it.
            name=op.f("fk_assistant_capabilities_assistant_profile_id_assistan_3bb8"),
            ondelete="CASCADE",
        ),
        _json_object("assistant_capabilities", "parameters"),
    )

    op.create_table(
        "lessons",
        sa.Column("id", sa.Integer(), sa.Identity(), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("subject_category_id", sa.Integer()),
        sa.Column("assistant_profile_id", sa.Integer()),
        sa.Column("grade_level", sa.String(20)),
        sa.Column("week_of", sa.Date()),
        sa.Column("content_area", sa.String(100)),
        sa.Column(
            "lesson_data", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("objectives", postgresql.JSONB()),
        sa.Column("materials", postgresql.JSONB()),
        sa.Column("activities", postgresql.JSONB()),
        sa.Column("assessment_criteria", postgresql.JSONB()),
        sa.Column("feedback", postgresql.JSONB()),
        sa.Column("status", sa.String(50), server_default=sa.text("'draft'"), nullable=False),
        sa.Column(
            "tags", postgresql.JSONB(), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column(
            "related_lessons",
            postgresql.JSONB(),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        # Full-text document: title (A), content area (B), lesson text (C).
        # STORED explicitly: PostgreSQL 18 would otherwise make it VIRTUAL,
        # and a virtual column cannot be indexed (ix_lessons_search_vector).
        sa.Column(
            "search_vector",
            postgresql.TSVECTOR(),
            sa.Computed(
                "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
                "setweight(to_tsvector('english'::regconfig, coalesce(content_area, '')), 'B') || "
                "setweight(to_tsvector('english'::regconfig, "
                "coalesce(lesson_data ->> 'text', '')), 'C')",
                persisted=True,
            ),
            nullable=False,
        ),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lessons")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_lessons_user_id_users"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["subject_category_id"],
            ["subject_categories.id"],
            name=op.f("fk_lessons_subject_category_id_subject_categories"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["assistant_profile_id"],
            ["assistant_profiles.id"],
            name=op.f("fk_lessons_assistant_profile_id_assistant_profiles"),
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'published', 'archived')", name=op.f("ck_lessons_valid_status")
        ),
        _json_object("lessons", "lesson_data"),
        sa.CheckConstraint("jsonb_typeof(tags) = 'array'", name=op.f("ck_lessons_tags_is_array")),
        sa.CheckConstraint(
            "jsonb_typeof(related_lessons) = 'array'",
            name=op.f("ck_lessons_related_lessons_is_array"),
        ),
    )
    op.create_index(op.f("ix_lessons_user_id_week_of"), "lessons", ["user_id", "week_of"])
    op.create_index(op.f("ix_lessons_subject_category_id"), "lessons", ["subject_category_id"])
    op.create_index(op.f("ix_lessons_assistant_profile_id"), "lessons", ["assistant_profile_id"])
    op.create_index(op.f("ix_lessons_week_of"), "lessons", ["week_of"])
    op.create_index(op.f("ix_lessons_grade_level"), "lessons", ["grade_level"])
    op.create_index(
        op.f("ix_lessons_published_user_id"),
        "lessons",
        ["user_id"],
        postgresql_where=sa.text("status = 'published'"),
    )
    op.create_index(op.f("ix_lessons_status"), "lessons", ["status"])
    op.create_index(op.f("ix_lessons_tags"), "lessons", ["tags"], postgresql_using="gin")
    # jsonb_path_ops: smaller and faster for @> containment, the only
    # operator queries use on lesson_data.
    op.create_index(
        op.f("ix_lessons_lesson_data"),
        "lessons",
        ["lesson_data"],
        postgresql_using="gin",
        postgresql_ops={"lesson_data": "jsonb_path_ops"},
    )
    op.create_index(
        op.f("ix_lessons_search_vector"), "lessons", ["search_vector"], postgresql_using="gin"
    )

    op.create_table(
        "user_memories",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("assistant_profile_id", sa.Integer()),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "context", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.Column("importance", sa.Double(), server_default=sa.text("0.5"), nullable=False),
        sa.Column("last_accessed", sa.DateTime(timezone=True)),
        sa.Column("category", sa.String(100), nullable=False),
        sa.Column(
            "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'"), nullable=False
        ),
        sa.Column("source", sa.String(100)),
        sa.Column("confidence", sa.Double()),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        *_timestamps(),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column(
            "metadata", postgresql.JSONB(), server_default=sa.text("'{}'::jsonb"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_memories")),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_memories_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["assistant_profile_id"],
            ["assistant_profiles.id"],
            name=op.f("fk_user_memories_assistant_profile_id_assistant_profiles"),
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "importance >= 0.0 AND importance <= 1.0",
            name=op.f("ck_user_memories_importance_range"),
        ),
        sa.CheckConstraint(
            "confidence >= 0.0 AND confidence <= 1.0",
            name=op.f("ck_user_memories_confidence_range"),
        ),
        sa.CheckConstraint("length(content) > 0", name=op.f("ck_user_memories_content_not_empty")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_user_memories_version_positive")),
        _json_object("user_memories", "context"),
        _json_object("user_memories", "metadata"),
    )
    # Every hot query is scoped by user; these lead with user_id.
    op.create_index(
        op.f("ix_user_memories_user_id_created_at"),
        "user_memories",
        ["user_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index(
        op.f("ix_user_memories_user_id_importance"),
        "user_memories",
        ["user_id", sa.text("importance DESC")],
    )
    op.create_index(
        op.f("ix_user_memories_user_id_category"), "user_memories", ["user_id", "category"]
    )
    op.create_index(
        op.f("ix_user_memories_assistant_profile_id"), "user_memories", ["assistant_profile_id"]
    )
    op.create_index(
        op.f("ix_user_memories_tags"), "user_memories", ["tags"], postgresql_using="gin"
    )
    op.create_index(
        op.f("ix_user_memories_context"),
        "user_memories",
        ["context"],
        postgresql_using="gin",
        postgresql_ops={"context": "jsonb_path_ops"},
    )
    # Partial: most memories never expire, and the sweeper only looks for
    # those that do.
    op.create_index(
        op.f("ix_user_memories_expires_at"),
        "user_memories",
        ["expires_at"],
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )
    # The regconfig is spelt out: an index expression must be immutable, and
    # the one-argument to_tsvector() depends on default_text_search_config.
    op.create_index(
        op.f("ix_user_memories_content_fts"),
        "user_memories",
        [sa.text("to_tsvector('english'::regconfig, content)")],
        postgresql_using="gin",
    )

    op.create_table(
        "memory_interactions",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("memory_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("interaction_type", sa.String(50), nullable=False),
        sa.Column(
            "timestamp", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("context", postgresql.JSONB()),
        sa.Column("feedback", postgresql.JSONB()),
        sa.Column("duration", sa.Integer()),
        sa.Column("success", sa.Boolean()),
        sa.Column("error_message", sa.Text()),
        sa.Column("metadata", postgresql.JSONB()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_interactions")),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["user_memories.id"],
            name=op.f("fk_memory_interactions_memory_id_user_memories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_memory_interactions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "interaction_type IN ('store', 'recall', 'update', 'feedback')",
            name=op.f("ck_memory_interactions_valid_interaction_type"),
        ),
        sa.CheckConstraint(
            "duration IS NULL OR duration >= 0",
            name=op.f("ck_memory_interactions_duration_not_negative"),
        ),
    )
    op.create_index(
        op.f("ix_memory_interactions_user_id_timestamp"),
        "memory_interactions",
        ["user_id", sa.text('"timestamp" DESC')],
    )
    op.create_index(
        op.f("ix_memory_interactions_memory_id_timestamp"),
        "memory_interactions",
        ["memory_id", sa.text('"timestamp" DESC')],
    )

    # updated_at maintenance. now() is the transaction's start time, the same
    # value a column default would give a row inserted in that transaction.
    op.execute(
        """
        CREATE FUNCTION set_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END;
        $$
        """
    )
    for table, condition in _UPDATED_AT_TRIGGERS.items():
        when = f"WHEN ({condition}) " if condition else ""
        op.execute(
            f"CREATE TRIGGER trg_{table}_updated_at BEFORE UPDATE ON {table} "
            f"FOR EACH ROW {when}EXECUTE FUNCTION set_updated_at()"
        )


def downgrade() -> None:
    # Triggers, then the function they call, then the tables, children before
    # parents. Indexes and constraints go with their tables.
    for table in reversed(_UPDATED_AT_TRIGGERS):
        op.execute(f"DROP TRIGGER trg_{table}_updated_at ON {table}")
    op.execute("DROP FUNCTION set_updated_at()")
    for table in (
        "memory_interactions",
        "user_memories",
        "lessons",
        "assistant_capabilities",
        "assistant_profiles",
        "subject_categories",
        "user_preferences",
        "users",
    ):
        op.drop_table(table)
