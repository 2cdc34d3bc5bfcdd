"""The benchmark's data set: realistic, deterministic, and loaded fast with COPY.

Users (10,000 by default) get a Zipf-like spread of memory counts: most have
tens, a few have tens of thousands. Memories carry natural-language content of
60-300 characters built from a teacher's vocabulary (bench/vocabulary.py),
categories, tags, context JSON, an importance spread, ages over six months,
some expiry times, last-access times and versions; each has a few
interactions (its `store`, and recalls and feedback since). Around them: the
users' preferences, subject categories, assistant profiles with
capabilities, and lessons with lesson plans in `lesson_data`.

Sixteen fixed *probe* users (PROBE_USER_IDS) own exactly `probe_memories`
memories each whatever the total: the growth measurement recalls for them at
every size (one probe user per concurrent caller, so that concurrency 16
does not turn into 16 callers fighting over one user's rows).

Memories are loaded in *stages*: `load_memories(conn, plan, start, end)` adds
positions [start, end) of the plan, so the growth curve can measure at 10k,
then add up to 100k, then up to 1M. Rows arrive in a shuffled order (users
interleaved, as in a live table), each 10,000-row chunk drawn from its own
seeded generator, so the content of position N never depends on how the
stages were cut.

Loading uses COPY as the schema owner. When a stage adds more rows than the
table holds, the big secondary indexes of user_memories and
memory_interactions are dropped first and rebuilt from their own
`pg_indexes.indexdef` afterwards (checked identical), all in one
transaction; with a superuser, `session_replication_role = replica` skips
the per-row foreign-key triggers for rows that are consistent by
construction. Then ANALYZE.

Replica mode skips ordinary triggers too, among them migration 0010's
statement-level trigger that fills the per-user term index (memory_terms,
memory_user_stats) which lexical recall ranks from: without it lexical
recall would match nothing. `terms` chooses how the index is filled:
"trigger" turns that trigger on for the COPY (ENABLE ALWAYS, back to ENABLE
before commit), so the service's own code indexes the rows; "bulk" (the
default) inserts the same rows with one statement after the COPY, the
trigger's expressions with each memory's length computed once rather than
once per term (the trigger calls faraday_tsvector_length, a SQL function
that is not inlined, for every posting). At 20k memories the two gave
identical rows, and the trigger added 4.8 s to the COPY against 2.4 s for
the statement; "none" leaves the index empty, only to measure its cost. Either way
memory_terms' primary key is dropped and re-added around a big stage, as
the secondary indexes are.

Where the database has pgvector (migration 0011), every loaded memory also
gets its vector in memory_embeddings, computed with the model the semantic
service runs (loadgen.SEMANTIC_MODEL, built in) in batches of 10,000 in a
worker thread, overlapped with a binary COPY of the previous batch. A text
whose vector is all zeros (no known word) gets none, as the service would
store none.

    .venv/bin/python bench/dataset.py --database-url postgresql://owner@host/db \
        [--users 10000 --memories 1000000 --lessons 20000 --seed 42]

(without --database-url: a throwaway embedded PostgreSQL, loaded and timed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import struct
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import vocabulary as vocab

from memory_service.embedding import MODEL_DIMENSIONS

PROBE_USER_IDS = tuple(uuid.UUID(f"00000000-0000-4000-8000-0000000001{k:02x}") for k in range(16))
PROBES = len(PROBE_USER_IDS)
CHUNK = 10_000
DAY = 86_400.0
AGE_DAYS = 182.0

MEMORY_COLUMNS = (
    "id",
    "user_id",
    "assistant_profile_id",
    "content",
    "context",
    "importance",
    "last_accessed",
    "category",
    "tags",
    "source",
    "confidence",
    "version",
    "created_at",
    "updated_at",
    "expires_at",
    "metadata",
)
INTERACTION_COLUMNS = (
    "memory_id",
    "user_id",
    "interaction_type",
    "timestamp",
    "context",
    "feedback",
)
# Tables whose secondary indexes are rebuilt around a big COPY.
BULK_TABLES = ("user_memories", "memory_interactions", "memory_embeddings")
# Primary keys of the tables filled alongside the memories (by the term
# trigger, and the embedding COPY): dropped and re-added around a big COPY.
# Nothing references them.
BULK_KEYS = ("pk_memory_terms", "pk_memory_embeddings")
# The same around the lessons' COPY: lessons and SearchLessons' term index
# (migration 0019), filled by _BULK_LESSON_TERMS, the trigger's statement.
LESSON_BULK_TABLES = ("lessons", "lesson_terms")
LESSON_BULK_KEYS = ("pk_lesson_terms",)
_BULK_LESSON_TERMS = """
INSERT INTO lesson_terms (lexeme, impact, lesson_id, user_id, status)
SELECT t.lexeme, t.impact, l.id, l.user_id, l.status
FROM lessons l CROSS JOIN LATERAL faraday_lesson_terms(l.search_vector) t
"""
TERMS_TRIGGER = "trg_user_memories_terms_insert"
TERMS_MODES = ("bulk", "trigger", "none")
# The term trigger's two inserts (migration 0010, faraday_memory_terms_insert)
# for the memories with ids in ($1, $2], each memory's length computed once.
_BULK_TERMS = """
WITH new_rows AS MATERIALIZED (
    SELECT id, user_id, content_tsv, faraday_tsvector_length(content_tsv) AS doc_len
    FROM user_memories WHERE id > $1 AND id <= $2
), postings AS (
    INSERT INTO memory_terms (user_id, lexeme, memory_id, tf, doc_len)
    SELECT n.user_id, t.lexeme, n.id, coalesce(array_length(t.positions, 1), 1), n.doc_len
    FROM new_rows n, unnest(n.content_tsv) t
)
INSERT INTO memory_user_stats AS s (user_id, docs, total_len)
SELECT user_id, count(*), sum(doc_len)
FROM new_rows GROUP BY user_id ORDER BY user_id
ON CONFLICT (user_id) DO UPDATE
    SET docs = s.docs + excluded.docs, total_len = s.total_len + excluded.total_len
"""
EMBEDDING_BATCH = 10_000
# The built-in model of the semantic cells: the data set's vectors are its
# own, the semantic service and floors run it (FARADAY_EMBEDDING_MODEL), and
# the load generator computes callers' query vectors with it.
SEMANTIC_MODEL = "wordllama-l2-supercat-256"
SEMANTIC_DIMENSION = MODEL_DIMENSIONS[SEMANTIC_MODEL]
# RPC kinds run against a server with SEMANTIC_MODEL; *_embed: the server embeds.
SEMANTIC_KINDS = ("recall_vector", "recall_embed", "store_embed")


@dataclass(frozen=True)
class Spec:
    users: int = 10_000
    # The size the plan is drawn for: the largest stage that will be loaded.
    memories: int = 1_000_000
    lessons: int = 20_000
    interactions_per_memory: float = 1.5
    probe_memories: int = 200
    seed: int = 42
    # Memory count of the user of rank r is proportional to r ** -zipf_exponent.
    zipf_exponent: float = 0.9


@dataclass
class Plan:
    """Who owns what, drawn once from the seed; the rows themselves are generated on demand."""

    spec: Spec
    now: float
    user_ids: list[uuid.UUID]  # the first PROBES are the probe users
    counts: np.ndarray  # memories per user at the plan's full size
    owners: np.ndarray  # user index of each memory position
    lesson_owners: np.ndarray
    subject_ids: list[int] = field(default_factory=list)
    profile_ids: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, spec: Spec, now: float | None = None) -> Plan:
        probed = PROBES * spec.probe_memories
        if spec.users <= PROBES or spec.memories <= probed:
            raise ValueError(
                f"need more than {PROBES} users and more than {probed} memories (the probe users')"
            )
        rng = np.random.default_rng([spec.seed, 1])
        others = spec.users - PROBES
        ranks = np.arange(1, others + 1, dtype=np.float64)
        raw = ranks**-spec.zipf_exponent
        budget = spec.memories - probed
        counts = np.maximum(1, np.floor(raw / raw.sum() * budget)).astype(np.int64)
        counts[0] += budget - counts.sum()  # the heaviest user absorbs the rounding
        if counts[0] < 1:
            raise ValueError("too few memories for that many users")
        counts = rng.permutation(counts)  # which user gets which rank
        all_counts = np.concatenate((np.full(PROBES, spec.probe_memories), counts))
        owners = np.concatenate(
            (
                np.tile(np.arange(PROBES, dtype=np.int32), spec.probe_memories),
                rng.permutation(np.repeat(np.arange(PROBES, spec.users, dtype=np.int32), counts)),
            )
        )
        id_rng = random.Random(spec.seed)
        user_ids = [*PROBE_USER_IDS] + [
            uuid.UUID(int=id_rng.getrandbits(128), version=4) for _ in range(others)
        ]
        # Lessons follow activity, less steeply than memories.
        weights = np.sqrt(all_counts[PROBES:].astype(np.float64))
        lesson_owners = rng.choice(
            np.arange(PROBES, spec.users), size=spec.lessons, p=weights / weights.sum()
        )
        return cls(
            spec=spec,
            now=time.time() if now is None else now,
            user_ids=user_ids,
            counts=all_counts,
            owners=owners,
            lesson_owners=lesson_owners,
        )

    def counts_at(self, size: int) -> np.ndarray:
        """Memories per user once the first `size` positions are loaded."""
        return np.bincount(self.owners[:size], minlength=self.spec.users)


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# ---------------------------------------------------------------- registry rows


def _user_rows(plan: Plan) -> Iterator[tuple[Any, ...]]:
    r = random.Random(plan.spec.seed + 2)
    for i, user_id in enumerate(plan.user_ids):
        first, last = r.choice(vocab.FIRST_NAMES), r.choice(vocab.LAST_NAMES)
        school = r.choice(vocab.SCHOOLS)
        slug = school.lower().replace(" ", "-")
        email = f"{first.lower()}.{last.lower()}.{i}@{slug}.example.org"
        if i < PROBES:
            first, last, email = "Probe", f"User {i}", f"probe.user.{i}@bench.example.org"
        created = plan.now - AGE_DAYS * DAY - r.random() * 365 * DAY
        grades = sorted(r.sample(vocab.GRADES, r.randint(1, 3)), key=int)
        yield (
            user_id,
            email,
            f"{first} {last}",
            r.random() > 0.03,
            school,
            r.choice(vocab.DEPARTMENTS),
            r.sample([s[0] for s in vocab.SUBJECTS], r.randint(1, 2)),
            grades,
            r.choice((None, "Keep suggestions practical for a 50-minute period.")),
            _ts(plan.now - r.random() * 14 * DAY),
            _ts(created),
            _ts(created + r.random() * 30 * DAY),
        )


def _preference_rows(plan: Plan) -> Iterator[tuple[Any, ...]]:
    r = random.Random(plan.spec.seed + 3)
    now = _ts(plan.now)
    for user_id in plan.user_ids:
        yield (
            user_id,
            r.choice(("light", "dark", None)),
            _json({"email": r.random() < 0.7, "digest": r.choice(("daily", "weekly", "off"))}),
            r.choice(("en-US", "en-GB", "es-US")),
            r.choice(("America/Chicago", "America/New_York", "America/Los_Angeles", "UTC")),
            now,
            now,
        )


def _lesson_rows(plan: Plan) -> Iterator[tuple[Any, ...]]:
    r = random.Random(plan.spec.seed + 4)
    today = date.fromtimestamp(plan.now)
    monday = today - timedelta(days=today.weekday())
    for n, owner in enumerate(plan.lesson_owners):
        topic = r.choice(vocab.TOPICS)
        grade = r.choice(vocab.GRADES)
        subject = r.randrange(len(plan.subject_ids))
        created = plan.now - r.random() * AGE_DAYS * DAY
        text = vocab.lesson_text(r, topic)
        minutes = [10, r.choice((20, 25, 30)), 10]
        yield (
            n + 1,
            vocab.lesson_title(r, topic),
            plan.user_ids[int(owner)],
            plan.subject_ids[subject] if r.random() < 0.95 else None,
            r.choice(plan.profile_ids) if r.random() < 0.8 else None,
            grade,
            monday + timedelta(weeks=r.randint(-26, 8)),
            topic.title()[:100],
            _json(
                {
                    "subject": vocab.SUBJECTS[subject][0],
                    "grade_level": grade,
                    "duration_minutes": sum(minutes),
                    "differentiated": r.random() < 0.4,
                    "text": text,
                }
            ),
            _json([f"Understand {topic}", f"Apply {topic} to a new problem"]),
            _json(r.sample(["slides", "worksheet", "whiteboards", "laptops", "lab kit"], 2)),
            _json(
                [
                    {"name": "warm-up", "minutes": minutes[0]},
                    {"name": r.choice(vocab.ACTIVITIES), "minutes": minutes[1]},
                    {"name": "exit ticket", "minutes": minutes[2]},
                ]
            ),
            _json(["exit ticket", r.choice(("rubric", "quiz", "observation"))]),
            _json({"rating": r.randint(3, 5)}) if r.random() < 0.2 else None,
            r.choices(("draft", "published", "archived"), (0.35, 0.5, 0.15))[0],
            _json(r.sample(vocab.TAGS, r.randint(1, 3))),
            "[]",
            _ts(created),
            _ts(created + r.random() * 7 * DAY),
        )


async def load_registry(conn: asyncpg.Connection, plan: Plan) -> dict[str, int]:
    """Users, preferences, subjects, assistant profiles and lessons (idempotent: skips if there)."""
    if await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", PROBE_USER_IDS[0]):
        plan.subject_ids = [r[0] for r in await conn.fetch("SELECT id FROM subject_categories")]
        plan.profile_ids = [r[0] for r in await conn.fetch("SELECT id FROM assistant_profiles")]
        return {}
    async with conn.transaction():
        triggers_skipped = await _bulk_session(conn)
        ids: dict[str, int] = {}
        for n, (name, parent, description) in enumerate(vocab.SUBJECTS, start=1):
            await conn.execute(
                "INSERT INTO subject_categories (id, name, description, parent_id, level, metadata)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                n,
                name,
                description,
                ids.get(parent or ""),
                2 if parent else 1,
                _json({"color": "#%06x" % (n * 0x1F3A5B % 0xFFFFFF)}),
            )
            ids[name] = n
        plan.subject_ids = list(ids.values())
        for n, (name, description, model) in enumerate(vocab.PROFILES, start=1):
            await conn.execute(
                "INSERT INTO assistant_profiles (id, name, description, model_version,"
                " configuration) VALUES ($1, $2, $3, $4, $5)",
                n,
                name,
                description,
                model,
                _json({"temperature": 0.7, "max_tokens": 1024}),
            )
            for k in range(2):
                capability, text = vocab.CAPABILITIES[(n + k) % len(vocab.CAPABILITIES)]
                await conn.execute(
                    "INSERT INTO assistant_capabilities (assistant_profile_id, name, description,"
                    " priority) VALUES ($1, $2, $3, $4)",
                    n,
                    capability,
                    text,
                    10 - 5 * k,
                )
        plan.profile_ids = list(range(1, len(vocab.PROFILES) + 1))
        await conn.copy_records_to_table(
            "users",
            records=_user_rows(plan),
            columns=(
                "id",
                "email",
                "name",
                "is_active",
                "school",
                "department",
                "subjects",
                "grade_levels",
                "custom_instructions",
                "last_login",
                "created_at",
                "updated_at",
            ),
        )
        await conn.copy_records_to_table(
            "user_preferences",
            records=_preference_rows(plan),
            columns=(
                "user_id",
                "theme",
                "notifications",
                "language",
                "timezone",
                "created_at",
                "updated_at",
            ),
        )
        # As for the memories: the lessons' secondary indexes (three GIN
        # among them) and SearchLessons' term index are built once after
        # the COPY rather than row by row (at 1M lessons, ~30M postings).
        indexes = await _secondary_indexes(conn, LESSON_BULK_TABLES)
        keys = await _bulk_keys(conn, LESSON_BULK_KEYS)
        for _, name, _ in indexes:
            await conn.execute(f'DROP INDEX "{name}"')
        for table, name, _ in keys:
            await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        await conn.copy_records_to_table(
            "lessons",
            records=_lesson_rows(plan),
            columns=(
                "id",
                "title",
                "user_id",
                "subject_category_id",
                "assistant_profile_id",
                "grade_level",
                "week_of",
                "content_area",
                "lesson_data",
                "objectives",
                "materials",
                "activities",
                "assessment_criteria",
                "feedback",
                "status",
                "tags",
                "related_lessons",
                "created_at",
                "updated_at",
            ),
        )
        # Replica mode skipped the trigger that keeps lesson_terms.
        if triggers_skipped and await conn.fetchval(
            "SELECT to_regclass('lesson_terms') IS NOT NULL"
        ):
            await conn.execute(_BULK_LESSON_TERMS)
        await _rebuild(conn, indexes, keys, LESSON_BULK_TABLES, LESSON_BULK_KEYS)
        for table in ("subject_categories", "assistant_profiles", "lessons"):
            await _sync_identity(conn, table)
    return {
        "users": len(plan.user_ids),
        "user_preferences": len(plan.user_ids),
        "subject_categories": len(vocab.SUBJECTS),
        "assistant_profiles": len(vocab.PROFILES),
        "lessons": plan.spec.lessons,
    }


# ---------------------------------------------------------------- memories


def _chunk_rows(
    plan: Plan, chunk: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[int]]:
    """Memory rows, interaction rows and memory positions of one 10,000-position chunk."""
    spec = plan.spec
    first = chunk * CHUNK
    last = min(first + CHUNK, spec.memories)
    n = last - first
    rng = np.random.default_rng([spec.seed, 100, chunk])
    r = random.Random(spec.seed * 1_000_003 + chunk)
    now = plan.now
    owners = plan.owners[first:last]
    created = now - rng.random(n) * AGE_DAYS * DAY
    edited = rng.random(n) < 0.25
    updated = np.where(edited, created + rng.random(n) * (now - created), created)
    versions = np.where(edited, 1 + rng.geometric(0.6, n), 1)
    accessed = rng.random(n) < 0.6
    last_access = updated + rng.random(n) * (now - updated)
    expiring = rng.random(n) < 0.05
    expires = now + (1 + rng.random(n) * 120) * DAY
    importance = np.round(rng.beta(2.0, 3.0, n), 4)
    confidence = np.round(0.5 + rng.random(n) * 0.5, 3)
    has_confidence = rng.random(n) < 0.8
    lengths = np.clip(rng.lognormal(math.log(130), 0.45, n), 60, 300).astype(np.int64)
    categories = rng.choice(len(vocab.CATEGORIES), size=n, p=vocab.CATEGORY_WEIGHTS)
    profiles = plan.profile_ids
    extra = max(0.0, spec.interactions_per_memory - 1.0)
    store_p = min(1.0, spec.interactions_per_memory)
    recalls = rng.poisson(0.8 * extra, n)
    feedback = rng.random(n) < 0.2 * extra
    stored = rng.random(n) < store_p
    memories: list[tuple[Any, ...]] = []
    interactions: list[tuple[Any, ...]] = []
    for k in range(n):
        user = plan.user_ids[owners[k]]
        category = vocab.CATEGORIES[categories[k]]
        content = vocab.memory_content(r, category, int(lengths[k]))
        roll = r.random()
        if roll < 0.4:
            context = "{}"
        elif roll < 0.75:
            context = f'{{"class":"{r.choice(vocab.GRADES)}{r.choice(vocab.SECTIONS)}"}}'
        elif roll < 0.9:
            context = (
                f'{{"class":"{r.choice(vocab.GRADES)}{r.choice(vocab.SECTIONS)}",'
                f'"subject":"{r.choice(vocab.TOPICS)}"}}'
            )
        else:
            context = f'{{"unit":"{r.choice(vocab.TOPICS)}","term":{r.randint(1, 3)}}}'
        metadata = (
            f'{{"conversation_id":"c-{r.getrandbits(48):012x}"}}' if r.random() < 0.3 else "{}"
        )
        tags = r.sample(vocab.TAGS, r.choice((0, 1, 1, 2, 2, 3, 4)))
        c, u = float(created[k]), float(updated[k])
        memory_id = first + k + 1
        memories.append(
            (
                memory_id,
                user,
                r.choice(profiles) if r.random() < 0.7 else None,
                content,
                context,
                float(importance[k]),
                _ts(float(last_access[k])) if accessed[k] else None,
                category,
                tags,
                r.choice(vocab.SOURCES),
                float(confidence[k]) if has_confidence[k] else None,
                int(versions[k]),
                _ts(c),
                _ts(u),
                _ts(float(expires[k])) if expiring[k] else None,
                metadata,
            )
        )
        if stored[k]:
            interactions.append((memory_id, user, "store", _ts(c), None, None))
        for _ in range(int(recalls[k])):
            at = c + r.random() * (now - c)
            ctx = (
                f'{{"rank":{r.randint(1, 10)},"score":{r.random() * 2:.4f},'
                f'"query":"{r.choice(vocab.TOPICS)}"}}'
            )
            interactions.append((memory_id, user, "recall", _ts(at), ctx, None))
        if feedback[k]:
            before = float(importance[k])
            helpful = r.random() < 0.75
            after = before + 0.2 * ((1.0 if helpful else 0.0) - before)
            fb = (
                f'{{"helpful":{"true" if helpful else "false"},'
                f'"importance_before":{before:.4f},"importance_after":{after:.4f}}}'
            )
            at = c + r.random() * (now - c)
            interactions.append((memory_id, user, "feedback", _ts(at), "{}", fb))
    return memories, interactions, list(range(first, last))


async def _bulk_session(conn: asyncpg.Connection) -> bool:
    """Transaction-local settings for a fast load; True if FK triggers are skipped."""
    await conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
    # Both cores for index builds: the HNSW index over 1M vectors above all.
    await conn.execute("SET LOCAL max_parallel_maintenance_workers = 2")
    await conn.execute("SET LOCAL synchronous_commit = off")
    superuser = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if superuser:
        # Rows are consistent by construction: skip the per-row RI triggers.
        await conn.execute("SET LOCAL session_replication_role = replica")
    return bool(superuser)


async def _sync_identity(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(
        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
        f" greatest(1, (SELECT coalesce(max(id), 0) FROM {table})))"
    )


async def _secondary_indexes(
    conn: asyncpg.Connection, tables: tuple[str, ...]
) -> list[tuple[str, str, str]]:
    """(table, name, definition) of indexes that back no constraint, on these tables."""
    rows = await conn.fetch(
        """
        SELECT i.tablename, i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = current_schema() AND i.tablename = ANY($1::text[])
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
        ORDER BY i.tablename, i.indexname
        """,
        list(tables),
    )
    return [(r["tablename"], r["indexname"], r["indexdef"]) for r in rows]


async def _bulk_keys(
    conn: asyncpg.Connection, names: tuple[str, ...]
) -> list[tuple[str, str, str]]:
    """(table, constraint, definition) of the constraints of these names this database has."""
    rows = await conn.fetch(
        """
        SELECT c.conrelid::regclass::text AS tablename, c.conname,
               pg_get_constraintdef(c.oid) AS def
        FROM pg_constraint c
        WHERE c.conname = ANY($1::text[]) AND c.connamespace = current_schema()::regnamespace
        ORDER BY c.conname
        """,
        list(names),
    )
    return [(r["tablename"], r["conname"], r["def"]) for r in rows]


async def _rebuild(
    conn: asyncpg.Connection,
    indexes: list[tuple[str, str, str]],
    keys: list[tuple[str, str, str]],
    tables: tuple[str, ...],
    names: tuple[str, ...],
) -> dict[str, float]:
    """Re-create dropped indexes and keys from their own definitions, checked; the timings."""
    t = time.perf_counter()
    for _, _, definition in indexes:
        await conn.execute(definition)
    if indexes and await _secondary_indexes(conn, tables) != indexes:
        raise RuntimeError("rebuilt indexes differ from the schema's")
    t2 = time.perf_counter()
    for table, name, definition in keys:
        await conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    if keys and await _bulk_keys(conn, names) != keys:
        raise RuntimeError("re-added primary keys differ from the schema's")
    return {"rebuild_indexes_s": t2 - t, "rebuild_keys_s": time.perf_counter() - t2}


def _vectors_binary(vectors: np.ndarray) -> list[bytes | None]:
    """pgvector's binary form of each row (int16 dimension, int16 0, float4s), None for zeros."""
    header = struct.pack(">HH", vectors.shape[1], 0)
    big_endian = vectors.astype(">f4")
    known = np.any(vectors != 0, axis=1)
    return [
        header + row.tobytes() if ok else None for row, ok in zip(big_endian, known, strict=True)
    ]


async def _embedding_records(
    model: Any, texts: list[tuple[int, uuid.UUID, str]]
) -> AsyncIterator[tuple[Any, ...]]:
    """memory_embeddings rows for (memory id, user id, content): the next batch is
    embedded in a thread while this one is copied."""

    def embed(start: int) -> list[bytes | None]:
        batch = texts[start : start + EMBEDDING_BATCH]
        return _vectors_binary(model.embed([content for _, _, content in batch]))

    starts = range(0, len(texts), EMBEDDING_BATCH)
    pending = asyncio.ensure_future(asyncio.to_thread(embed, 0)) if texts else None
    for start in starts:
        assert pending is not None
        encoded = await pending
        if start + EMBEDDING_BATCH < len(texts):
            pending = asyncio.ensure_future(asyncio.to_thread(embed, start + EMBEDDING_BATCH))
        for (memory_id, user_id, _), vector in zip(
            texts[start : start + EMBEDDING_BATCH], encoded, strict=True
        ):
            if vector is not None:
                yield (user_id, memory_id, model.name, vector)


async def _records(
    plan: Plan,
    start: int,
    end: int,
    offset: int,
    interactions: list[tuple[Any, ...]],
    texts: list[tuple[int, uuid.UUID, str]] | None = None,
) -> AsyncIterator[tuple[Any, ...]]:
    """Memory rows of positions [start, end); their interactions go to `interactions`,
    and (id, user id, content) to `texts` if given.

    A memory's id is its position + 1, plus `offset` when rows stored through
    the service since the last stage already hold those ids.
    """
    low, high = start + 1, end
    for chunk in range(start // CHUNK, (end - 1) // CHUNK + 1):
        memories, logged, positions = _chunk_rows(plan, chunk)
        for row, position in zip(memories, positions, strict=True):
            if start <= position < end:
                row = (row[0] + offset, *row[1:]) if offset else row
                if texts is not None:
                    texts.append((row[0], row[1], row[3]))
                yield row
        interactions.extend(
            ((i[0] + offset, *i[1:]) if offset else i) for i in logged if low <= i[0] <= high
        )
        await asyncio.sleep(0)


async def load_memories(
    conn: asyncpg.Connection,
    plan: Plan,
    start: int,
    end: int,
    *,
    model: Any = None,
    terms: str = "bulk",
) -> dict[str, Any]:
    """Add memory positions [start, end) and their interactions; return timings and counts.

    `model`: an embedding model (memory_service.embedding.load_model) whose
    vectors of the new memories go to memory_embeddings, if the table exists.
    `terms`: how the term index is filled, one of TERMS_MODES (see the module's doc).
    """
    end = min(end, plan.spec.memories)
    if end <= start:
        return {"memories": 0, "interactions": 0}
    t0 = time.perf_counter()
    existing, top = await conn.fetchrow("SELECT count(*), coalesce(max(id), 0) FROM user_memories")
    offset = max(0, top - start)
    rebuild = end - start > existing
    has_terms = await conn.fetchval("SELECT to_regclass('memory_terms') IS NOT NULL")
    vectors = model is not None and await conn.fetchval(
        "SELECT to_regclass('memory_embeddings') IS NOT NULL"
    )
    timings: dict[str, float] = {}
    texts: list[tuple[int, uuid.UUID, str]] | None = [] if vectors else None
    embedded = 0
    async with conn.transaction():
        await _bulk_session(conn)
        # memory_embeddings' indexes and key stay when this stage loads no vectors.
        tables = (
            BULK_TABLES if vectors else tuple(t for t in BULK_TABLES if t != "memory_embeddings")
        )
        names = BULK_KEYS if vectors else tuple(k for k in BULK_KEYS if k != "pk_memory_embeddings")
        indexes = await _secondary_indexes(conn, tables) if rebuild else []
        for _, name, _ in indexes:
            await conn.execute(f'DROP INDEX "{name}"')
        keys = await _bulk_keys(conn, names) if rebuild else []
        for table, name, _ in keys:
            await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        if has_terms and terms == "trigger":  # replica mode skips it otherwise
            await conn.execute(f"ALTER TABLE user_memories ENABLE ALWAYS TRIGGER {TERMS_TRIGGER}")
        interactions: list[tuple[Any, ...]] = []
        await conn.copy_records_to_table(
            "user_memories",
            records=_records(plan, start, end, offset, interactions, texts),
            columns=MEMORY_COLUMNS,
        )
        if has_terms and terms == "trigger":
            await conn.execute(f"ALTER TABLE user_memories ENABLE TRIGGER {TERMS_TRIGGER}")
        timings["copy_memories_s"] = time.perf_counter() - t0  # with the trigger, if on
        if has_terms and terms == "bulk":
            t = time.perf_counter()
            await conn.execute(_BULK_TERMS, start + offset, end + offset)
            timings["bulk_terms_s"] = time.perf_counter() - t
        t1 = time.perf_counter()
        await conn.copy_records_to_table(
            "memory_interactions", records=interactions, columns=INTERACTION_COLUMNS
        )
        timings["copy_interactions_s"] = time.perf_counter() - t1
        if texts:
            t = time.perf_counter()
            schema = await conn.fetchval(
                "SELECT typnamespace::regnamespace::text FROM pg_type WHERE typname = 'vector'"
            )
            await conn.set_type_codec(
                "vector", schema=schema, encoder=bytes, decoder=bytes, format="binary"
            )
            await conn.copy_records_to_table(
                "memory_embeddings",
                records=_embedding_records(model, texts),
                columns=("user_id", "memory_id", "model", "embedding"),
            )
            embedded = await conn.fetchval(
                "SELECT count(*) FROM memory_embeddings WHERE memory_id > $1", start + offset
            )
            timings["embed_and_copy_vectors_s"] = time.perf_counter() - t
        timings |= await _rebuild(conn, indexes, keys, tables, names)
        await _sync_identity(conn, "user_memories")
    t4 = time.perf_counter()
    # As a live table would be: vacuumed (visibility map and hint bits set, so
    # the first reads do not write) and analyzed; and the load's WAL
    # checkpointed now rather than in the middle of a measurement.
    await conn.execute("VACUUM ANALYZE")
    await conn.execute("CHECKPOINT")
    timings["vacuum_analyze_checkpoint_s"] = time.perf_counter() - t4
    timings["total_s"] = time.perf_counter() - t0
    return {
        "memories": end - start,
        "interactions": len(interactions),
        "embeddings": embedded,
        "terms": terms if has_terms else "no term index",
        "id_offset": offset,
        "indexes_rebuilt": len(indexes) + len(keys),
        **{k: round(v, 2) for k, v in timings.items()},
        "database_mb": round(
            await conn.fetchval("SELECT pg_database_size(current_database())") / 2**20, 1
        ),
    }


async def table_stats(conn: asyncpg.Connection) -> dict[str, Any]:
    rows = await conn.fetch(
        """
        SELECT c.relname, c.reltuples::bigint AS rows,
               pg_total_relation_size(c.oid) AS bytes
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind = 'r'
        ORDER BY pg_total_relation_size(c.oid) DESC
        """
    )
    return {
        r["relname"]: {"rows": int(r["rows"]), "mb": round(r["bytes"] / 2**20, 1)} for r in rows
    }


def workload(plan: Plan, size: int, samples: int = 4096, traffic_exponent: float = 0.5) -> dict:
    """What the load generator asks for, drawn from the data loaded so far.

    Recall users are drawn with probability proportional to
    memory_count ** traffic_exponent: active users (more memories) call more,
    less than linearly (a heavy user's count is years of use, not today's
    traffic). 0 draws users uniformly, 1 in proportion to their memories.
    """
    spec = plan.spec
    rng = np.random.default_rng([spec.seed, 7])
    r = random.Random(spec.seed + 7)
    counts = plan.counts_at(size).astype(np.float64)
    counts[:PROBES] = 0  # the probe users are measured on their own
    weights = counts**traffic_exponent
    weights[counts == 0] = 0
    users = rng.choice(len(counts), size=samples, p=weights / weights.sum())
    # Writes (stores, feedback) go to active users: an inactive user's
    # memories are read-only (FAILED_PRECONDITION), which is not the work measured.
    active = np.array([row[3] for row in _user_rows(plan)])
    uniform = rng.choice(np.flatnonzero((counts > 0) & active), size=samples)
    writable = np.flatnonzero(active[plan.owners[:size]]) + 1  # memory ids are positions + 1
    owners, lesson_counts = np.unique(plan.lesson_owners, return_counts=True)
    listed = rng.choice(owners, size=samples, p=lesson_counts / lesson_counts.sum())
    store_rows, _, _ = _chunk_rows(plan, 0)
    return {
        "size": size,
        "traffic_exponent": traffic_exponent,
        "probe_users": [str(u) for u in PROBE_USER_IDS],
        "recall_users": [str(plan.user_ids[i]) for i in users],
        "recall_user_memories": [int(counts[i]) for i in users],
        "store_users": [str(plan.user_ids[i]) for i in uniform],
        "queries": [vocab.recall_query(r) for _ in range(samples)],
        "memory_ids": [int(x) for x in rng.choice(writable, samples)],
        "lesson_ids": [int(x) for x in rng.integers(1, spec.lessons + 1, samples)],
        "hot_lesson_ids": [int(x) for x in rng.choice(spec.lessons, 100, replace=False) + 1],
        "lesson_owners": [str(plan.user_ids[int(i)]) for i in listed],
        "lesson_queries": [vocab.search_query(r) for _ in range(samples)],
        "store_memories": [
            {
                "content": row[3],
                "context": json.loads(row[4]),
                "importance": row[5],
                "category": row[7],
                "tags": row[8],
                "source": "bench",
                "assistant_profile_id": row[2] or 0,
            }
            for row in store_rows[: min(samples, len(store_rows))]
        ],
    }


def growth_sizes(memories: int, smallest: int = 10_000) -> list[int]:
    """10k, 100k, 1M, ... below `memories`, then `memories` itself."""
    sizes = []
    size = smallest
    while size < memories:
        sizes.append(size)
        size *= 10
    return [*sizes, memories]


async def _main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="schema owner's URL (default: embedded, temporary)")
    parser.add_argument("--users", type=int, default=Spec.users)
    parser.add_argument("--memories", type=int, default=Spec.memories)
    parser.add_argument("--lessons", type=int, default=Spec.lessons)
    parser.add_argument(
        "--interactions-per-memory", type=float, default=Spec.interactions_per_memory
    )
    parser.add_argument("--probe-memories", type=int, default=Spec.probe_memories)
    parser.add_argument("--seed", type=int, default=Spec.seed)
    parser.add_argument(
        "--terms", choices=TERMS_MODES, default="bulk", help="how the term index is filled"
    )
    parser.add_argument("--no-embeddings", action="store_true", help="load no vectors")
    args = parser.parse_args()
    spec = Spec(
        users=args.users,
        memories=args.memories,
        lessons=args.lessons,
        interactions_per_memory=args.interactions_per_memory,
        probe_memories=args.probe_memories,
        seed=args.seed,
    )
    import tempfile

    from memory_service.storage import migrate

    with tempfile.TemporaryDirectory(prefix="faraday-dataset-") as tmp:
        url = args.database_url
        embedded = None
        if url is None:
            import pg

            embedded = pg.Embedded.start(Path(tmp))
            url = embedded.url
        try:
            await migrate.upgrade(url)
            t0 = time.perf_counter()
            plan = Plan.build(spec)
            conn = await asyncpg.connect(url)
            try:
                print("registry:", await load_registry(conn, plan), flush=True)
                model = None
                if not args.no_embeddings:
                    from memory_service.embedding import load_model

                    model = load_model(SEMANTIC_MODEL)
                loaded = await load_memories(
                    conn, plan, 0, spec.memories, model=model, terms=args.terms
                )
                print("memories:", loaded, flush=True)
                print(json.dumps(await table_stats(conn), indent=1))
            finally:
                await conn.close()
            print(f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        finally:
            if embedded is not None:
                embedded.stop()


if __name__ == "__main__":
    asyncio.run(_main())
