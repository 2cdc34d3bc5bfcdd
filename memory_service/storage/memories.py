"""Every SQL statement on user_memories, memory_interactions and memory_revisions."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import asyncpg

from memory_service.domain import audit, ranking
from memory_service.domain.bm25 import K1, B
from memory_service.domain.dedup import (
    NO_DEDUP,
    Dedup,
    DedupPolicy,
    Existing,
    Stored,
    StoreOutcome,
    merged,
)
from memory_service.domain.errors import (
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    StaleEtag,
    UserInactive,
)
from memory_service.domain.models import (
    Embedding,
    Feedback,
    Interaction,
    InteractionFilter,
    InteractionType,
    Memory,
    MemoryFilter,
    MemoryPatch,
    MemoryRevision,
    NewMemory,
    Page,
    RecallQuery,
    ScoredMemory,
)
from memory_service.domain.principal import EVERYTHING, Visibility
from memory_service.domain.validation import EMBEDDING_MODEL_NAME, SMALLEST_POSITIVE
from memory_service.storage.database import Database
from memory_service.storage.dedup import (
    exact_sql,
    lock_for_dedup,
    merge_context,
    merge_sql,
    semantic_sql,
)
from memory_service.storage.embeddings import vector_text
from memory_service.storage.named_sql import NamedSQL
from memory_service.storage.recall_log import RecallLog
from memory_service.storage.tables import IMPORTANCE_BANDS

MEMORY_COLUMNS = (
    "id, user_id, assistant_profile_id, content, context, importance, category, tags, source,"
    " confidence, version, created_at, updated_at, last_accessed, expires_at, metadata,"
    " import_id"
)
INTERACTION_COLUMNS = 'id, memory_id, user_id, interaction_type, "timestamp", context, feedback'
REVISION_COLUMNS = (
    "id, memory_id, user_id, version, content, importance, category, tags, metadata, expires_at,"
    " changed_by, changed_at"
)

_FOREIGN_KEYS = {
    "fk_user_memories_user_id_users": "user",
    "fk_user_memories_assistant_profile_id_assistant_profiles": "assistant_profile",
}

# The caller's visibility (domain.principal.Visibility), ANDed into every
# statement that names a memory by id: another user's memory, or another
# assistant's for a profile-limited credential, behaves as if missing.
# Row-level security (migration 0002) is the second wall behind this one.
_VISIBLE = """(:owner::uuid IS NULL OR user_id = :owner)
    AND (:profiles::int[] IS NULL OR assistant_profile_id IS NULL
         OR assistant_profile_id = ANY(:profiles::int[]))"""

# What the caller may change: as _VISIBLE, but a profile-limited credential
# only its own profiles' memories, not the ones shared by all assistants
# (docs/security.md). Row-level security (migration 0006) holds the same rule.
_WRITABLE = """(:owner::uuid IS NULL OR user_id = :owner)
    AND (:profiles::int[] IS NULL OR assistant_profile_id = ANY(:profiles::int[]))"""

# An inactive user's memories are read-only (memory_service.proto): every
# statement that writes one (store, update, feedback) carries this condition
# in its WHERE. So check and write see one snapshot, the check costs one
# primary-key probe of users and no round trip, and a write that fails it
# changes nothing at all, its interaction, embedding and request key
# included. A deactivation that commits while such a statement runs orders
# after it, as if it had come a moment later. Deletes do not check: erasure
# must not depend on the account's state.
_USER_ACTIVE = "EXISTS (SELECT FROM users WHERE users.id = :user_id::uuid AND users.is_active)"
_OWNER_ACTIVE = """EXISTS (SELECT FROM users
               WHERE users.id = user_memories.user_id AND users.is_active)"""

_STORE_VALUES = """:user_id, :assistant_profile_id, :content, :context, :importance,
            :category, :tags, :source, :confidence, :expires_at, :metadata"""
_STORE_COLUMNS = """user_id, assistant_profile_id, content, context, importance,
                               category, tags, source, confidence, expires_at, metadata"""

# The memory's embedding (where the server has pgvector: migration 0011),
# written by the same statement as the memory.
_EMBED = """, embedded AS (
    INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)
    SELECT user_id, id, :model, :embedding::text::vector FROM m
)"""


@functools.cache
def _store_sql(once: bool, embedded: bool) -> NamedSQL:
    """StoreMemory's statement: the memory, its `store` interaction, its embedding.

    With a request id (`once`): the key row claims the memory's id up front,
    so the key and the memory are written by one statement, or neither is. A
    racing retry waits on the key's unique index until the first commits,
    then finds the key taken (ON CONFLICT DO NOTHING) and writes nothing.

    Nothing at all is written, and no row returned, unless the user exists
    and is active (_USER_ACTIVE); the memory follows the key, so the key
    checks it for both.
    """
    if once:
        head = f"""WITH key AS (
    INSERT INTO idempotency_keys (caller, request_id, method, request_hash, user_id, memory_id)
    SELECT :caller, :request_id, 'StoreMemory', :request_hash, :user_id,
           nextval(pg_get_serial_sequence('user_memories', 'id'))
    WHERE {_USER_ACTIVE}
    ON CONFLICT DO NOTHING
    RETURNING memory_id
), m AS (
    INSERT INTO user_memories (id, {_STORE_COLUMNS})
    SELECT key.memory_id, {_STORE_VALUES} FROM key
    RETURNING {MEMORY_COLUMNS}
)"""
    else:
        head = f"""WITH m AS (
    INSERT INTO user_memories ({_STORE_COLUMNS})
    SELECT {_STORE_VALUES}
    WHERE {_USER_ACTIVE}
    RETURNING {MEMORY_COLUMNS}
)"""
    return NamedSQL.compile(f"""{head}, logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type)
    SELECT id, user_id, 'store' FROM m
){_EMBED if embedded else ""}
SELECT {MEMORY_COLUMNS} FROM m
""")


_EXACT = exact_sql(MEMORY_COLUMNS)

_KEY = NamedSQL.compile("""
SELECT method, request_hash, memory_id, interaction_id, created_at FROM idempotency_keys
WHERE user_id = :user_id AND caller = :caller AND request_id = :request_id
""")

# The owner of a memory named by its id alone (GetMemory, UpdateMemory,
# DeleteMemory, RecordFeedback, ListMemoryRevisions, ListInteractions by
# memory, for a caller that may see every user's memories): the one
# statement here that finds a memory without its user. Every statement after
# it names the memory by (user_id, id), so with the tables sharded by user
# (docs/scaling.md) only this probe of the unique (id, user_id) index goes to
# every shard.
OWNER_OF_MEMORY = "SELECT user_id FROM user_memories WHERE id = $1"

_GET = NamedSQL.compile(f"""
SELECT {MEMORY_COLUMNS} FROM user_memories WHERE user_id = :user_id AND id = :id AND {_VISIBLE}
""")
_VERSION = NamedSQL.compile(f"""
SELECT version, assistant_profile_id, user_id, {_OWNER_ACTIVE} AS owner_active
FROM user_memories WHERE user_id = :user_id AND id = :id AND {_VISIBLE}
""")

# Why a store wrote nothing: NULL if the user does not exist (or is not the
# caller's to see), else whether it is active.
_USER_IS_ACTIVE = "SELECT is_active FROM users WHERE id = $1"

_DELETE = NamedSQL.compile(f"""
DELETE FROM user_memories
WHERE user_id = :user_id AND id = :id AND (:version::int IS NULL OR version = :version)
  AND {_WRITABLE}
RETURNING user_id
""")

# The interaction a request key claimed, by the table's whole key: the key's
# user, and its creation time, which is the interaction's (both default to
# now(), the start of the transaction that wrote them), so that only the one
# partition of that time is probed (migration 0018).
_GET_INTERACTION = f"""
SELECT {INTERACTION_COLUMNS} FROM memory_interactions
WHERE user_id = $1 AND "timestamp" = $2 AND id = $3
"""

# The filters ListMemories and RecallMemories share beyond their own:
# metadata containment, update time and last-access time, each [from,
# before). A memory never recalled (last_accessed NULL) counts as accessed
# before every time. `@>` on jsonb is not leakproof, so under row-level
# security no index can serve it for the service role (a GIN index on
# metadata went unused, docs/schema.md): it is checked on each row the
# user_id indexes lead to.
_SHARED_FILTERS = """(:metadata::jsonb IS NULL OR metadata @> :metadata::jsonb)
          AND (:updated_from::timestamptz IS NULL OR updated_at >= :updated_from)
          AND (:updated_before::timestamptz IS NULL OR updated_at < :updated_before)
          AND (:accessed_from::timestamptz IS NULL OR last_accessed >= :accessed_from)
          AND (:accessed_before::timestamptz IS NULL OR last_accessed IS NULL
               OR last_accessed < :accessed_before)"""

_LIST = NamedSQL.compile(f"""
SELECT {MEMORY_COLUMNS} FROM user_memories
WHERE user_id = :user_id AND {_VISIBLE}
  AND (expires_at IS NULL OR expires_at > now())
  AND (:assistant_profile_id::int IS NULL OR assistant_profile_id = :assistant_profile_id)
  AND (cardinality(:categories::text[]) = 0 OR category = ANY(:categories::text[]))
  AND tags @> :tags::text[]
  AND {_SHARED_FILTERS}
  AND (:after_time::timestamptz IS NULL OR (created_at, id) < (:after_time, :after_id::bigint))
ORDER BY created_at DESC, id DESC
LIMIT :limit
""")

# A memory's revisions, newest first, if the caller may see the memory: no
# row at all when it may not (or it does not exist), one row of NULLs when it
# has no (more) revisions. The trigger of migration 0013 writes them; the
# service's SQL never does.
_LIST_REVISIONS = NamedSQL.compile(f"""
SELECT {", ".join("r." + c.strip() for c in REVISION_COLUMNS.split(","))}
FROM (SELECT id, user_id FROM user_memories
      WHERE user_id = :user_id AND id = :id AND {_VISIBLE}) m
LEFT JOIN LATERAL (
    SELECT {REVISION_COLUMNS} FROM memory_revisions r
    WHERE r.user_id = m.user_id AND r.memory_id = m.id
      AND (:before_id::bigint IS NULL OR r.id < :before_id)
    ORDER BY r.id DESC
    LIMIT :limit
) r ON true
""")

_FEEDBACK_TEMPLATE = """
WITH {key}old AS (
    SELECT id, importance FROM user_memories
    WHERE user_id = :user_id AND id = :id AND {writable} AND {owner_active} {key_exists}
    FOR UPDATE
), m AS (
    UPDATE user_memories u
    SET importance = (SELECT CASE WHEN moved < {smallest} THEN 0.0 ELSE moved END FROM (
            SELECT least(1.0, greatest(0.0, u.importance
                   + :learning_rate::float8 * (:target::float8 - u.importance))) AS moved) s),
        version = u.version + 1
    FROM old WHERE u.user_id = :user_id AND u.id = old.id
    RETURNING u.*, old.importance AS importance_before
), logged AS (
    INSERT INTO memory_interactions ({interaction_id}memory_id, user_id, interaction_type,
                                     context, feedback)
    SELECT {interaction_value}id, user_id, 'feedback', :context::jsonb,
           :feedback::jsonb || jsonb_build_object('importance_before', importance_before,
                                                  'importance_after', importance)
    FROM m
    RETURNING {interaction_columns}
)
SELECT {memory_columns},
       logged.id AS i_id, logged."timestamp" AS i_timestamp,
       logged.context AS i_context, logged.feedback AS i_feedback
FROM m, logged
"""

# As _STORE_ONCE: the key row claims the interaction's id; a replayed key
# leaves `key` empty and so the whole statement a no-op.
_FEEDBACK_KEY = """key AS (
    INSERT INTO idempotency_keys (caller, request_id, method, request_hash, user_id,
                                  memory_id, interaction_id)
    SELECT :caller, :request_id, 'RecordFeedback', :request_hash, user_id, id,
           nextval(pg_get_serial_sequence('memory_interactions', 'id'))
    FROM user_memories WHERE user_id = :user_id AND id = :id AND {writable} AND {owner_active}
    ON CONFLICT DO NOTHING
    RETURNING interaction_id
), """


def _feedback_sql(once: bool) -> NamedSQL:
    return NamedSQL.compile(
        _FEEDBACK_TEMPLATE.format(
            key=_FEEDBACK_KEY.format(writable=_WRITABLE, owner_active=_OWNER_ACTIVE)
            if once
            else "",
            writable=_WRITABLE,
            owner_active=_OWNER_ACTIVE,
            smallest=repr(SMALLEST_POSITIVE),
            key_exists="AND EXISTS (SELECT 1 FROM key)" if once else "",
            interaction_id="id, " if once else "",
            interaction_value="(SELECT interaction_id FROM key), " if once else "",
            interaction_columns=INTERACTION_COLUMNS,
            memory_columns=", ".join("m." + c.strip() for c in MEMORY_COLUMNS.split(",")),
        )
    )


_FEEDBACK = _feedback_sql(once=False)
_FEEDBACK_ONCE = _feedback_sql(once=True)

_LIST_INTERACTIONS = NamedSQL.compile(f"""
SELECT {INTERACTION_COLUMNS} FROM memory_interactions i
WHERE user_id = :user_id
  AND (:owner::uuid IS NULL OR user_id = :owner)
  AND (:profiles::int[] IS NULL OR EXISTS (
      SELECT 1 FROM user_memories m WHERE m.user_id = :user_id AND m.id = i.memory_id
      AND (m.assistant_profile_id IS NULL OR m.assistant_profile_id = ANY(:profiles::int[]))))
  AND (:memory_id::bigint IS NULL OR memory_id = :memory_id)
  AND (:type::text IS NULL OR interaction_type = :type)
  AND (:start_time::timestamptz IS NULL OR "timestamp" >= :start_time)
  AND (:end_time::timestamptz IS NULL OR "timestamp" < :end_time)
  AND (:after_time::timestamptz IS NULL OR ("timestamp", id) < (:after_time, :after_id::bigint))
ORDER BY "timestamp" DESC, id DESC
LIMIT :limit
""")

_SWEEP = """
DELETE FROM user_memories WHERE id IN (
    SELECT id FROM user_memories WHERE expires_at <= now()
    ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
"""

IDEMPOTENCY_KEY_DAYS = 7
_SWEEP_KEYS = f"""
DELETE FROM idempotency_keys WHERE ctid IN (
    SELECT ctid FROM idempotency_keys
    WHERE created_at < now() - interval '{IDEMPOTENCY_KEY_DAYS} days' LIMIT $1
)
"""


_RECALL_FILTERS = f"""user_id = :user_id
          AND (:profiles::int[] IS NULL OR assistant_profile_id IS NULL
               OR assistant_profile_id = ANY(:profiles::int[]))
          AND (expires_at IS NULL OR expires_at > now())
          AND (:assistant_profile_id::int IS NULL OR assistant_profile_id IS NULL
               OR assistant_profile_id = :assistant_profile_id)
          AND (cardinality(:categories::text[]) = 0 OR category = ANY(:categories::text[]))
          AND (cardinality(:tags::text[]) = 0 OR CASE WHEN :match_all_tags::bool
               THEN tags @> :tags::text[] ELSE tags && :tags::text[] END)
          AND (:context::jsonb IS NULL OR context @> :context::jsonb)
          AND importance >= :min_importance::float8
          AND (:created_from::timestamptz IS NULL OR created_at >= :created_from)
          AND (:created_before::timestamptz IS NULL OR created_at < :created_before)
          AND {_SHARED_FILTERS}"""

# domain.ranking.recency; the exponent is capped because PostgreSQL's power()
# raises "underflow" where Python's gives 0.0 (a 1-hour half-life and a
# year-old memory).
_RECENCY = f"""power(0.5::float8, least({ranking.MAX_HALF_LIVES}::float8,
                   greatest(extract(epoch FROM now() - updated_at)::float8, 0.0)
                   / :half_life_seconds::float8))"""

_RECALL_PARTS = f"""{MEMORY_COLUMNS},
               :w_importance::float8 * importance AS importance_score,
               :w_recency::float8 * {_RECENCY} AS recency_score"""


# Exact top-k without scoring every row of a heavy user. The score without
# query text is w_i * importance + w_r * recency(updated_at), both weights
# >= 0. importance_band is importance in tenths (the index is on user_id,
# importance_band, updated_at DESC). Within a band a row scores at most
# w_i * (band's upper edge) + w_r * recency(updated_at), so:
#   seed   - the newest :limit rows of each band, scored: their :limit-th
#            best score ("floor") is at most the true :limit-th best; and
#            since a band's newest row is in it, the highest `ceiling`
#            (w_i * band's upper edge + w_r * recency) bounds every row's
#            score without query text (used by _SCORED_BOUND below);
#   cuts   - per band, the oldest updated_at at which a row could still
#            reach the floor (-infinity: the whole band; infinity: none);
#   banded - every row newer than its band's cut, scored exactly.
# Every row of the true top :limit scores >= floor, so it is in `banded`.
# The floor is lowered by 1e-9 and the cut moved a second older, so float
# rounding only admits more rows. For a user with 68,000 memories this
# reads ~170 rows instead of all of them (about 1 ms as the service role,
# against 205 ms for the full scan). Under
# row-level security only leakproof comparisons can be index conditions,
# hence a stored band column rather than an expression (migration 0004). The
# OFFSET 0 keeps the per-band scan a nested loop: pulled up into a join, a
# generic plan hashed all of the user's rows (250 ms).
def _band_since(floor: str) -> str:
    """The oldest updated_at at which a row of the band can still score `floor` without text."""
    return f"""CASE
        WHEN {floor} - :w_importance::float8 * upper_edge <= 0 THEN '-infinity'::timestamptz
        WHEN :w_recency::float8 = 0 THEN 'infinity'::timestamptz
        ELSE now() - make_interval(secs => 1 + least(1e10, :half_life_seconds::float8
             * ln(:w_recency::float8 / ({floor} - :w_importance::float8 * upper_edge))
             / ln(2.0::float8)))
        END"""


_BANDED_CTES = f"""bands AS MATERIALIZED (
    SELECT b, least(1.0::float8, (b + 1) / 10.0::float8) AS upper_edge
    FROM generate_series(greatest(floor(:min_importance::float8 * 10)::int, 0),
                         {IMPORTANCE_BANDS - 1}) b
), seed AS MATERIALIZED (
    SELECT s.id, s.score, :w_importance::float8 * bands.upper_edge + s.recency_part AS ceiling
    FROM bands, LATERAL (
        SELECT id, :w_importance::float8 * importance + r.part AS score, r.part AS recency_part
        FROM user_memories, LATERAL (SELECT :w_recency::float8 * {_RECENCY} AS part) r
        WHERE {_RECALL_FILTERS} AND importance_band = bands.b
        ORDER BY updated_at DESC
        LIMIT :limit
    ) s
), cuts AS MATERIALIZED (
    SELECT b, {_band_since("floor")} AS since
    FROM bands, (
        SELECT coalesce((SELECT score FROM seed ORDER BY score DESC OFFSET :limit - 1 LIMIT 1),
                        '-Infinity'::float8) - 1e-9 AS floor
    ) bound
), banded AS (
    SELECT c.* FROM cuts, LATERAL (
        SELECT {_RECALL_PARTS}, 0.0::float8 AS relevance_score, 0.0::float8 AS semantic_score
        FROM user_memories
        WHERE {_RECALL_FILTERS} AND importance_band = cuts.b AND updated_at >= cuts.since
        OFFSET 0
    ) c
)"""


# BM25 (domain.bm25) from the user's term index (migration 0010): every
# lookup is an equality on (user_id, lexeme) (and memory_id), which the
# primary key serves for the service role under row-level security. A query
# of stop words only has no lexemes, and so no matches.
#
# Counting a term's df reads its postings once (index only) and keeps its
# best part, so `ub` bounds any memory's share of text score from that term.
# Up to FULLY_SCORED_POSTINGS postings in all, every match is scored. Above
# that (a heavy user's common word: "student" is in 43,000 of one user's
# 68,000 memories, 130 ms to score and 400 ms to fetch), the statement
# bounds before it reads:
#   pool_floor - the :limit-th best real score among a pool of likely
#                winners (the newest PROBE_SEED_FACTOR * :limit of each
#                importance band, and the semantic candidates), each probed
#                for its relevance, one primary-key lookup per term;
#   reach      - the memories whose importance and recency could, with the
#                best relevance any memory has, still reach that floor: the
#                importance bands walked as in _BANDED_CTES, index only
#                (migration 0012), each with its ceiling;
#   essential  - as in MaxScore, the terms without which a memory cannot
#                reach the floor (the others' ub added up from the smallest,
#                plus the highest ceiling, stay below it).
# A memory outside `reach`, or with no essential term, cannot be in the top.
# The reachable ones get their relevance either by probing each of them
# (when they are few against the essential terms' postings, PROBE_COST
# postings' worth a probe) or by reading the essential terms' postings and
# joining; either way only those whose ceiling plus text score reach the
# floor are kept, and only they are ever fetched.
FULLY_SCORED_POSTINGS = 2000
PROBE_COST = 4.0
PROBE_SEED_FACTOR = 4
# float8 constants: a bare 2.2 is numeric in SQL, and numeric arithmetic on
# every posting tripled the cost of counting a common word's df (32 ms
# against 10 ms for 43,000 postings).
_K1 = f"{K1}::float8"
_K1_PLUS_1 = f"{K1 + 1}::float8"
_LENGTH_NORM = f"(1.0::float8 - {B}::float8 + {B}::float8 * t.doc_len / stats.avgdl)"
_BM25_PART = f"t.tf * {_K1_PLUS_1} / (t.tf + {_K1} * {_LENGTH_NORM})"
_PROBING = "(SELECT postings FROM bm25_norm) > :fully_scored_postings::float8"
_PROBE_EACH = "(SELECT probe_each FROM route)"


def _memory_row(memory_id: str) -> str:
    """The memory `memory_id` if the recall's filters pass it: one primary-key lookup.

    A LATERAL subquery that cannot be pulled up, so that even a generic
    plan (recall runs with plan_cache_mode = force_generic_plan), which
    cannot know how few ids there are, looks each one up rather than
    reading all of the user's memories to hash them.
    """
    return f"""LATERAL (
            SELECT {MEMORY_COLUMNS} FROM user_memories
            WHERE id = {memory_id} AND {_RECALL_FILTERS}
            OFFSET 0
        ) user_memories"""


def _relevance_of(memory_id: str, terms: str = "idf") -> str:
    """BM25 relevance of one memory from its postings of `terms` (NULL: none of them)."""
    return f"""(SELECT sum(t_idf.idf * {_BM25_PART}) / (SELECT norm FROM bm25_norm)
        FROM {terms} t_idf, stats, LATERAL (
            SELECT tf, doc_len FROM memory_terms
            WHERE user_id = :user_id AND lexeme = t_idf.lexeme AND memory_id = {memory_id}
            OFFSET 0
        ) t)"""


def _reachable(floor: str, gate: str = "true") -> str:
    """(memory_id, ceiling) of the user's memories whose importance and recency could reach
    `floor` (a query yielding reach_floor), from the band index alone (0012).

    The bands are cut as in _BANDED_CTES; `ceiling` bounds the memory's
    importance and recency part: w_i * its band's upper edge + w_r * recency.
    """
    return f"""SELECT r.id AS memory_id,
           :w_importance::float8 * reach_cuts.upper_edge + r.recency_part AS ceiling
    FROM (
        SELECT bands.b, bands.upper_edge, {_band_since("reach_floor")} AS since
        FROM bands, ({floor}) w
        WHERE {gate}
    ) reach_cuts, LATERAL (
        SELECT id, :w_recency::float8 * {_RECENCY} AS recency_part FROM user_memories
        WHERE user_id = :user_id AND importance_band = reach_cuts.b
              AND updated_at >= reach_cuts.since
        OFFSET 0
    ) r"""


def _postings_relevance(terms: str, gate: str) -> str:
    """(memory_id, relevance) from every posting of `terms` (a CTE of lexeme, idf), if `gate`."""
    return f"""SELECT t.memory_id,
           sum({terms}.idf * {_BM25_PART}) / (SELECT norm FROM bm25_norm) AS relevance
    FROM {terms}, stats, LATERAL (
        SELECT memory_id, tf, doc_len FROM memory_terms
        WHERE user_id = :user_id AND lexeme = {terms}.lexeme
        OFFSET 0
    ) t
    WHERE {gate}
    GROUP BY t.memory_id"""


def _lexical_ctes(semantic: bool) -> str:
    pool = "SELECT id FROM probe_seed"
    if semantic:  # and the nearest vectors
        pool += (
            " UNION SELECT memory_id FROM (SELECT memory_id FROM sem ORDER BY similarity DESC"
            f" LIMIT :limit * {PROBE_SEED_FACTOR}) nearest"
        )
    similarity = "coalesce(sem.similarity, 0.0)" if semantic else "0.0"
    with_similarity = " LEFT JOIN sem ON sem.memory_id = p.memory_id" if semantic else ""
    # Lexical-only recall ranks matches first, so only matches set the floor.
    counted = "" if semantic else "AND p.relevance IS NOT NULL"
    return f"""q AS MATERIALIZED (
    SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('english', :query))) lexeme
), stats AS MATERIALIZED (
    SELECT greatest(docs, 1)::float8 AS docs,
           greatest(total_len::float8 / greatest(docs, 1), 1.0) AS avgdl
    FROM memory_user_stats WHERE user_id = :user_id
), idf AS MATERIALIZED (
    SELECT q.lexeme, ln(1.0 + (stats.docs - d.df + 0.5) / (d.df + 0.5)) AS idf, d.df, d.best
    FROM q, stats, LATERAL (
        SELECT count(*)::float8 AS df, max({_BM25_PART}) AS best FROM memory_terms t
        WHERE t.user_id = :user_id AND t.lexeme = q.lexeme
    ) d
    WHERE d.df > 0
), bm25_norm AS MATERIALIZED (
    SELECT sum(idf) * {_K1_PLUS_1} AS norm, coalesce(sum(df), 0) AS postings,
           coalesce(sum(idf * best) / (sum(idf) * {_K1_PLUS_1}), 0.0) AS best_relevance
    FROM idf
), probe_seed AS MATERIALIZED (
    SELECT s.id FROM bands, LATERAL (
        SELECT id FROM user_memories
        WHERE {_RECALL_FILTERS} AND importance_band = bands.b
        ORDER BY updated_at DESC
        LIMIT :limit * {PROBE_SEED_FACTOR}
    ) s
    WHERE {_PROBING}
), probed AS MATERIALIZED (
    SELECT pool.id AS memory_id, {_relevance_of("pool.id")} AS relevance
    FROM ({pool}) pool
    WHERE {_PROBING}
), pool_floor AS MATERIALIZED (
    SELECT floor, floor - coalesce((SELECT max(ceiling) FROM seed), 0.0) AS text_floor
    FROM (SELECT coalesce((
        SELECT :w_importance::float8 * importance + :w_recency::float8 * {_RECENCY}
               + :w_relevance::float8 * coalesce(p.relevance, 0.0)
               + :w_semantic::float8 * {similarity} AS score
        FROM probed p{with_similarity}, {_memory_row("p.memory_id")}
        WHERE true {counted}
        ORDER BY score DESC OFFSET :limit - 1 LIMIT 1
    ), '-Infinity'::float8) - 1e-9 AS floor) f
), term_bounds AS MATERIALIZED (
    SELECT lexeme, idf, df,
           sum(:w_relevance::float8 * idf * best / (SELECT norm FROM bm25_norm))
               OVER (ORDER BY idf * best, lexeme ROWS UNBOUNDED PRECEDING) AS ub_so_far
    FROM idf
), essential AS MATERIALIZED (
    SELECT lexeme, idf FROM term_bounds WHERE ub_so_far >= (SELECT text_floor FROM pool_floor)
), others AS MATERIALIZED (
    SELECT lexeme, idf FROM term_bounds WHERE ub_so_far < (SELECT text_floor FROM pool_floor)
), essential_postings AS MATERIALIZED (
    SELECT coalesce(sum(df), 0) AS postings, coalesce((
        SELECT max(ub_so_far) FROM term_bounds
        WHERE ub_so_far < (SELECT text_floor FROM pool_floor)), 0.0) AS others_ub
    FROM term_bounds WHERE ub_so_far >= (SELECT text_floor FROM pool_floor)
), reach AS MATERIALIZED (
    {
        _reachable(
            "SELECT floor - :w_relevance::float8 * (SELECT best_relevance FROM bm25_norm)"
            " AS reach_floor FROM pool_floor",
            _PROBING,
        )
    }
), sem_probed AS MATERIALIZED (
    {_SEM_PROBED if semantic else "SELECT NULL::bigint AS memory_id, NULL::float8 AS relevance"}
), route AS MATERIALIZED (
    SELECT (SELECT count(*) FROM reach) * (SELECT count(*) FROM idf) * :probe_cost::float8
           < (SELECT postings FROM essential_postings) AS probe_each
), partial AS MATERIALIZED (
    {_postings_relevance("essential", f"{_PROBING} AND NOT {_PROBE_EACH}")}
), bm25 AS MATERIALIZED (
        {_postings_relevance("idf", f"NOT {_PROBING}")}
    UNION ALL
        SELECT memory_id, relevance FROM (
            SELECT reach.memory_id, reach.ceiling,
                   {_relevance_of("reach.memory_id")} AS relevance
            FROM reach
            WHERE {_PROBE_EACH}
        ) p
        WHERE ceiling + :w_relevance::float8 * relevance >= (SELECT floor FROM pool_floor)
    UNION ALL
        SELECT memory_id, relevance FROM (
            SELECT partial.memory_id, reach.ceiling, partial.relevance
                   + coalesce({_relevance_of("partial.memory_id", "others")}, 0.0) AS relevance
            FROM partial JOIN reach ON reach.memory_id = partial.memory_id
            WHERE reach.ceiling + :w_relevance::float8 * partial.relevance
                  + (SELECT others_ub FROM essential_postings) >= (SELECT floor FROM pool_floor)
        ) j
        WHERE ceiling + :w_relevance::float8 * relevance >= (SELECT floor FROM pool_floor)
)"""


# Exact top-k among the scored rows (query matches, embedded memories)
# without fetching every one. Any :limit scored rows, fetched and scored,
# give a floor no higher than the true :limit-th best among them; here the
# :limit best by text score (w_rel * relevance + w_sem * similarity, known
# without reading a memory) and the seed's scored rows (each row once). A
# scored row is then fetched only if its ceiling (`ceilings`, from the band
# index alone) plus its text score reaches that floor; the band walk skips
# every memory whose ceiling is below the floor minus the best text score.
# When fewer than :limit of the seeded rows pass the filters the floor is
# -infinity and every scored row is fetched. In lexical-only recall the
# scored rows are the matches, which rank first, so the floor from matches
# alone is the right one; in hybrid recall every candidate counts and a
# floor from some of them is still a lower bound.
_SCORED_BOUND = f"""scored_seed AS MATERIALIZED (
    SELECT id, max(score) AS score FROM (
            SELECT user_memories.id, :w_importance::float8 * importance
                       + :w_recency::float8 * {_RECENCY} + top_text.text_score AS score
            FROM (SELECT memory_id, text_score FROM scored
                  ORDER BY text_score DESC LIMIT :limit) top_text,
                 {_memory_row("top_text.memory_id")}
        UNION ALL
            SELECT seed.id, seed.score + scored.text_score
            FROM seed JOIN scored ON scored.memory_id = seed.id
    ) s
    GROUP BY id
), scored_bound AS MATERIALIZED (
    SELECT floor
    FROM (
        SELECT coalesce((SELECT score FROM scored_seed ORDER BY score DESC
                         OFFSET :limit - 1 LIMIT 1), '-Infinity'::float8) - 1e-9 AS floor
    ) f
)"""


# With query text and many postings (probing): the semantic candidates
# whose similarity alone could lift them into the top, probed for their
# relevance. A semantic candidate that is not here cannot reach the floor
# even with the best relevance and ceiling, so its relevance does not matter.
_SEM_PROBED = f"""SELECT sem.memory_id, {_relevance_of("sem.memory_id")} AS relevance
    FROM sem
    WHERE {_PROBING}
      AND :w_semantic::float8 * sem.similarity
          >= (SELECT floor FROM pool_floor) - coalesce((SELECT max(ceiling) FROM seed), 0.0)
             - :w_relevance::float8 * (SELECT best_relevance FROM bm25_norm)"""

# The scored rows worth fetching: those whose ceiling plus text score reach
# the floor. With few scored rows, the highest ceiling of the seed bounds
# them all; with more than CEILING_WALK_MIN, each gets its own ceiling from
# the band index (`ceilings`), which skips every memory whose ceiling is
# below the floor minus the best text score.
CEILING_WALK_MIN = 1000
_WALK_CEILINGS = f"(SELECT count(*) FROM scored) > {CEILING_WALK_MIN}"
_BOUNDED = f"""ceilings AS MATERIALIZED (
    {
    _reachable(
        "SELECT floor - coalesce((SELECT max(text_score) FROM scored), 0.0) AS reach_floor"
        " FROM scored_bound",
        _WALK_CEILINGS,
    )
}
), bounded AS MATERIALIZED (
        SELECT scored.* FROM scored JOIN ceilings ON ceilings.memory_id = scored.memory_id
        WHERE ceilings.ceiling + scored.text_score >= (SELECT floor FROM scored_bound)
    UNION ALL
        SELECT * FROM scored
        WHERE NOT {_WALK_CEILINGS}
          AND text_score >= (SELECT floor FROM scored_bound)
                            - coalesce((SELECT max(ceiling) FROM seed), 0.0)
)"""


# Users with at most this many memories get exact semantic ranking (every
# vector scanned: about 3 ms at 5,000); above it, the nearest
# SEMANTIC_CANDIDATES come from the HNSW index (storage/migrate.py
# ensure_vector_index), approximate but fast: 60,000 vectors of one user
# took 33-45 ms exact, 3 ms through the index (EXPLAIN ANALYZE as the
# service role).
SEMANTIC_EXACT_MAX_MEMORIES = 5000
SEMANTIC_CANDIDATES = 200


def _semantic_cte(dimension: int, model: str) -> str:
    """Cosine similarity (below 0 as 0) of the user's vectors of `model` to the query's.

    The model is a literal, not a parameter: the HNSW index is partial on it
    (storage/migrate.py), and a generic plan can use a partial index only
    for a predicate it can prove from constants.
    """
    if not EMBEDDING_MODEL_NAME.fullmatch(model):
        raise ValueError(f"not an embedding model name: {model!r}")
    vector = f"embedding::vector({dimension})"
    # Parsed once: in a generic plan a cast of the parameter in the select
    # list is redone for every row (50 us a vector, 169 ms for 3,385).
    query = "(SELECT v FROM query_vector)"
    heavy = """(SELECT coalesce(max(docs), 0) FROM memory_user_stats
               WHERE user_id = :user_id) > :semantic_exact_max"""
    return f"""query_vector AS MATERIALIZED (
    SELECT :query_embedding::text::vector({dimension}) AS v
), sem AS MATERIALIZED (
        SELECT memory_id, greatest(0.0, 1.0 - ({vector} <=> {query})) AS similarity
        FROM memory_embeddings
        WHERE user_id = :user_id AND model = '{model}' AND NOT {heavy}
    UNION ALL (
        SELECT memory_id, greatest(0.0, 1.0 - ({vector} <=> {query})) AS similarity
        FROM memory_embeddings
        -- user_id as text: no index can serve that, so even a generic plan
        -- (which takes every user for an average one) walks the HNSW index.
        WHERE user_id::text = :user_id::text AND model = '{model}' AND {heavy}
        ORDER BY {vector} <=> {query}
        LIMIT {SEMANTIC_CANDIDATES}
    )
)"""


@functools.cache
def _recall_sql(lexical: bool, dimension: int, log: bool, model: str = "") -> NamedSQL:
    """One statement ranks, bumps last_accessed and logs: one round trip per recall.

    The score here must match domain.ranking.score_parts. Candidates: the
    lexical matches, every embedded memory (with semantic ranking), and the
    best of the rest by importance and recency (the banded walk), which is
    all any memory without a match or a vector can score, so the top is
    exact. Lexical-only ranking puts the matches first; with semantic
    ranking (`dimension` > 0, the query vector's) every memory has a
    similarity, and the score alone decides. For a heavy user the semantic
    candidates are the index's nearest, so the top is exact up to the
    index's recall.
    """
    semantic = dimension > 0
    if not lexical and not semantic:
        candidates = f"""{_BANDED_CTES}, candidates AS (
    SELECT *, false AS matched FROM banded
)"""
    else:
        ctes = [_BANDED_CTES]
        parts = []
        if semantic:
            ctes.append(_semantic_cte(dimension, model))
            parts.append("SELECT memory_id, 0.0::float8 AS relevance, similarity FROM sem")
        if lexical:
            ctes.append(_lexical_ctes(semantic))
            parts.append("SELECT memory_id, relevance, 0.0::float8 AS similarity FROM bm25")
            parts.append(
                "SELECT memory_id, relevance, 0.0::float8 FROM probed WHERE relevance IS NOT NULL"
            )
            parts.append(
                "SELECT memory_id, relevance, 0.0::float8 FROM sem_probed"
                " WHERE relevance IS NOT NULL"
            )
        matched = "false" if semantic else "true"
        # The candidates are driven from the scored ids (one primary-key
        # lookup each), never from the user's rows: joined the other way, a
        # planner that underestimated the CTE chose a nested loop over all of
        # them (266 ms instead of 17 ms at 20k memories, bench/README.md).
        candidates = f"""{", ".join(ctes)}, scored AS MATERIALIZED (
    SELECT memory_id, max(relevance) AS relevance, max(similarity) AS similarity,
           :w_relevance::float8 * max(relevance) + :w_semantic::float8 * max(similarity)
               AS text_score
    FROM ({" UNION ALL ".join(parts)}) s
    GROUP BY memory_id
), {_SCORED_BOUND}, {_BOUNDED},
candidates AS (
        SELECT {_RECALL_PARTS},
               :w_relevance::float8 * bounded.relevance AS relevance_score,
               :w_semantic::float8 * bounded.similarity AS semantic_score,
               {matched} AS matched
        FROM bounded, {_memory_row("bounded.memory_id")}
    UNION ALL
        SELECT banded.*, false FROM banded WHERE id NOT IN (SELECT memory_id FROM scored)
)"""
    order = "matched DESC, score DESC, created_at DESC, id DESC"
    sql = f"""
WITH {candidates}, top AS (
    SELECT *, importance_score + recency_score + relevance_score + semantic_score AS score
    FROM candidates
    ORDER BY {order}
    LIMIT :limit
)"""
    if log:
        # The bump takes only row locks it can get at once, in id order:
        # concurrent recalls of one user would otherwise wait on each other's
        # locks (throughput fell from 197/s to 35/s) or deadlock, and a
        # last-access time moved by the other recall a moment ago is as good.
        # NO KEY UPDATE, like the UPDATE itself: it does not conflict with the
        # KEY SHARE locks that the interaction inserts' foreign keys take.
        # The ids go in as arrays: a generic plan read `id IN (SELECT ...)` as
        # a scan of the whole table, locking as it went (a second a recall
        # with 64 at once on PostgreSQL 15).
        sql += f""", free AS MATERIALIZED (
    SELECT id FROM user_memories
    WHERE user_id = :user_id AND id = ANY ((SELECT array_agg(id) FROM top)::bigint[])
    ORDER BY id FOR NO KEY UPDATE SKIP LOCKED
), bumped AS (
    UPDATE user_memories SET last_accessed = now()
    WHERE user_id = :user_id AND id = ANY ((SELECT array_agg(id) FROM free)::bigint[])
), logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context)
    SELECT id, user_id, 'recall',
           jsonb_build_object('rank', row_number() OVER (ORDER BY {order}),
                              'score', score, 'query', :logged_query::text)
    FROM top
)"""
    sql += f"\nSELECT * FROM top ORDER BY {order}"
    return NamedSQL.compile(sql)


def memory_from_row(row: asyncpg.Record) -> Memory:
    return Memory(
        id=row["id"],
        user_id=row["user_id"],
        assistant_profile_id=row["assistant_profile_id"],
        content=row["content"],
        context=row["context"],
        importance=row["importance"],
        category=row["category"],
        tags=list(row["tags"]),
        source=row["source"],
        confidence=row["confidence"],
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_accessed=row["last_accessed"],
        expires_at=row["expires_at"],
        metadata=row["metadata"],
        import_id=row["import_id"],
    )


def interaction_from_row(row: asyncpg.Record) -> Interaction:
    return Interaction(
        id=row["id"],
        memory_id=row["memory_id"],
        user_id=row["user_id"],
        type=InteractionType(row["interaction_type"]),
        created_at=row["timestamp"],
        context=row["context"],
        feedback=row["feedback"],
    )


def revision_from_row(row: asyncpg.Record) -> MemoryRevision:
    return MemoryRevision(
        id=row["id"],
        memory_id=row["memory_id"],
        user_id=row["user_id"],
        version=row["version"],
        content=row["content"],
        importance=row["importance"],
        category=row["category"],
        tags=list(row["tags"]),
        metadata=row["metadata"],
        expires_at=row["expires_at"],
        changed_by=row["changed_by"],
        changed_at=row["changed_at"],
    )


def _missing_reference(exc: asyncpg.ForeignKeyViolationError, memory: NewMemory | None) -> NotFound:
    resource = _FOREIGN_KEYS.get(exc.constraint_name or "", "reference")
    key: object = "referenced by the memory"
    if memory is not None:
        key = memory.user_id if resource == "user" else memory.assistant_profile_id
    return NotFound(resource, key)


def _key_params(key: RequestKey) -> dict[str, Any]:
    return {"caller": key.caller, "request_id": key.request_id, "request_hash": key.request_hash}


def _mergeable(m: Memory | NewMemory) -> Existing:
    return Existing(
        tags=list(m.tags),
        importance=m.importance,
        expires_at=m.expires_at,
        metadata=dict(m.metadata),
        confidence=m.confidence,
    )


def _embedding_params(embedding: Embedding) -> dict[str, Any]:
    return {"model": embedding.model, "embedding": vector_text(embedding.vector)}


def _shared_filter_params(f: MemoryFilter | RecallQuery) -> dict[str, Any]:
    """The parameters of _SHARED_FILTERS."""
    return {
        "metadata": f.metadata,
        "updated_from": f.updated_from,
        "updated_before": f.updated_before,
        "accessed_from": f.accessed_from,
        "accessed_before": f.accessed_before,
    }


def _visible(v: Visibility) -> dict[str, Any]:
    return {"owner": v.user_id, "profiles": v.profile_list}


async def _owner(conn: asyncpg.Connection, memory_id: int, visibility: Visibility) -> Any:
    """The user whose memory `memory_id` is, as far as the caller may know: a
    user-scoped caller sees only its own user's memories, so that user, with no
    round trip; otherwise OWNER_OF_MEMORY (None if there is no such memory,
    which the statements given it then find nothing for)."""
    if visibility.user_id is not None:
        return visibility.user_id
    return await conn.fetchval(OWNER_OF_MEMORY, memory_id)


async def _request_key(
    conn: asyncpg.Connection, user_id: object, key: RequestKey
) -> asyncpg.Record | None:
    params = {"user_id": user_id, "caller": key.caller, "request_id": key.request_id}
    return await conn.fetchrow(_KEY.sql, *_KEY.args(params))


def _require_writable(row: asyncpg.Record, memory_id: int, visibility: Visibility) -> None:
    """A memory the caller can see but not change: one shared by all assistants."""
    if visibility.profile_ids is not None and row["assistant_profile_id"] is None:
        raise PermissionDenied(
            f"memory {memory_id} is shared by all assistants; a credential limited to"
            " assistant profiles may read it but not change it"
        )


@dataclass(frozen=True, slots=True)
class RequestKey:
    """A client request id, scoped to its caller, with a hash of the request it names."""

    caller: str
    request_id: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class StoreItem:
    """One memory of a batch store, with its request key and dedup policy."""

    memory: NewMemory
    key: RequestKey | None
    dedup: Dedup


class MemoryStore:
    def __init__(
        self,
        db: Database,
        *,
        vectors: bool = False,
        semantic_exact_max: int = SEMANTIC_EXACT_MAX_MEMORIES,
        fully_scored_postings: int = FULLY_SCORED_POSTINGS,
        probe_cost: float = PROBE_COST,
        recall_log: RecallLog | None = None,
    ) -> None:
        """`recall_log`: where logged recalls queue their bookkeeping
        (storage/recall_log.py); None: each recall writes its own, in its
        own transaction.
        `vectors`: the database has memory_embeddings (pgvector, migration 0011);
        users with more memories than `semantic_exact_max` get the index's nearest;
        a query with more postings than `fully_scored_postings` probes the
        memories that could reach the top, or joins them with its essential
        terms' postings, whichever `probe_cost` (postings a probe) makes
        cheaper (the ranking tests take every path)."""
        self._db = db
        self.vectors = vectors
        self._semantic_exact_max = semantic_exact_max
        self._fully_scored_postings = fully_scored_postings
        self._probe_cost = probe_cost
        self._recall_log = recall_log

    async def store(
        self, memory: NewMemory, key: RequestKey | None = None, dedup: Dedup = NO_DEDUP
    ) -> Stored:
        """StoreMemory: `store_in` in a transaction of its own."""
        async with self._db.connection() as conn:
            if dedup.active:
                await lock_for_dedup(conn, [(memory.user_id, memory.assistant_profile_id)])
            return await self.store_in(conn, memory, key, dedup)

    async def store_batch(self, items: Sequence[StoreItem]) -> list[Stored | DomainError]:
        """BatchStoreMemories: each item as `store_in`, all in one transaction.

        Each item runs in a savepoint: one that fails (unknown user or
        profile, inactive user, a request_id reused for another request) is
        rolled back alone and comes back as its DomainError; the others
        commit together. The dedup locks of every item's (user, profile) are
        taken up front, in one statement and in key order (storage/dedup.py),
        so concurrent batches never deadlock on them. Later items see
        earlier ones, and so dedupe against them.
        """
        results: list[Stored | DomainError] = []
        async with self._db.connection() as conn:
            await lock_for_dedup(
                conn,
                [
                    (i.memory.user_id, i.memory.assistant_profile_id)
                    for i in items
                    if i.dedup.active
                ],
            )
            for item in items:
                await conn.execute("SAVEPOINT batch_item")
                try:
                    stored = await self.store_in(conn, item.memory, item.key, item.dedup, "batch")
                except DomainError as exc:
                    await conn.execute("ROLLBACK TO SAVEPOINT batch_item")
                    results.append(exc)
                    continue
                await conn.execute("RELEASE SAVEPOINT batch_item")
                results.append(stored)
        return results

    async def store_in(
        self,
        conn: asyncpg.Connection,
        memory: NewMemory,
        key: RequestKey | None,
        dedup: Dedup,
        via: str = "store",
    ) -> Stored:
        """Store one memory in the caller's transaction, merging it into a duplicate if any.

        Under a dedup policy the caller holds the dedup lock of the memory's
        (user, profile) (storage/dedup.py lock_for_dedup) before calling.
        With a request key, a retry of a store that created or merged
        returns that memory as REPLAYED and changes nothing. `via` goes into
        the `merge` interaction ("store", "batch" or "import").
        """
        try:
            if dedup.active:
                found = await self._duplicate(conn, memory, dedup)
                if found is not None:
                    return await self._merge(conn, memory, key, dedup, via, *found)
            return await self._insert(conn, memory, key)
        except asyncpg.ForeignKeyViolationError as exc:
            raise _missing_reference(exc, memory) from exc

    async def _insert(
        self, conn: asyncpg.Connection, memory: NewMemory, key: RequestKey | None
    ) -> Stored:
        params: dict[str, Any] = {
            "user_id": memory.user_id,
            "assistant_profile_id": memory.assistant_profile_id,
            "content": memory.content,
            "context": memory.context,
            "importance": memory.importance,
            "category": memory.category,
            "tags": memory.tags,
            "source": memory.source,
            "confidence": memory.confidence,
            "expires_at": memory.expires_at,
            "metadata": memory.metadata,
        }
        if memory.embedding is not None:
            params |= _embedding_params(memory.embedding)
        statement = _store_sql(key is not None, memory.embedding is not None)
        if key is not None:
            params |= _key_params(key)
        row = await conn.fetchrow(statement.sql, *statement.args(params))
        if row is not None:
            return Stored(memory_from_row(row), StoreOutcome.CREATED)
        # A retry (the key was taken), or no active user.
        return await self._replay_or_raise(conn, memory, key)

    async def _replay_or_raise(
        self, conn: asyncpg.Connection, memory: NewMemory, key: RequestKey | None
    ) -> Stored:
        if key is None or not await self._key_taken(conn, memory.user_id, key):
            await self._raise_why_not_stored(conn, memory.user_id)
        assert key is not None
        first = await self._replayed(conn, memory.user_id, key, "StoreMemory")
        row = await self._fetch_visible(conn, memory.user_id, first["memory_id"], EVERYTHING)
        return Stored(memory_from_row(row), StoreOutcome.REPLAYED)

    async def _duplicate(
        self, conn: asyncpg.Connection, memory: NewMemory, dedup: Dedup
    ) -> tuple[asyncpg.Record, DedupPolicy] | None:
        """The memory `memory` repeats under `dedup`, locked, and the policy that matched."""
        params: dict[str, Any] = {
            "user_id": memory.user_id,
            "assistant_profile_id": memory.assistant_profile_id,
            "content": memory.content,
        }
        row = await conn.fetchrow(_EXACT.sql, *_EXACT.args(params))
        if row is not None:
            return row, DedupPolicy.EXACT
        embedding = memory.embedding
        if dedup.policy is not DedupPolicy.SEMANTIC or embedding is None or not self.vectors:
            return None
        assert dedup.min_similarity is not None  # the service fills in the default
        statement = semantic_sql(MEMORY_COLUMNS, len(embedding.vector), embedding.model)
        params["embedding"] = vector_text(embedding.vector)
        row = await conn.fetchrow(statement.sql, *statement.args(params))
        if row is None or row["similarity"] < dedup.min_similarity:
            return None
        return row, DedupPolicy.SEMANTIC

    async def _merge(
        self,
        conn: asyncpg.Connection,
        memory: NewMemory,
        key: RequestKey | None,
        dedup: Dedup,
        via: str,
        row: asyncpg.Record,
        matched: DedupPolicy,
    ) -> Stored:
        existing = memory_from_row(row)
        after = merged(_mergeable(existing), _mergeable(memory))
        statement = merge_sql(MEMORY_COLUMNS, key is not None)
        params: dict[str, Any] = {
            "id": existing.id,
            "user_id": existing.user_id,
            "tags": after.tags,
            "importance": after.importance,
            "expires_at": after.expires_at,
            "metadata": after.metadata,
            "confidence": after.confidence,
            "context": merge_context(matched.value, via, row["similarity"]),
        }
        if key is not None:
            params |= _key_params(key)
        merged_row = await conn.fetchrow(statement.sql, *statement.args(params))
        if merged_row is not None:
            audit.note(memory_id=existing.id)
            return Stored(memory_from_row(merged_row), StoreOutcome.DEDUPLICATED)
        return await self._replay_or_raise(conn, memory, key)

    @staticmethod
    async def _key_taken(conn: asyncpg.Connection, user_id: object, key: RequestKey) -> bool:
        return await _request_key(conn, user_id, key) is not None

    @staticmethod
    async def _raise_why_not_stored(conn: asyncpg.Connection, user_id: object) -> NoReturn:
        """Why a store matched no active user: none at all, or an inactive one."""
        active = await conn.fetchval(_USER_IS_ACTIVE, user_id)
        if active is None:
            raise NotFound("user", user_id)
        # Reactivated since the store looked (active now) or not: the store
        # saw an inactive user, and wrote nothing.
        raise UserInactive(user_id)

    @staticmethod
    async def _replayed(
        conn: asyncpg.Connection, user_id: object, key: RequestKey, method: str
    ) -> asyncpg.Record:
        first = await _request_key(conn, user_id, key)
        if first is None:
            raise AssertionError("request key vanished inside its transaction")
        if first["method"] != method or first["request_hash"] != key.request_hash:
            raise InvalidArgument.one(
                "request_id", "was already used by this caller for a different request"
            )
        return first

    @staticmethod
    async def _fetch_visible(
        conn: asyncpg.Connection, owner: object, memory_id: int, visibility: Visibility
    ) -> asyncpg.Record:
        params = {"user_id": owner, "id": memory_id} | _visible(visibility)
        row = await conn.fetchrow(_GET.sql, *_GET.args(params))
        if row is None:
            raise NotFound("memory", memory_id)
        return row

    async def get(self, memory_id: int, visibility: Visibility) -> Memory:
        async with self._db.connection(replica_ok=True) as conn:
            owner = await _owner(conn, memory_id, visibility)
            return memory_from_row(await self._fetch_visible(conn, owner, memory_id, visibility))

    async def update(
        self, patch: MemoryPatch, changed_paths: list[str], visibility: Visibility
    ) -> Memory:
        columns = list(patch.values)
        assignments = ", ".join(f"{c} = :v_{c}" for c in columns)
        # New content: its old embeddings no longer describe it.
        embeddings = ""
        if "content" in patch.values and self.vectors:
            keep = "AND e.model <> :model" if patch.embedding is not None else ""
            embeddings = f""", stale AS (
    DELETE FROM memory_embeddings e USING m
    WHERE e.user_id = :user_id AND e.memory_id = m.id {keep}
)"""
            if patch.embedding is not None:
                embeddings += """, embedded AS (
    INSERT INTO memory_embeddings (user_id, memory_id, model, embedding)
    SELECT user_id, id, :model, :embedding::text::vector FROM m
    ON CONFLICT (user_id, memory_id, model)
    DO UPDATE SET embedding = excluded.embedding, created_at = now()
)"""
        statement = NamedSQL.compile(f"""
WITH m AS (
    UPDATE user_memories SET {assignments}, version = version + 1
    WHERE user_id = :user_id AND id = :id AND (:version::int IS NULL OR version = :version)
      AND {_WRITABLE}
      AND {_OWNER_ACTIVE}
    RETURNING {MEMORY_COLUMNS}
), logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context)
    SELECT id, user_id, 'update', :paths::jsonb FROM m
){embeddings}
SELECT {MEMORY_COLUMNS} FROM m""")
        params = {
            **(_embedding_params(patch.embedding) if patch.embedding is not None else {}),
            "id": patch.memory_id,
            "version": patch.expected_version,
            "paths": {"paths": changed_paths},
            **{f"v_{c}": v for c, v in patch.values.items()},
            **_visible(visibility),
        }
        try:
            async with self._db.connection() as conn:
                params["user_id"] = owner = await _owner(conn, patch.memory_id, visibility)
                row = await conn.fetchrow(statement.sql, *statement.args(params))
                if row is None:
                    await self._raise_why_unchanged(
                        conn, owner, patch.memory_id, visibility, etag=True, active_owner=True
                    )
                audit.note(user_id=row["user_id"])
        except asyncpg.ForeignKeyViolationError as exc:
            raise NotFound("assistant_profile", patch.values.get("assistant_profile_id")) from exc
        assert row is not None
        return memory_from_row(row)

    async def delete(
        self, memory_id: int, expected_version: int | None, visibility: Visibility
    ) -> None:
        async with self._db.connection() as conn:
            owner = await _owner(conn, memory_id, visibility)
            params = {
                "user_id": owner,
                "id": memory_id,
                "version": expected_version,
                **_visible(visibility),
            }
            if await conn.fetchval(_DELETE.sql, *_DELETE.args(params)) is None:
                await self._raise_why_unchanged(conn, owner, memory_id, visibility, etag=True)
            audit.note(user_id=owner)

    @staticmethod
    async def _raise_why_unchanged(
        conn: asyncpg.Connection,
        owner: object,
        memory_id: int,
        visibility: Visibility,
        *,
        etag: bool,
        active_owner: bool = False,
    ) -> NoReturn:
        """Why a write matched no row: missing, shared (read-only here), its user
        inactive (for writes that require an active one), or a stale etag."""
        params = {"user_id": owner, "id": memory_id, **_visible(visibility)}
        row = await conn.fetchrow(_VERSION.sql, *_VERSION.args(params))
        if row is None:
            raise NotFound("memory", memory_id)
        _require_writable(row, memory_id, visibility)
        if active_owner and not row["owner_active"]:
            raise UserInactive(row["user_id"])
        if not etag:
            raise NotFound("memory", memory_id)  # deleted since the write looked
        raise StaleEtag(
            f"memory {memory_id} has changed (now at version {row['version']}); re-read it"
        )

    async def list_memories(
        self,
        f: MemoryFilter,
        after: tuple[datetime, int] | None,
        limit: int,
        visibility: Visibility,
    ) -> Page[Memory]:
        params = {
            **_visible(visibility),
            "user_id": f.user_id,
            "assistant_profile_id": f.assistant_profile_id,
            "categories": f.categories,
            "tags": f.tags,
            **_shared_filter_params(f),
            "after_time": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit + 1,
        }
        rows = await self._db.fetch(_LIST.sql, *_LIST.args(params), replica_ok=True)
        items = [memory_from_row(r) for r in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(items, [last.created_at, last.id] if last else None)

    async def recall(
        self, q: RecallQuery, visibility: Visibility, *, log: bool
    ) -> list[ScoredMemory]:
        semantic = q.query_embedding is not None and q.weights.semantic > 0
        dimension = len(q.query_embedding.vector) if q.query_embedding and semantic else 0
        model = q.query_embedding.model if q.query_embedding and semantic else ""
        recall_log = self._recall_log if log else None
        inline = log and recall_log is None  # the statement writes the bookkeeping
        statement = _recall_sql(bool(q.query), dimension, inline, model)
        params: dict[str, Any] = {
            "profiles": visibility.profile_list,
            "user_id": q.user_id,
            "query": q.query,
            "logged_query": q.query,
            "w_importance": q.weights.importance,
            "w_recency": q.weights.recency,
            "w_relevance": q.weights.relevance,
            "w_semantic": q.weights.semantic,
            "half_life_seconds": q.weights.half_life.total_seconds(),
            "assistant_profile_id": q.assistant_profile_id,
            "categories": q.categories,
            "tags": q.tags,
            "match_all_tags": q.match_all_tags,
            "context": q.context,
            "min_importance": q.min_importance,
            "created_from": q.created_from,
            "created_before": q.created_before,
            **_shared_filter_params(q),
            "limit": q.limit,
            "fully_scored_postings": self._fully_scored_postings,
            "probe_cost": self._probe_cost,
        }
        if semantic:
            assert q.query_embedding is not None
            params |= _embedding_params(q.query_embedding)
            params["query_embedding"] = params.pop("embedding")
            params["semantic_exact_max"] = self._semantic_exact_max
        # Planning this statement took longer than running it for most users
        # (8 ms against 3); its plan does not depend on the values (every
        # row-by-row step is forced: LATERAL, OFFSET 0, one-time filters).
        # A logged recall's writes (interaction rows, last-access bumps) are
        # bookkeeping: queued for the recall log's next batch, or, without
        # one, written by this statement without waiting for the disk
        # (docs/schema.md, "Recall bookkeeping": what a crash may lose).
        # Otherwise it only reads, and returns without waiting for its COMMIT.
        rows = await self._db.fetch(
            statement.sql,
            *statement.args(params),
            generic_plan=True,
            async_commit=inline,
            read_only=not inline,
        )
        if recall_log is not None and rows:
            mine = visibility.profile_ids
            await recall_log.add(
                rows[0]["user_id"],
                [
                    (r["id"], r["score"], mine is None or r["assistant_profile_id"] in mine)
                    for r in rows
                ],
                q.query,
            )
        return [
            ScoredMemory(
                memory=memory_from_row(r),
                score=r["score"],
                importance_score=r["importance_score"],
                recency_score=r["recency_score"],
                relevance_score=r["relevance_score"],
                semantic_score=r["semantic_score"],
            )
            for r in rows
        ]

    async def has_vectors(self) -> bool:
        """Whether this database keeps embeddings (pgvector: migration 0011)."""
        row = await self._db.fetchrow("SELECT to_regclass('memory_embeddings') IS NOT NULL AS yes")
        return bool(row and row["yes"])

    async def record_feedback(
        self,
        feedback: Feedback,
        target: float,
        learning_rate: float,
        visibility: Visibility,
        key: RequestKey | None = None,
    ) -> tuple[Memory, Interaction]:
        given: dict[str, Any] = (
            {"helpful": feedback.helpful}
            if feedback.helpful is not None
            else {"rating": feedback.rating}
        )
        if feedback.comment:
            given["comment"] = feedback.comment
        params: dict[str, Any] = {
            "id": feedback.memory_id,
            "learning_rate": learning_rate,
            "target": target,
            "context": feedback.context,
            "feedback": given,
            **_visible(visibility),
        }
        statement = _FEEDBACK
        if key is not None:
            statement = _FEEDBACK_ONCE
            params |= {
                "caller": key.caller,
                "request_id": key.request_id,
                "request_hash": key.request_hash,
            }
        async with self._db.connection() as conn:
            params["user_id"] = owner = await _owner(conn, feedback.memory_id, visibility)
            row = await conn.fetchrow(statement.sql, *statement.args(params))
            if row is not None:
                memory = memory_from_row(row)
                interaction = Interaction(
                    id=row["i_id"],
                    memory_id=memory.id,
                    user_id=memory.user_id,
                    type=InteractionType.FEEDBACK,
                    created_at=row["i_timestamp"],
                    context=row["i_context"],
                    feedback=row["i_feedback"],
                )
                return memory, interaction
            if key is None:
                await self._raise_why_unchanged(
                    conn, owner, feedback.memory_id, visibility, etag=False, active_owner=True
                )
            first = await _request_key(conn, owner, key)
            if first is None:  # no key and no update: not there, shared, or user inactive
                await self._raise_why_unchanged(
                    conn, owner, feedback.memory_id, visibility, etag=False, active_owner=True
                )
            await self._replayed(conn, owner, key, "RecordFeedback")
            memory = memory_from_row(
                await self._fetch_visible(conn, owner, first["memory_id"], visibility)
            )
            logged = await conn.fetchrow(
                _GET_INTERACTION, owner, first["created_at"], first["interaction_id"]
            )
            if logged is None:  # the memory was deleted since, with its interactions
                raise NotFound("memory", feedback.memory_id)
            return memory, interaction_from_row(logged)

    async def list_interactions(
        self,
        f: InteractionFilter,
        after: tuple[datetime, int] | None,
        limit: int,
        visibility: Visibility,
    ) -> Page[Interaction]:
        if self._recall_log is not None:  # this process's recalls are in the list
            await self._recall_log.flush()
        async with self._db.connection(replica_ok=True) as conn:
            # One user's, always: the filter's, the memory's, or the caller's own.
            user_id = f.user_id or visibility.user_id
            if user_id is None and f.memory_id is not None:  # by memory alone
                user_id = await _owner(conn, f.memory_id, visibility)
            if user_id is None:  # no such memory, so none of its interactions
                return Page([], None)
            params = {
                **_visible(visibility),
                "user_id": user_id,
                "memory_id": f.memory_id,
                "type": f.type.value if f.type else None,
                "start_time": f.start,
                "end_time": f.end,
                "after_time": after[0] if after else None,
                "after_id": after[1] if after else None,
                "limit": limit + 1,
            }
            rows = await conn.fetch(_LIST_INTERACTIONS.sql, *_LIST_INTERACTIONS.args(params))
        items = [interaction_from_row(r) for r in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return Page(items, [last.created_at, last.id] if last else None)

    async def list_revisions(
        self, memory_id: int, before: int | None, limit: int, visibility: Visibility
    ) -> Page[MemoryRevision]:
        """A page of a visible memory's revisions, newest first (NotFound if not visible)."""
        async with self._db.connection(replica_ok=True) as conn:
            params = {
                "user_id": await _owner(conn, memory_id, visibility),
                "id": memory_id,
                "before_id": before,
                "limit": limit + 1,
                **_visible(visibility),
            }
            rows = await conn.fetch(_LIST_REVISIONS.sql, *_LIST_REVISIONS.args(params))
        if not rows:
            raise NotFound("memory", memory_id)
        items = [revision_from_row(r) for r in rows[:limit] if r["id"] is not None]
        last = items[-1] if len(rows) > limit else None
        return Page(items, [last.id] if last else None)

    async def sweep_expired(self, batch_size: int) -> int:
        """Delete up to batch_size expired memories; return how many went."""
        async with self._db.connection() as conn:
            status: str = await conn.execute(_SWEEP, batch_size)
        return int(status.split()[-1])

    async def sweep_request_keys(self, batch_size: int) -> int:
        """Delete up to batch_size request keys older than IDEMPOTENCY_KEY_DAYS."""
        async with self._db.connection() as conn:
            status: str = await conn.execute(_SWEEP_KEYS, batch_size)
        return int(status.split()[-1])
