"""Every SQL statement on the registry: users, preferences, subjects, assistants."""

from __future__ import annotations

import asyncpg

from memory_service.domain import audit
from memory_service.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from memory_service.domain.models import (
    AssistantProfile,
    Capability,
    SubjectCategory,
    User,
    UserPreferences,
)
from memory_service.storage.database import Database
from memory_service.storage.encryption import (
    SEALED_USER_FIELDS,
    FieldCipher,
    opened_fields,
    sealed_fields,
)
from memory_service.storage.named_sql import NamedSQL

MAX_SUBJECT_LEVEL = 5

# Replaced whole by an upsert; is_active is not among them (below). The
# sealed fields are written either encrypted (into encrypted_sensitive_data,
# themselves NULL) or, without keys, in plaintext (storage/encryption.py).
_USER_FIELDS = (
    "email",
    *SEALED_USER_FIELDS,
    "encrypted_sensitive_data",
    "subjects",
    "grade_levels",
)
USER_COLUMNS = ", ".join(("id", "is_active", *_USER_FIELDS, "created_at", "updated_at"))


def _keep_if_null(column: str, table: str) -> tuple[str, str]:
    """An upserted flag's value on insert and its assignment on update.

    NULL (the caller left the proto3 `optional` field unset) means true for a
    new row, as the column's server default, and the row's current value for
    an existing one. EXCLUDED cannot tell the two apart after the insert's
    coalesce, so the update reads the parameter itself.
    """
    return (
        f"coalesce(:{column}::bool, true)",
        f"{column} = coalesce(:{column}::bool, {table}.{column})",
    )


_INSERT_USER_ACTIVE, _SET_USER_ACTIVE = _keep_if_null("is_active", "users")
_SET_USER_FIELDS = ", ".join((*(f"{c} = EXCLUDED.{c}" for c in _USER_FIELDS), _SET_USER_ACTIVE))
_USER_VALUES = ", ".join((*(f":{c}" for c in _USER_FIELDS), _INSERT_USER_ACTIVE))
_INSERT_USER_FIELDS = ", ".join((*_USER_FIELDS, "is_active"))

_UPSERT_USER_BY_ID = NamedSQL.compile(f"""
INSERT INTO users (id, {_INSERT_USER_FIELDS})
VALUES (:id, {_USER_VALUES})
ON CONFLICT (id) DO UPDATE SET {_SET_USER_FIELDS}
RETURNING {USER_COLUMNS}
""")

# The arbiter is the unique index uq_users_email_lower on lower(email): one
# mailbox, however its address is capitalised, is one user.
_UPSERT_USER_BY_EMAIL = NamedSQL.compile(f"""
INSERT INTO users ({_INSERT_USER_FIELDS})
VALUES ({_USER_VALUES})
ON CONFLICT ((lower(email))) DO UPDATE SET {_SET_USER_FIELDS}
RETURNING {USER_COLUMNS}
""")

_UPSERT_PREFERENCES = """
INSERT INTO user_preferences (user_id, theme, notifications, language, timezone)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (user_id) DO UPDATE SET
    theme = EXCLUDED.theme, notifications = EXCLUDED.notifications,
    language = EXCLUDED.language, timezone = EXCLUDED.timezone
RETURNING user_id, theme, notifications, language, timezone, updated_at
"""

CATEGORY_COLUMNS = "id, name, description, parent_id, is_active, metadata, level"

# Category writes are rare; serialising them lets the cycle check and the
# level arithmetic below see a tree nobody else is rearranging. Readers, and
# lesson writes checking their foreign key, are not blocked.
_LOCK_CATEGORIES = "LOCK TABLE subject_categories IN SHARE ROW EXCLUSIVE MODE"

# The category being written (by id if given, else by name), and whether the
# new parent is the category itself or one of its descendants. UNION (not
# UNION ALL) ends the walk even on a cyclic tree.
_PLACE_CATEGORY = NamedSQL.compile("""
WITH RECURSIVE ancestors AS (
    SELECT id, parent_id FROM subject_categories WHERE id = :parent_id::int
    UNION
    SELECT c.id, c.parent_id FROM subject_categories c JOIN ancestors a ON c.id = a.parent_id
), self AS (
    SELECT id FROM subject_categories
    WHERE id = :id::int OR (:id::int IS NULL AND name = :name::text)
)
SELECT (SELECT id FROM self) AS self_id,
       EXISTS (SELECT FROM ancestors JOIN self USING (id)) AS cycle
""")

_CATEGORY_LEVEL = (
    "coalesce((SELECT p.level + 1 FROM subject_categories p WHERE p.id = :parent_id), 1)"
)

_INSERT_CATEGORY_ACTIVE, _SET_CATEGORY_ACTIVE = _keep_if_null("is_active", "subject_categories")

_UPSERT_CATEGORY = NamedSQL.compile(f"""
INSERT INTO subject_categories (name, description, parent_id, is_active, metadata, level)
VALUES (:name, :description, :parent_id::int, {_INSERT_CATEGORY_ACTIVE}, :metadata::jsonb,
        {_CATEGORY_LEVEL})
ON CONFLICT (name) DO UPDATE SET
    description = EXCLUDED.description, parent_id = EXCLUDED.parent_id,
    {_SET_CATEGORY_ACTIVE}, metadata = EXCLUDED.metadata, level = EXCLUDED.level
RETURNING {CATEGORY_COLUMNS}
""")

# With an id, the name may change: that is how a category is renamed.
_UPDATE_CATEGORY = NamedSQL.compile(f"""
UPDATE subject_categories SET
    name = :name, description = :description, parent_id = :parent_id::int,
    {_SET_CATEGORY_ACTIVE}, metadata = :metadata::jsonb, level = {_CATEGORY_LEVEL}
WHERE id = :id
RETURNING {CATEGORY_COLUMNS}
""")

# A category that moved takes its sub-tree along: every descendant's level
# follows from its parent's. The walk stops one level past the maximum,
# where the valid_level check rejects the move.
_RELEVEL_DESCENDANTS = f"""
WITH RECURSIVE sub AS (
    SELECT id, $2::int + 1 AS level FROM subject_categories WHERE parent_id = $1
    UNION ALL
    SELECT c.id, sub.level + 1 FROM subject_categories c JOIN sub ON c.parent_id = sub.id
    WHERE sub.level <= {MAX_SUBJECT_LEVEL}
)
UPDATE subject_categories s SET level = sub.level
FROM sub WHERE s.id = sub.id AND s.level <> sub.level
"""

_LEVEL_CHECK = "ck_subject_categories_valid_level"

PROFILE_COLUMNS = "id, name, description, model_version, is_active, configuration"

_INSERT_PROFILE_ACTIVE, _SET_PROFILE_ACTIVE = _keep_if_null("is_active", "assistant_profiles")

_UPSERT_PROFILE = NamedSQL.compile(f"""
INSERT INTO assistant_profiles (name, description, model_version, is_active, configuration)
VALUES (:name, :description, :model_version, {_INSERT_PROFILE_ACTIVE}, :configuration::jsonb)
ON CONFLICT (name) DO UPDATE SET
    description = EXCLUDED.description, model_version = EXCLUDED.model_version,
    {_SET_PROFILE_ACTIVE}, configuration = EXCLUDED.configuration
RETURNING {PROFILE_COLUMNS}
""")

# With an id, the name may change: that is how a profile is renamed.
_UPDATE_PROFILE = NamedSQL.compile(f"""
UPDATE assistant_profiles SET
    name = :name, description = :description, model_version = :model_version,
    {_SET_PROFILE_ACTIVE}, configuration = :configuration::jsonb
WHERE id = :id
RETURNING {PROFILE_COLUMNS}
""")

# The whole capability list in one statement: drop the ones no longer
# listed, upsert the rest from parallel arrays. A NULL is_enabled (left
# unset) is true for a new capability and keeps an existing one's value; as
# in _keep_if_null, the update looks the caller's value up by name, since
# EXCLUDED holds the coalesced one. Names are unique within the list.
_REPLACE_CAPABILITIES = """
WITH gone AS (
    DELETE FROM assistant_capabilities
    WHERE assistant_profile_id = $1 AND name <> ALL($2::text[])
), saved AS (
    INSERT INTO assistant_capabilities
        (assistant_profile_id, name, description, parameters, is_enabled, priority)
    SELECT $1, name, description, parameters, coalesce(is_enabled, true), priority
    FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::bool[], $6::int[])
        AS given (name, description, parameters, is_enabled, priority)
    ON CONFLICT (assistant_profile_id, name) DO UPDATE SET
        description = EXCLUDED.description, parameters = EXCLUDED.parameters,
        is_enabled = coalesce(
            (SELECT g.is_enabled FROM unnest($2::text[], $5::bool[]) AS g (name, is_enabled)
             WHERE g.name = EXCLUDED.name),
            assistant_capabilities.is_enabled),
        priority = EXCLUDED.priority
    RETURNING name, description, parameters, is_enabled, priority
)
SELECT * FROM saved ORDER BY priority DESC, name
"""


def preferences_from_row(row: asyncpg.Record) -> UserPreferences:
    return UserPreferences(
        user_id=row["user_id"],
        theme=row["theme"],
        notifications=row["notifications"],
        language=row["language"],
        timezone=row["timezone"],
        updated_at=row["updated_at"],
    )


def user_from_row(row: asyncpg.Record, cipher: FieldCipher | None) -> User:
    """A users row (USER_COLUMNS) as a User; Undecryptable if its keys are not configured."""
    return User(
        id=row["id"],
        email=row["email"],
        is_active=row["is_active"],
        subjects=list(row["subjects"]),
        grade_levels=list(row["grade_levels"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        **opened_fields(cipher, row),
    )


def _category(row: asyncpg.Record) -> SubjectCategory:
    return SubjectCategory(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        parent_id=row["parent_id"],
        is_active=row["is_active"],
        metadata=row["metadata"],
        level=row["level"],
    )


def _capability(row: asyncpg.Record) -> Capability:
    return Capability(
        name=row["name"],
        description=row["description"],
        parameters=row["parameters"],
        is_enabled=row["is_enabled"],
        priority=row["priority"],
    )


def _rejected(field: str, exc: asyncpg.CheckViolationError) -> InvalidArgument:
    # domain.validation admits only values these constraints accept; reaching
    # this means the two disagree, but the caller still sent the bad value.
    return InvalidArgument.one(field, f"rejected by the database ({exc.constraint_name})")


class RegistryStore:
    def __init__(self, db: Database, cipher: FieldCipher | None = None) -> None:
        """`cipher`: the keys users' sensitive fields are encrypted with; None: plaintext."""
        self._db = db
        self._cipher = cipher

    @property
    def cipher(self) -> FieldCipher | None:
        return self._cipher

    @property
    def database(self) -> Database:
        """The pool this store uses, for stores built beside it (services.admin)."""
        return self._db

    async def upsert_user(self, user: User) -> User:
        """Create or replace a user, matched by id if it has one, else by email."""
        params = {c: getattr(user, c) for c in _USER_FIELDS if c != "encrypted_sensitive_data"}
        params = sealed_fields(self._cipher, params)
        params["id"] = user.id
        params["is_active"] = user.is_active
        statement = _UPSERT_USER_BY_EMAIL if user.id is None else _UPSERT_USER_BY_ID
        try:
            async with self._db.connection() as conn:
                row = await conn.fetchrow(statement.sql, *statement.args(params))
                audit.note(user_id=row["id"])
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(f"email {user.email} belongs to another user") from exc
        except asyncpg.CheckViolationError as exc:
            raise _rejected("user", exc) from exc
        assert row is not None
        return user_from_row(row, self._cipher)

    async def upsert_preferences(self, prefs: UserPreferences) -> UserPreferences:
        audit.note(user_id=prefs.user_id)
        try:
            row = await self._db.fetchrow(
                _UPSERT_PREFERENCES,
                prefs.user_id,
                prefs.theme,
                prefs.notifications,
                prefs.language,
                prefs.timezone,
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound("user", prefs.user_id) from exc
        except asyncpg.CheckViolationError as exc:
            raise _rejected("preferences", exc) from exc
        assert row is not None
        return preferences_from_row(row)

    async def upsert_subject_category(self, category: SubjectCategory) -> SubjectCategory:
        """Create or replace a category, matched by id if it has one (a rename), else by name.

        Its level is its parent's plus one, and its descendants' levels follow.
        """
        params = {
            "id": category.id,
            "name": category.name,
            "description": category.description,
            "parent_id": category.parent_id,
            "is_active": category.is_active,
            "metadata": category.metadata,
        }
        async with self._db.connection() as conn:
            await conn.execute(_LOCK_CATEGORIES)
            place = await conn.fetchrow(_PLACE_CATEGORY.sql, *_PLACE_CATEGORY.args(params))
            assert place is not None
            if category.id is not None and place["self_id"] is None:
                raise NotFound("subject_category", category.id)
            if place["cycle"]:
                raise FailedPrecondition(
                    f"subject category {category.parent_id} is {category.name!r} itself or"
                    " one of its sub-categories, so it cannot be its parent",
                    reason="SUBJECT_CATEGORY_CYCLE",
                )
            statement = _UPSERT_CATEGORY if category.id is None else _UPDATE_CATEGORY
            try:
                row = await conn.fetchrow(statement.sql, *statement.args(params))
                assert row is not None
                audit.note(subject_category_id=row["id"])
                if place["self_id"] is not None:
                    await conn.execute(_RELEVEL_DESCENDANTS, row["id"], row["level"])
            except asyncpg.ForeignKeyViolationError as exc:
                raise NotFound("subject_category", category.parent_id) from exc
            except asyncpg.UniqueViolationError as exc:
                raise AlreadyExists(
                    f"subject category name {category.name!r} is taken by another category"
                ) from exc
            except asyncpg.CheckViolationError as exc:
                if exc.constraint_name != _LEVEL_CHECK:
                    raise _rejected("category", exc) from exc
                raise FailedPrecondition(
                    f"subject category {category.name!r} or one of its sub-categories would be"
                    f" deeper than {MAX_SUBJECT_LEVEL} levels",
                    reason="SUBJECT_CATEGORY_TOO_DEEP",
                ) from exc
        return _category(row)

    async def upsert_assistant_profile(self, profile: AssistantProfile) -> AssistantProfile:
        """Create or replace a profile, matched by id if it has one (a rename), else by name.

        Its capabilities are replaced by the given list, in the same transaction.
        """
        params = {
            "id": profile.id,
            "name": profile.name,
            "description": profile.description,
            "model_version": profile.model_version,
            "is_active": profile.is_active,
            "configuration": profile.configuration,
        }
        caps = profile.capabilities
        statement = _UPSERT_PROFILE if profile.id is None else _UPDATE_PROFILE
        try:
            async with self._db.connection() as conn:
                row = await conn.fetchrow(statement.sql, *statement.args(params))
                if row is None:
                    raise NotFound("assistant_profile", profile.id)
                audit.note(assistant_profile_id=row["id"])
                cap_rows = await conn.fetch(
                    _REPLACE_CAPABILITIES,
                    row["id"],
                    [c.name for c in caps],
                    [c.description for c in caps],
                    [c.parameters for c in caps],
                    [c.is_enabled for c in caps],
                    [c.priority for c in caps],
                )
        except asyncpg.UniqueViolationError as exc:
            raise AlreadyExists(
                f"assistant profile name {profile.name!r} is taken by another profile"
            ) from exc
        except asyncpg.CheckViolationError as exc:
            raise _rejected("profile", exc) from exc
        return AssistantProfile(
            id=row["id"],
            name=row["name"],
            description=row["description"],
            model_version=row["model_version"],
            is_active=row["is_active"],
            configuration=row["configuration"],
            capabilities=[_capability(r) for r in cap_rows],
        )
