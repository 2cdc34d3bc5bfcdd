"""Every SQL statement of dedup: the store lock, the duplicate lookup, the merge.

Concurrency. Two stores of one fact that each looked for a duplicate before
the other committed would both find none and both insert. So every store
under a dedup policy first takes a transaction-level advisory lock on its
(user, assistant profile) pair, `lock_for_dedup`, and looks only after it
holds it: stores that could duplicate each other run one after the other,
and the later one's lookup (a new statement, so a new snapshot under READ
COMMITTED) sees what the earlier one committed. Stores of other users or
profiles, and NONE stores, never wait. The lock is
`pg_advisory_xact_lock(DEDUP_LOCK_NAMESPACE, hashtext(user_id::text || ':'
|| coalesce(assistant_profile_id, 0)::text))`; ImportMemories takes the same
one (through this function) so imports and stores of one user serialize too.
A transaction that needs several pairs (a batch) takes them all at once, in
key order, so two of them can never wait for each other in a cycle. A hash
collision only makes two unrelated pairs wait for each other.

The candidates are the memories of the same user and assistant profile (NULL,
the shared ones, matched as NULL), not expired. EXACT is an index lookup on
(user_id, content_key) (migration 0014: both equalities leakproof, so an
index condition under row-level security); SEMANTIC scans the user's
vectors of the model (exact nearest: a user's vectors of one profile are not
what the HNSW index of migration 0011 can filter well). The lookup locks the
row it returns (FOR UPDATE), so the merge computed from it in Python
(domain.dedup.merged) cannot overwrite a concurrent UpdateMemory or
RecordFeedback that does not take the dedup lock.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg

from memory_service.domain.validation import EMBEDDING_MODEL_NAME
from memory_service.storage.named_sql import NamedSQL

# The first key of every dedup advisory lock ("FDUP"); the second is the
# hashed (user, profile) pair. PostgreSQL keeps two-int4 advisory keys apart
# from the single-bigint ones (migrations/env.py's migration lock).
DEDUP_LOCK_NAMESPACE = 0x46445550

# One statement for any number of pairs: sorted by lock key, then locked in
# that order (the subquery is not flattened: OFFSET 0).
_LOCK = f"""
SELECT count(pg_advisory_xact_lock({DEDUP_LOCK_NAMESPACE}, k)) FROM (
    SELECT DISTINCT hashtext(u::text || ':' || coalesce(p, 0)::text) AS k
    FROM unnest($1::uuid[], $2::int[]) AS s(u, p)
    ORDER BY k OFFSET 0
) keys
"""


async def lock_for_dedup(
    conn: asyncpg.Connection, pairs: Iterable[tuple[uuid.UUID, int | None]]
) -> None:
    """Take the dedup lock of every (user id, assistant profile id or None) pair, till commit."""
    users, profiles = [], []
    for user_id, profile_id in set(pairs):
        users.append(user_id)
        profiles.append(profile_id)
    if users:
        await conn.fetchval(_LOCK, users, profiles)


_SAME_PLACE = """user_id = :user_id
  AND assistant_profile_id IS NOT DISTINCT FROM :assistant_profile_id::int
  AND (expires_at IS NULL OR expires_at > now())"""


def exact_sql(columns: str) -> NamedSQL:
    return NamedSQL.compile(f"""
SELECT {columns}, NULL::float8 AS similarity FROM user_memories
WHERE content_key = faraday_content_key(:content) AND {_SAME_PLACE}
ORDER BY id
LIMIT 1
FOR UPDATE""")


@functools.cache
def semantic_sql(columns: str, dimension: int, model: str) -> NamedSQL:
    """The nearest memory by cosine similarity among those with a vector of `model`.

    The model is a literal, as in recall (storage/memories.py _semantic_cte).
    """
    if not EMBEDDING_MODEL_NAME.fullmatch(model):
        raise ValueError(f"not an embedding model name: {model!r}")
    distance = f"e.embedding::vector({dimension}) <=> (SELECT v FROM q)"
    qualified = ", ".join("m." + c.strip() for c in columns.split(","))
    return NamedSQL.compile(f"""
WITH q AS MATERIALIZED (SELECT :embedding::text::vector({dimension}) AS v)
SELECT {qualified}, 1.0 - ({distance}) AS similarity
FROM memory_embeddings e
JOIN user_memories m ON m.id = e.memory_id AND m.user_id = e.user_id
WHERE e.user_id = :user_id AND e.model = '{model}'
  AND m.assistant_profile_id IS NOT DISTINCT FROM :assistant_profile_id::int
  AND (m.expires_at IS NULL OR m.expires_at > now())
ORDER BY {distance}, m.id
LIMIT 1
FOR UPDATE OF m""")


_USER_ACTIVE = "EXISTS (SELECT FROM users WHERE users.id = :user_id::uuid AND users.is_active)"
_OWNER_ACTIVE = """EXISTS (SELECT FROM users
               WHERE users.id = user_memories.user_id AND users.is_active)"""


@functools.cache
def merge_sql(columns: str, once: bool) -> NamedSQL:
    """The merge: one UPDATE (version + 1; migration 0013's trigger keeps a revision
    when values change) and its `merge` interaction.

    With a request id (`once`), the key row is written first and names the
    memory merged into, so a retry replays it instead of merging again; a
    taken key leaves the whole statement a no-op, as in StoreMemory's insert.
    Nothing is written unless the user is active.
    """
    key = ""
    keyed = ""
    if once:
        key = f"""key AS (
    INSERT INTO idempotency_keys (caller, request_id, method, request_hash, user_id, memory_id)
    SELECT :caller, :request_id, 'StoreMemory', :request_hash, :user_id, :id
    WHERE {_USER_ACTIVE}
    ON CONFLICT DO NOTHING
    RETURNING memory_id
), """
        keyed = "AND EXISTS (SELECT FROM key)"
    return NamedSQL.compile(f"""
WITH {key}m AS (
    UPDATE user_memories
    SET tags = :tags, importance = :importance, expires_at = :expires_at,
        metadata = :metadata, confidence = :confidence, version = version + 1
    WHERE id = :id AND user_id = :user_id AND {_OWNER_ACTIVE} {keyed}
    RETURNING {columns}
), logged AS (
    INSERT INTO memory_interactions (memory_id, user_id, interaction_type, context)
    SELECT id, user_id, 'merge', :context::jsonb FROM m
)
SELECT {columns} FROM m""")


def merge_context(policy: str, via: str, similarity: float | None) -> dict[str, Any]:
    """The `merge` interaction's context (memory.proto INTERACTION_TYPE_MERGE)."""
    context: dict[str, Any] = {"policy": policy, "via": via}
    if similarity is not None:
        context["similarity"] = round(similarity, 6)
    return context
