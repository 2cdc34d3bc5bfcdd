"""MemoryService messages <-> domain values. Validation rules live in domain.validation."""

from __future__ import annotations

import hashlib
from typing import Any

from faraday.memory.v1 import memory_pb2, memory_service_pb2

from memory_service.domain import dedup as dedup_rule
from memory_service.domain import ranking
from memory_service.domain import validation as check
from memory_service.domain.dedup import (
    NO_DEDUP,
    Dedup,
    DedupPolicy,
    Stored,
    StoreOutcome,
    StoreRequest,
)
from memory_service.domain.errors import DomainError, InvalidArgument
from memory_service.domain.models import (
    MUTABLE_MEMORY_FIELDS,
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
    RecallQuery,
    ScoredMemory,
    Signal,
    Weights,
)
from memory_service.rpc import errors, wire

DEFAULT_IMPORTANCE = 0.5
ETAG_MAX_DIGITS = 10
# More paths than there are mutable fields cannot be a sensible mask: refused
# before any is looked at, so a mask's cost stays bounded.
MASK_MAX_PATHS = 32

_INTERACTION_TYPES = {
    InteractionType.STORE: memory_pb2.INTERACTION_TYPE_STORE,
    InteractionType.RECALL: memory_pb2.INTERACTION_TYPE_RECALL,
    InteractionType.UPDATE: memory_pb2.INTERACTION_TYPE_UPDATE,
    InteractionType.FEEDBACK: memory_pb2.INTERACTION_TYPE_FEEDBACK,
    InteractionType.MERGE: memory_pb2.INTERACTION_TYPE_MERGE,
}
_INTERACTION_TYPES_BACK = {v: k for k, v in _INTERACTION_TYPES.items()}

SIGNALS = {
    Signal.IMPORTANCE: memory_service_pb2.RECALL_SIGNAL_IMPORTANCE,
    Signal.RECENCY: memory_service_pb2.RECALL_SIGNAL_RECENCY,
    Signal.LEXICAL: memory_service_pb2.RECALL_SIGNAL_LEXICAL,
    Signal.SEMANTIC: memory_service_pb2.RECALL_SIGNAL_SEMANTIC,
}

# Field-mask path -> (column, how to read it from a validated NewMemory).
_MASK_PATHS = {
    "content": "content",
    "context": "context",
    "importance": "importance",
    "category": "category",
    "tags": "tags",
    "source": "source",
    "confidence": "confidence",
    "expire_time": "expires_at",
    "metadata": "metadata",
    "assistant_profile_id": "assistant_profile_id",
}
assert set(_MASK_PATHS.values()) == set(MUTABLE_MEMORY_FIELDS)


def etag(version: int) -> str:
    return f'W/"{version}"'


def version_from_etag(field: str, value: str) -> int | None:
    if not value:
        return None
    body = value.removeprefix("W/").strip('"')
    # isdigit() alone also admits "²" or "①", which int() rejects with a
    # ValueError (an INTERNAL error), and "١٢", which int() reads as 12.
    # Versions are below 2**31 (10 digits); the length goes first because
    # int() refuses strings of over 4,300 digits with a ValueError too.
    if len(body) > ETAG_MAX_DIGITS or not (body.isascii() and body.isdigit()):
        raise InvalidArgument.one(field, "is not an etag this service issued")
    if not 0 < int(body) < 2**31:
        raise InvalidArgument.one(field, "is not an etag this service issued")
    return int(body)


def _fields(v: check.Violations, m: memory_pb2.Memory, prefix: str) -> dict[str, Any]:
    """Validated values of every mutable field of `m` (all fields, set or not)."""
    importance = m.importance if m.HasField("importance") else DEFAULT_IMPORTANCE
    confidence = m.confidence if m.HasField("confidence") else None
    check.unit_interval(v, f"{prefix}importance", importance)
    if confidence is not None:
        check.unit_interval(v, f"{prefix}confidence", confidence)
    return {
        "content": check.text(
            v, f"{prefix}content", m.content, max_chars=check.CONTENT_MAX_CHARS, required=True
        ),
        "context": check.json_value(v, f"{prefix}context", wire.struct_to_dict(m.context)),
        "importance": importance,
        "category": check.text(
            v, f"{prefix}category", m.category, max_chars=check.CATEGORY_MAX_CHARS, required=True
        ),
        "tags": check.tags(v, f"{prefix}tags", m.tags),
        "source": check.text(v, f"{prefix}source", m.source, max_chars=check.SOURCE_MAX_CHARS),
        "confidence": confidence,
        "expires_at": wire.timestamp(
            v, f"{prefix}expire_time", m.expire_time, m.HasField("expire_time")
        ),
        "metadata": check.json_value(v, f"{prefix}metadata", wire.struct_to_dict(m.metadata)),
        "assistant_profile_id": check.reference_id(
            v, f"{prefix}assistant_profile_id", m.assistant_profile_id
        ),
    }


_DEDUP_POLICIES: dict[int, DedupPolicy] = {
    memory_service_pb2.DEDUP_POLICY_UNSPECIFIED: DedupPolicy.EXACT,
    memory_service_pb2.DEDUP_POLICY_NONE: DedupPolicy.NONE,
    memory_service_pb2.DEDUP_POLICY_EXACT: DedupPolicy.EXACT,
    memory_service_pb2.DEDUP_POLICY_SEMANTIC: DedupPolicy.SEMANTIC,
}

STORE_OUTCOMES = {
    StoreOutcome.CREATED: memory_service_pb2.STORE_OUTCOME_CREATED,
    StoreOutcome.DEDUPLICATED: memory_service_pb2.STORE_OUTCOME_DEDUPLICATED,
    StoreOutcome.REPLAYED: memory_service_pb2.STORE_OUTCOME_ALREADY_DONE,
}


def dedup_options(
    v: check.Violations, policy: int, min_similarity: float | None, prefix: str = ""
) -> Dedup:
    """A DedupPolicy and its dedup_min_similarity (None: unset), checked.

    Also for ImportOptions, whose fields have the same names."""
    chosen = _DEDUP_POLICIES.get(policy)
    if chosen is None:
        v.add(f"{prefix}dedup_policy", f"unknown dedup policy {policy}")
        return NO_DEDUP
    if min_similarity is None:
        return Dedup(chosen)
    if chosen is not DedupPolicy.SEMANTIC:
        v.add(f"{prefix}dedup_min_similarity", "may only be set with DEDUP_POLICY_SEMANTIC")
        return Dedup(chosen)
    if not dedup_rule.valid_min_similarity(min_similarity):
        v.add(
            f"{prefix}dedup_min_similarity",
            f"must be {dedup_rule.MIN_SIMILARITY_LOWEST}..{dedup_rule.MIN_SIMILARITY_HIGHEST}",
        )
        return Dedup(chosen)
    return Dedup(chosen, min_similarity)


def store_request(request: memory_service_pb2.StoreMemoryRequest) -> StoreRequest:
    """StoreMemory's (and each BatchStoreMemories item's) request, validated."""
    memory = new_memory(request)
    v = check.Violations()
    minimum = request.dedup_min_similarity if request.HasField("dedup_min_similarity") else None
    dedup = dedup_options(v, request.dedup_policy, minimum)
    v.check()
    request_id, request_hash = request_identity(request)
    return StoreRequest(memory, request_id, request_hash, dedup)


def new_memory(request: memory_service_pb2.StoreMemoryRequest) -> NewMemory:
    v = check.Violations()
    if not request.HasField("memory"):
        raise InvalidArgument.one("memory", "is required")
    memory = decode_new_memory(v, request.memory)
    v.check()
    assert memory is not None
    return memory


def decode_new_memory(v: check.Violations, m: memory_pb2.Memory) -> NewMemory | None:
    """StoreMemory's reading of a Memory (fields named "memory.*"); None if `v` got violations."""
    user = check.user_id(v, "memory.user_id", m.user_id)
    values = _fields(v, m, "memory.")
    embedding = _embedding(v, m)
    if v.items or user is None:
        return None
    return NewMemory(user_id=user, embedding=embedding, **values)


def _embedding(v: check.Violations, m: memory_pb2.Memory) -> Embedding | None:
    return check.embedding(
        v, "memory.embedding", "memory.embedding_model", m.embedding, m.embedding_model
    )


def memory_patch(request: memory_service_pb2.UpdateMemoryRequest) -> tuple[MemoryPatch, list[str]]:
    v = check.Violations()
    memory_id = check.positive_id(v, "memory.id", request.memory.id)
    count = len(request.update_mask.paths)
    if count > MASK_MAX_PATHS:
        raise InvalidArgument.one(
            "update_mask", f"must have at most {MASK_MAX_PATHS} paths, got {count}"
        )
    paths = list(dict.fromkeys(request.update_mask.paths))
    if not paths:
        v.add("update_mask", "must name at least one field")
    for p in paths:
        if p not in _MASK_PATHS:
            # At most 64 characters of the path: the description travels in
            # the status, which must fit the client's metadata limit.
            v.add(
                "update_mask",
                f"unknown or immutable path {p[:64]!r}; allowed: {', '.join(_MASK_PATHS)}",
            )
    v.check()
    # Validate the whole message, keeping only the masked fields' findings.
    masked = {f"memory.{p}" for p in paths}
    if "content" in paths:  # a new content's embedding comes with it
        masked |= {"memory.embedding", "memory.embedding_model"}
    v = check.Violations(keep=lambda field: field.split("[")[0] in masked)
    values = _fields(v, request.memory, "memory.")
    embedding = _embedding(v, request.memory) if "content" in paths else None
    expected = version_from_etag("memory.etag", request.memory.etag)
    v.check()
    assert memory_id is not None
    patch = MemoryPatch(
        memory_id=memory_id,
        values={_MASK_PATHS[p]: values[_MASK_PATHS[p]] for p in paths},
        expected_version=expected,
        embedding=embedding,
    )
    # Clearing a NOT NULL JSON column means an empty object.
    for column in ("context", "metadata"):
        if column in patch.values and patch.values[column] is None:
            patch.values[column] = {}
    return patch, paths


_TIME_FILTERS = {
    "updated_from": "update_time_start",
    "updated_before": "update_time_end",
    "accessed_from": "last_access_time_start",
    "accessed_before": "last_access_time_end",
}


def _filter_times(
    v: check.Violations,
    request: memory_service_pb2.ListMemoriesRequest | memory_service_pb2.RecallMemoriesRequest,
) -> dict[str, Any]:
    """The update and last-access bounds both requests share, by domain name."""
    return {
        name: wire.timestamp(v, field, getattr(request, field), request.HasField(field))  # type: ignore[arg-type]
        for name, field in _TIME_FILTERS.items()
    }


def memory_filter(request: memory_service_pb2.ListMemoriesRequest) -> MemoryFilter:
    v = check.Violations()
    user = check.user_id(v, "user_id", request.user_id)
    result = MemoryFilter(
        user_id=user,  # type: ignore[arg-type]
        assistant_profile_id=check.reference_id(
            v, "assistant_profile_id", request.assistant_profile_id
        ),
        categories=check.string_list(
            v,
            "categories",
            request.categories,
            max_count=check.FILTER_VALUES_MAX_COUNT,
            max_chars=check.CATEGORY_MAX_CHARS,
        ),
        tags=check.tags(v, "tags", request.tags),
        metadata=check.json_filter(
            v, "metadata_filter", wire.struct_to_dict(request.metadata_filter)
        ),
        **_filter_times(v, request),
    )
    v.check()
    return result


def _weight(v: check.Violations, field: str, present: bool, value: float, default: float) -> float:
    if not present:
        return default
    if not (value == 0.0 or check.SMALLEST_POSITIVE <= value <= ranking.MAX_WEIGHT):
        v.add(
            field,
            f"must be 0 or within {check.SMALLEST_POSITIVE}..{ranking.MAX_WEIGHT}, got {value}",
        )
    return value


def recall_query(
    request: memory_service_pb2.RecallMemoriesRequest, defaults: Weights
) -> RecallQuery:
    v = check.Violations()
    user = check.user_id(v, "user_id", request.user_id)
    query = check.text(v, "query", request.query, max_chars=check.QUERY_MAX_CHARS) or ""
    w = request.weights
    half_life = defaults.half_life
    if w.HasField("recency_half_life"):
        half_life = wire.duration(v, "weights.recency_half_life", w.recency_half_life) or half_life
        if not ranking.MIN_HALF_LIFE <= half_life <= ranking.MAX_HALF_LIFE:
            v.add("weights.recency_half_life", "must be between 1 minute and 100 years")
    weights = Weights(
        importance=_weight(
            v, "weights.importance", w.HasField("importance"), w.importance, defaults.importance
        ),
        recency=_weight(v, "weights.recency", w.HasField("recency"), w.recency, defaults.recency),
        relevance=_weight(
            v, "weights.relevance", w.HasField("relevance"), w.relevance, defaults.relevance
        ),
        half_life=half_life,
        semantic=_weight(
            v, "weights.semantic", w.HasField("semantic"), w.semantic, defaults.semantic
        ),
    )
    if weights.importance == weights.recency == weights.relevance == weights.semantic == 0.0:
        v.add("weights", "at least one weight must be positive")
    context = (
        check.json_value(v, "context", wire.struct_to_dict(request.context))
        if request.HasField("context")
        else None
    )
    result = RecallQuery(
        user_id=user,  # type: ignore[arg-type]
        query=query,
        assistant_profile_id=check.reference_id(
            v, "assistant_profile_id", request.assistant_profile_id
        ),
        categories=check.string_list(
            v,
            "categories",
            request.categories,
            max_count=check.FILTER_VALUES_MAX_COUNT,
            max_chars=check.CATEGORY_MAX_CHARS,
        ),
        tags=check.tags(v, "tags", request.tags),
        match_all_tags=request.tag_match == memory_service_pb2.TAG_MATCH_ALL,
        context=context or None,
        min_importance=check.unit_interval(v, "min_importance", request.min_importance),
        created_from=wire.timestamp(
            v, "create_time_start", request.create_time_start, request.HasField("create_time_start")
        ),
        created_before=wire.timestamp(
            v, "create_time_end", request.create_time_end, request.HasField("create_time_end")
        ),
        metadata=check.json_filter(
            v, "metadata_filter", wire.struct_to_dict(request.metadata_filter)
        ),
        **_filter_times(v, request),
        limit=check.limit(v, "limit", request.limit),
        weights=weights,
        query_embedding=check.embedding(
            v,
            "query_embedding",
            "embedding_model",
            request.query_embedding,
            request.embedding_model,
        ),
        semantic_required=w.HasField("semantic") and w.semantic > 0,
        skip_access_tracking=request.skip_access_tracking,
    )
    v.check()
    return result


def feedback(request: memory_service_pb2.RecordFeedbackRequest) -> Feedback:
    v = check.Violations()
    memory_id = check.positive_id(v, "memory_id", request.memory_id)
    signal = request.WhichOneof("signal")
    if signal is None:
        v.add("signal", "one of helpful or rating is required")
    comment = check.text(v, "comment", request.comment, max_chars=check.COMMENT_MAX_CHARS)
    context = check.json_value(v, "context", wire.struct_to_dict(request.context))
    v.check()
    assert memory_id is not None
    return Feedback(
        memory_id=memory_id,
        helpful=request.helpful if signal == "helpful" else None,
        rating=request.rating if signal == "rating" else None,
        comment=comment or "",
        context=context or {},
    )


def interaction_filter(request: memory_service_pb2.ListInteractionsRequest) -> InteractionFilter:
    v = check.Violations()
    result = InteractionFilter(
        user_id=check.user_id(v, "user_id", request.user_id, required=False),
        memory_id=check.positive_id(v, "memory_id", request.memory_id, required=False),
        type=_INTERACTION_TYPES_BACK.get(request.type),
        start=wire.timestamp(v, "start_time", request.start_time, request.HasField("start_time")),
        end=wire.timestamp(v, "end_time", request.end_time, request.HasField("end_time")),
    )
    if request.type and request.type not in _INTERACTION_TYPES_BACK:
        v.add("type", f"unknown interaction type {request.type}")
    v.check()
    return result


def memory_message(m: Memory) -> memory_pb2.Memory:
    out = memory_pb2.Memory(
        id=m.id,
        user_id=str(m.user_id),
        assistant_profile_id=m.assistant_profile_id or 0,
        content=m.content,
        importance=m.importance,
        category=m.category,
        tags=m.tags,
        source=m.source or "",
        version=m.version,
        etag=etag(m.version),
        import_id=m.import_id or "",
    )
    if m.confidence is not None:
        out.confidence = m.confidence
    wire.fill_struct(out.context, m.context)
    wire.fill_struct(out.metadata, m.metadata)
    wire.fill_timestamp(out.create_time, m.created_at)
    wire.fill_timestamp(out.update_time, m.updated_at)
    wire.fill_timestamp(out.last_access_time, m.last_accessed)
    wire.fill_timestamp(out.expire_time, m.expires_at)
    return out


def scored_message(s: ScoredMemory) -> memory_service_pb2.ScoredMemory:
    return memory_service_pb2.ScoredMemory(
        memory=memory_message(s.memory),
        score=s.score,
        importance_score=s.importance_score,
        recency_score=s.recency_score,
        relevance_score=s.relevance_score,
        semantic_score=s.semantic_score,
    )


def interaction_message(i: Interaction) -> memory_pb2.Interaction:
    out = memory_pb2.Interaction(
        id=i.id, memory_id=i.memory_id, user_id=str(i.user_id), type=_INTERACTION_TYPES[i.type]
    )
    wire.fill_timestamp(out.create_time, i.created_at)
    wire.fill_struct(out.context, i.context)
    wire.fill_struct(out.feedback, i.feedback)
    return out


def revision_message(r: MemoryRevision) -> memory_pb2.MemoryRevision:
    out = memory_pb2.MemoryRevision(
        id=r.id,
        memory_id=r.memory_id,
        user_id=str(r.user_id),
        version=r.version,
        content=r.content,
        importance=r.importance,
        category=r.category,
        tags=r.tags,
        changed_by=r.changed_by,
    )
    wire.fill_struct(out.metadata, r.metadata)
    wire.fill_timestamp(out.expire_time, r.expires_at)
    wire.fill_timestamp(out.change_time, r.changed_at)
    return out


def memory_id(value: int, field: str = "id") -> int:
    v = check.Violations()
    result = check.positive_id(v, field, value)
    v.check()
    assert result is not None
    return result


REQUEST_ID_MAX_CHARS = 128


def request_identity(request: Any) -> tuple[str, str]:
    """(request_id, SHA-256 of the request without it) for an idempotent write.

    The hash lets a replayed request_id be told from a reused one: same id,
    different request is INVALID_ARGUMENT rather than a silent wrong answer.
    """
    request_id: str = request.request_id
    if not request_id:
        return "", ""
    if len(request_id) > REQUEST_ID_MAX_CHARS or not all(" " < c <= "~" for c in request_id):
        raise InvalidArgument.one(
            "request_id", f"must be 1..{REQUEST_ID_MAX_CHARS} printable ASCII characters"
        )
    unkeyed = type(request)()
    unkeyed.CopyFrom(request)
    unkeyed.ClearField("request_id")
    digest = hashlib.sha256(unkeyed.SerializeToString(deterministic=True)).hexdigest()
    return request_id, digest


def store_result(result: Stored | DomainError) -> memory_service_pb2.StoreMemoryResult:
    """One BatchStoreMemories result: the memory and its outcome, or why it was refused."""
    if isinstance(result, DomainError):
        return memory_service_pb2.StoreMemoryResult(
            outcome=memory_service_pb2.STORE_OUTCOME_REJECTED, error=errors.item_error(result)
        )
    return memory_service_pb2.StoreMemoryResult(
        outcome=STORE_OUTCOMES[result.outcome], memory=memory_message(result.memory)
    )
