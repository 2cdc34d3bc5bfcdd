"""memory_interactions and audit_log partitioned by time, with a retention job's functions.

Revision ID: 0018
Revises: 0017

Recall logs about ten interaction rows per call (~400M rows a day at full
rate) and nothing removed them; the audit log grows forever too. Both are
now declaratively range-partitioned by their time column, so that retention
is DROP TABLE of a whole old partition: O(1) in the rows it removes, no
dead tuples, no vacuum debt (docs/schema.md has the measurements).

Granularity. memory_interactions by day: at full rate a day is ~400M rows,
so a partition stays a size vacuum and an index rebuild can handle, and the
default 90-day retention keeps ~100 partitions (an unfiltered ListInteractions
page probes each one's index once: measured in docs/schema.md). audit_log by
month: a few rows per call, a retention of at least a year, so ~14 partitions.

Keys. memory_interactions' primary key is (user_id, "timestamp", id): a key of
a partitioned table must contain the partition key, a Citus distribution by
user_id needs user_id in it, and in this order it is exactly the index
ListInteractions' keyset walk needs (a user's rows newest first, ties by id),
so it replaces ix_memory_interactions_user_id_timestamp: one index fewer per
insert than before. id stays unique in practice (one identity sequence on the
parent) but is no longer a key on its own: the one lookup by id (a replayed
RecordFeedback reading the interaction it logged) now also passes the user
and the time, which are its idempotency key's (storage/memories.py). The
composite foreign key to user_memories (migration 0008) is on the parent, so
deleting a memory still cascades to its interactions in every partition
(ix_memory_interactions_memory_id_timestamp serves that in each). audit_log's
key is (occurred_at, id), replacing ix_audit_log_occurred_at.

A DEFAULT partition on each, as the safety net: an insert never fails for
want of a partition, whatever the job did. The job (faraday_adopt_default_rows)
moves any rows it caught into a partition of their own period, which the
retention drop then treats as any other. The price is known: DETACH ...
CONCURRENTLY is not allowed with a DEFAULT partition (we DROP, which takes
ACCESS EXCLUSIVE on the parent only for the moment of the drop, under the
job's lock_timeout), attaching a partition scans the (normally empty) default
partition, and plans use Merge Append rather than an ordered Append.

Existing data is not copied. Each table is renamed to <table>_history, its
identity sequence's position handed to the new parent, its new primary key
built as a unique index (`CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS
memory_interactions_history_pkey ON memory_interactions (user_id,
"timestamp", id)` before upgrading skips that build under the migration's
lock; likewise audit_log_history_pkey ON audit_log (occurred_at, id)), a
CHECK constraint proves every row lies before the boundary (the end of the
current day, or month for audit_log, or of the latest row's if later), and the
table is ATTACHed as the partition [MINVALUE, boundary). Its other indexes and
foreign keys match the parent's and are adopted as they are. The old data
then ages out as one partition. Cost: one index build and two sequential
scans, no row rewritten (measured in docs/schema.md).

Rights. The service roles own nothing and cannot create or drop tables. The
job runs three SECURITY DEFINER functions owned by the migrating role (the
schema owner), with a fixed search_path, every name schema-qualified, and
EXECUTE revoked from PUBLIC and granted to faraday_platform alone (the role
of the sweeps; faraday_app, which user-scoped calls use, cannot):

- faraday_add_partition(parent, periods_ahead): the partition of the current
  period + periods_ahead (0..92 days for memory_interactions, 0..3 months for
  audit_log); nothing if that range already has one.
- faraday_adopt_default_rows(parent): the partition of the oldest row the
  DEFAULT partition holds, with every row of that period moved into it.
- faraday_drop_expired_partition(parent, retention_days): drops the oldest
  partition wholly older than the retention, which may not be below 1 day
  for memory_interactions and 365 days for audit_log, and writes an audit row
  (method faraday_drop_expired_partition) in the same transaction.

faraday_platform may also call faraday_partition_bounds(parent), which lists
a table's partitions and their bounds from the catalog.

Creating a partition (CREATE TABLE + ATTACH, not PARTITION OF) holds SHARE
ROW EXCLUSIVE on the parent: reads go on, writes wait for the milliseconds
it takes. ATTACH alone needs only SHARE UPDATE EXCLUSIVE, but then an
insert that had routed its row with the old partition map reached the
DEFAULT partition after the ATTACH and failed its partition check (seen in
tests/storage/test_partitions.py): an insert must never fail.

`parent` must be one of the two tables. Each call does one thing in its own
transaction under an advisory lock, so runs of several service processes
serialise and the job never holds one partition's locks while waiting for
another's. The audit log stays append-only for the service: INSERT and
SELECT on the parent, no privilege at all on any partition (the history
partitions' old grants and policies are removed), so the only way an audit
row disappears is a whole partition older than a year.

Partitions are created without grants and without row-level security: the
service roles reach rows only through the parents, whose policies (those of
0005, moved from the old tables) apply to every partition.

Downgrade copies the rows back into unpartitioned tables (O(rows)).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from alembic import op
from sqlalchemy import text

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("faraday_app", "faraday_platform")
PLATFORM_ROLE = "faraday_platform"
# Snapshot of tables.INTERACTION_TYPES (migration 0014).
_INTERACTION_TYPES = ("store", "recall", "update", "feedback", "merge")
_POLICY = "((SELECT faraday_sees_all()) OR user_id = (SELECT faraday_acting_user()))"
# How many periods the migration creates ahead (the job keeps it so).
_DAYS_AHEAD = 7

_INTERACTION_COLUMNS = f"""
    id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL,
    memory_id bigint NOT NULL,
    user_id uuid NOT NULL,
    interaction_type varchar(50) NOT NULL,
    "timestamp" timestamptz NOT NULL DEFAULT now(),
    context jsonb,
    feedback jsonb,
    duration integer,
    success boolean,
    error_message text,
    metadata jsonb,
    CONSTRAINT ck_memory_interactions_valid_interaction_type
        CHECK (interaction_type IN ({", ".join(f"'{t}'" for t in _INTERACTION_TYPES)})),
    CONSTRAINT ck_memory_interactions_duration_not_negative
        CHECK (duration IS NULL OR duration >= 0),
    CONSTRAINT fk_memory_interactions_user_id_users
        FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT fk_memory_interactions_memory_id_user_id_user_memories
        FOREIGN KEY (memory_id, user_id) REFERENCES user_memories (id, user_id) ON DELETE CASCADE
"""
_AUDIT_COLUMNS = """
    id bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor_kind varchar(20) NOT NULL,
    actor varchar(255) NOT NULL,
    method varchar(200) NOT NULL,
    outcome varchar(40) NOT NULL,
    peer varchar(255),
    resource jsonb NOT NULL DEFAULT '{}'::jsonb
"""

# Per parent: its time column, its period (date_trunc unit), the primary key
# of the partitioned table and the index that key makes redundant.
_PARENTS = {
    "memory_interactions": {
        "column": '"timestamp"',
        "unit": "day",
        "columns": _INTERACTION_COLUMNS,
        "key": 'user_id, "timestamp", id',
        "old_key": "id",
        "replaced_index": "ix_memory_interactions_user_id_timestamp",
        "replaced_index_columns": 'user_id, "timestamp" DESC',
        "indexes": {"ix_memory_interactions_memory_id_timestamp": 'memory_id, "timestamp" DESC'},
        "grants": "SELECT, INSERT, UPDATE, DELETE",
        "rls": True,
    },
    "audit_log": {
        "column": "occurred_at",
        "unit": "month",
        "columns": _AUDIT_COLUMNS,
        "key": "occurred_at, id",
        "old_key": "id",
        "replaced_index": "ix_audit_log_occurred_at",
        "replaced_index_columns": "occurred_at",
        "indexes": {"ix_audit_log_actor": "actor, occurred_at"},
        # Append-only (migration 0002).
        "grants": "SELECT, INSERT",
        "rls": False,
    },
}

# The functions' advisory lock: one partition change at a time per database.
_LOCK_KEY = 7_270_017

# A parent's partitions and their bounds, read back from the catalog
# (pg_get_expr prints the bounds in the session's TimeZone and DateStyle,
# and the same session parses them back). NULL lower: MINVALUE.
_BOUNDS = """
CREATE FUNCTION faraday_partition_bounds(parent text)
RETURNS TABLE (partition text, lower_bound timestamptz, upper_bound timestamptz,
               is_default boolean)
LANGUAGE sql STABLE SET search_path = pg_catalog, public, pg_temp AS $$
    SELECT c.relname::text,
           CASE WHEN b.m[1] = 'MINVALUE' THEN NULL ELSE btrim(b.m[1], '''')::timestamptz END,
           CASE WHEN b.m[2] = 'MAXVALUE' THEN NULL ELSE btrim(b.m[2], '''')::timestamptz END,
           b.m IS NULL
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                            '^FOR VALUES FROM \\((.+)\\) TO \\((.+)\\)$') AS m) b
    WHERE i.inhparent = ('public.' || quote_ident(parent))::regclass
    ORDER BY 2 NULLS FIRST, 4
$$
"""

# Which table, its time column and its period; raises for any other table.
_PARENT_SPEC = """
CREATE FUNCTION faraday_partition_spec(parent text, OUT time_column text, OUT unit text)
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
    CASE parent
        WHEN 'memory_interactions' THEN time_column := 'timestamp'; unit := 'day';
        WHEN 'audit_log' THEN time_column := 'occurred_at'; unit := 'month';
        ELSE RAISE EXCEPTION 'not a time-partitioned table: %', parent
                 USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END $$
"""

# The partition of the period starting at period_start (NULL if a partition
# already covers part of it), with the rows the DEFAULT partition caught for
# that period moved in. CREATE + ATTACH rather than CREATE ... PARTITION OF,
# which locks the parent ACCESS EXCLUSIVE: here reads of the parent go on,
# writes wait for the few milliseconds of the creation (see below why they
# must), and the DEFAULT partition is locked ACCESS EXCLUSIVE while rows move
# and PostgreSQL checks it holds no row of the new range. Each lock is
# waited for at most the caller's lock_timeout.
_CREATE = f"""
CREATE FUNCTION faraday_create_partition(parent text, period_start timestamptz)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET "TimeZone" = 'UTC' AS $$
DECLARE
    spec record;
    period_end timestamptz;
    name text;
BEGIN
    SELECT * INTO spec FROM faraday_partition_spec(parent);
    period_end := period_start + ('1 ' || spec.unit)::interval;
    name := parent || '_p'
        || to_char(period_start, CASE spec.unit WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END);
    IF period_start IS DISTINCT FROM date_trunc(spec.unit, period_start) THEN
        RAISE EXCEPTION '% does not start a %', period_start, spec.unit
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock({_LOCK_KEY});
    IF EXISTS (SELECT 1 FROM faraday_partition_bounds(parent) b
               WHERE NOT b.is_default
                 AND coalesce(b.lower_bound, '-infinity') < period_end
                 AND b.upper_bound > period_start) THEN
        RETURN NULL;
    END IF;
    -- Writes wait (readers do not): an insert that routed its row with the
    -- partition map from before the ATTACH would put it in the DEFAULT
    -- partition after, and fail its partition check. Then the lock ATTACH
    -- takes on the DEFAULT partition, first, so that no row reaches it
    -- between the move below and the ATTACH's check of it.
    EXECUTE format('LOCK TABLE public.%I IN SHARE ROW EXCLUSIVE MODE', parent);
    EXECUTE format('LOCK TABLE public.%I IN ACCESS EXCLUSIVE MODE', parent || '_default');
    EXECUTE format('CREATE TABLE public.%I'
                   ' (LIKE public.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name, parent);
    EXECUTE format('WITH moved AS (DELETE FROM public.%I WHERE %I >= $1 AND %I < $2 RETURNING *)'
                   ' INSERT INTO public.%I SELECT * FROM moved',
                   parent || '_default', spec.time_column, spec.time_column, name)
        USING period_start, period_end;
    EXECUTE format('ALTER TABLE public.%I ATTACH PARTITION public.%I FOR VALUES FROM (%L) TO (%L)',
                   parent, name, period_start, period_end);
    RETURN name;
END $$
"""

_ADD = """
CREATE FUNCTION faraday_add_partition(parent text, periods_ahead integer) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET "TimeZone" = 'UTC' AS $$
DECLARE
    spec record;
    most integer;
BEGIN
    SELECT * INTO spec FROM faraday_partition_spec(parent);
    most := CASE spec.unit WHEN 'day' THEN 92 ELSE 3 END;
    IF periods_ahead IS NULL OR periods_ahead < 0 OR periods_ahead > most THEN
        RAISE EXCEPTION 'periods_ahead must be 0..% for %', most, parent
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN faraday_create_partition(
        parent, date_trunc(spec.unit, now()) + periods_ahead * ('1 ' || spec.unit)::interval);
END $$
"""

_ADOPT = f"""
CREATE FUNCTION faraday_adopt_default_rows(parent text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET "TimeZone" = 'UTC' AS $$
DECLARE
    spec record;
    oldest timestamptz;
BEGIN
    SELECT * INTO spec FROM faraday_partition_spec(parent);
    PERFORM pg_advisory_xact_lock({_LOCK_KEY});
    EXECUTE format('SELECT min(%I) FROM public.%I', spec.time_column, parent || '_default')
        INTO oldest;
    IF oldest IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN faraday_create_partition(parent, date_trunc(spec.unit, oldest));
END $$
"""

# DROP rather than DETACH ... CONCURRENTLY, which a DEFAULT partition rules
# out (and which cannot run in a function): ACCESS EXCLUSIVE on the parent
# for the moment of the drop, which the caller bounds with lock_timeout.
_DROP = f"""
CREATE FUNCTION faraday_drop_expired_partition(parent text, retention_days integer)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET "TimeZone" = 'UTC' AS $$
DECLARE
    least_days integer := CASE parent WHEN 'audit_log' THEN 365 ELSE 1 END;
    victim record;
BEGIN
    PERFORM faraday_partition_spec(parent);  -- raises for any other table
    IF retention_days IS NULL OR retention_days < least_days OR retention_days > 36500 THEN
        RAISE EXCEPTION 'retention_days of % must be % to 36500', parent, least_days
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock({_LOCK_KEY});
    SELECT * INTO victim FROM faraday_partition_bounds(parent) b
    WHERE NOT b.is_default AND b.upper_bound <= now() - make_interval(days => retention_days)
    ORDER BY b.upper_bound LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    EXECUTE format('DROP TABLE public.%I', victim.partition);
    INSERT INTO public.audit_log (actor_kind, actor, method, outcome, resource)
    VALUES ('database', session_user, 'faraday_drop_expired_partition', 'OK',
            jsonb_build_object('table', parent, 'partition', victim.partition,
                               'rows_before', victim.upper_bound,
                               'retention_days', retention_days));
    RAISE LOG 'faraday: dropped partition % of % (rows before %, retention % days)',
        victim.partition, parent, victim.upper_bound, retention_days;
    RETURN victim.partition;
END $$
"""

_FUNCTIONS = {
    "faraday_partition_bounds": ("text", _BOUNDS),
    "faraday_partition_spec": ("text", _PARENT_SPEC),
    "faraday_create_partition": ("text, timestamptz", _CREATE),
    "faraday_add_partition": ("text, integer", _ADD),
    "faraday_adopt_default_rows": ("text", _ADOPT),
    "faraday_drop_expired_partition": ("text, integer", _DROP),
}
# What faraday_platform may call; the other functions are internal.
_JOB_FUNCTIONS = (
    "faraday_partition_bounds",
    "faraday_add_partition",
    "faraday_adopt_default_rows",
    "faraday_drop_expired_partition",
)


def _boundary(table: str, column: str, unit: str) -> datetime:
    """Where the history partition ends: the end of the current period, or of
    the latest row's if that is later."""
    value: datetime = (
        op.get_bind()
        .execute(
            text(
                f"SELECT (date_trunc('{unit}', greatest(now(), max({column})) AT TIME ZONE 'UTC')"
                f" + interval '1 {unit}') AT TIME ZONE 'UTC' FROM {table}"
            )
        )
        .scalar_one()
    )
    return value


def _grant(table: str, privileges: str) -> None:
    for role in ROLES:
        op.execute(f"GRANT {privileges} ON {table} TO {role}")
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {table}_id_seq TO {role}")


def _rename_not_null(table: str, renamed: str) -> None:
    """Give a renamed table's NOT NULL constraints (named since PostgreSQL 18)
    its new name, so a new `table` gets the names the metadata's would."""
    names = (
        op.get_bind()
        .execute(
            text(
                "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:renamed AS regclass)"
                " AND contype = 'n' AND starts_with(conname, :prefix)"
            ),
            {"renamed": renamed, "prefix": f"{table}_"},
        )
        .scalars()
        .all()
    )
    for name in names:
        new = renamed + name.removeprefix(table)
        op.execute(f"ALTER TABLE {renamed} RENAME CONSTRAINT {name} TO {new}")


def _protect(table: str) -> None:
    """Row-level security on `table` as migrations 0002 and 0005 set it."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY {table}_owner ON {table} USING {_POLICY} WITH CHECK {_POLICY}")


def _partition(table: str, spec: dict[str, object]) -> None:
    column, unit, key = spec["column"], str(spec["unit"]), spec["key"]
    history = f"{table}_history"
    next_id = op.get_bind().execute(text(f"SELECT nextval('{table}_id_seq')")).scalar_one()
    boundary = _boundary(table, str(column), unit)

    op.execute(f"ALTER TABLE {table} RENAME TO {history}")
    _rename_not_null(table, history)
    # Its rows are reached through the parent only.
    for role in ROLES:
        op.execute(f"REVOKE ALL ON {history} FROM {role}")
    if spec["rls"]:
        op.execute(f"DROP POLICY {table}_owner ON {history}")
        op.execute(f"ALTER TABLE {history} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {history} DISABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {history} ALTER COLUMN id DROP IDENTITY")  # and its sequence
    op.execute(f"ALTER TABLE {history} DROP CONSTRAINT pk_{table}")
    op.execute(f"DROP INDEX {spec['replaced_index']}")
    op.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {history}_pkey ON {history} ({key})")
    op.execute(f"ALTER TABLE {history} ADD PRIMARY KEY USING INDEX {history}_pkey")
    indexes = dict(spec["indexes"])  # type: ignore[call-overload]
    for index in indexes:
        op.execute(f"ALTER INDEX {index} RENAME TO {index}_history")
    op.execute(
        f"ALTER TABLE {history} ADD CONSTRAINT {history}_bound"
        f" CHECK ({column} < '{boundary.isoformat()}')"
    )

    op.execute(
        f"CREATE TABLE {table} ({spec['columns']}, CONSTRAINT pk_{table} PRIMARY KEY ({key}))"
        f" PARTITION BY RANGE ({column})"
    )
    op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {next_id}, false)")
    for index, columns in indexes.items():
        op.execute(f"CREATE INDEX {index} ON {table} ({columns})")
    op.execute(
        f"ALTER TABLE {table} ATTACH PARTITION {history}"
        f" FOR VALUES FROM (MINVALUE) TO ('{boundary.isoformat()}')"
    )
    op.execute(f"ALTER TABLE {history} DROP CONSTRAINT {history}_bound")
    op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    _grant(table, str(spec["grants"]))
    if spec["rls"]:
        _protect(table)


def upgrade() -> None:
    for definition in (_BOUNDS, _PARENT_SPEC, _CREATE, _ADD, _ADOPT, _DROP):
        op.execute(definition)
    for name, (arguments, _) in _FUNCTIONS.items():
        op.execute(f"REVOKE ALL ON FUNCTION {name}({arguments}) FROM PUBLIC")
    for name in _JOB_FUNCTIONS:
        op.execute(f"GRANT EXECUTE ON FUNCTION {name}({_FUNCTIONS[name][0]}) TO {PLATFORM_ROLE}")
    for table, spec in _PARENTS.items():
        _partition(table, spec)
    op.execute(
        "SELECT faraday_add_partition('memory_interactions', d)"
        f" FROM generate_series(0, {_DAYS_AHEAD}) d"
    )
    op.execute("SELECT faraday_add_partition('audit_log', m) FROM generate_series(0, 1) m")


def _unpartition(table: str, spec: dict[str, object]) -> None:
    # Built beside the partitioned table, then given its names.
    flat = f"{table}_unpartitioned"
    op.execute(f"CREATE TABLE {flat} ({spec['columns']}, CONSTRAINT {flat}_pkey PRIMARY KEY (id))")
    op.execute(f"INSERT INTO {flat} SELECT * FROM {table}")
    next_id = op.get_bind().execute(text(f"SELECT nextval('{table}_id_seq')")).scalar_one()
    op.execute(f"DROP TABLE {table}")
    op.execute(f"ALTER TABLE {flat} RENAME TO {table}")
    op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {flat}_pkey TO pk_{table}")
    _rename_not_null(flat, table)
    op.execute(f"ALTER SEQUENCE {flat}_id_seq RENAME TO {table}_id_seq")
    op.execute(f"SELECT setval('{table}_id_seq', {next_id}, false)")
    for index, columns in dict(spec["indexes"]).items():  # type: ignore[call-overload]
        op.execute(f"CREATE INDEX {index} ON {table} ({columns})")
    op.execute(
        f"CREATE INDEX {spec['replaced_index']} ON {table} ({spec['replaced_index_columns']})"
    )
    _grant(table, str(spec["grants"]))
    if spec["rls"]:
        _protect(table)


def downgrade() -> None:
    for table, spec in _PARENTS.items():
        _unpartition(table, spec)
    for name, (arguments, _) in reversed(_FUNCTIONS.items()):
        op.execute(f"DROP FUNCTION {name}({arguments})")
