"""Dedup of stored memories (memory_service.proto DedupPolicy): the policy and the merge rule.

A store under a dedup policy that finds the same fact already stored for the
same user and assistant profile does not create a second memory: the
existing one absorbs the new one by `merged`, and the store reports
DEDUPLICATED. Finding the duplicate is storage's (storage/memories.py: the
content key of migration 0014, the nearest embedding for SEMANTIC, and the
advisory lock that makes concurrent stores of one fact end as one memory).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from memory_service.domain.models import Memory, NewMemory
from memory_service.domain.validation import JSON_MAX_BYTES, TAGS_MAX_COUNT

# DEDUP_POLICY_SEMANTIC's threshold bounds (StoreMemoryRequest.dedup_min_similarity).
MIN_SIMILARITY_LOWEST = 0.5
MIN_SIMILARITY_HIGHEST = 1.0
# The server's default threshold (FARADAY_DEDUP_MIN_SIMILARITY). Measured
# with wordllama-l2-supercat-256 (docs/dedup.md): no threshold separates
# reworded facts from facts that differ in one number or name, so SEMANTIC
# stays opt-in and EXACT is the default policy.
DEFAULT_MIN_SIMILARITY = 0.95


class DedupPolicy(StrEnum):
    NONE = "none"
    EXACT = "exact"
    SEMANTIC = "semantic"


class StoreOutcome(StrEnum):
    """What a store did (the `faraday-store-outcome` header, StoreMemoryResult.outcome)."""

    CREATED = "created"
    DEDUPLICATED = "deduplicated"
    REPLAYED = "replayed"  # a retry of a request_id: nothing changed


@dataclass(frozen=True, slots=True)
class Dedup:
    """A store's dedup policy; `min_similarity` only for SEMANTIC (None: the server's)."""

    policy: DedupPolicy = DedupPolicy.EXACT
    min_similarity: float | None = None

    def __post_init__(self) -> None:
        if self.min_similarity is not None and self.policy is not DedupPolicy.SEMANTIC:
            raise ValueError("min_similarity is for the semantic policy only")

    @property
    def active(self) -> bool:
        return self.policy is not DedupPolicy.NONE


NO_DEDUP = Dedup(DedupPolicy.NONE)
DEFAULT_DEDUP = Dedup(DedupPolicy.EXACT)


@dataclass(frozen=True, slots=True)
class Stored:
    """A store's memory (created, merged into, or replayed) and what happened."""

    memory: Memory
    outcome: StoreOutcome


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """One StoreMemory request, validated: the memory, its request id and hash, its policy."""

    memory: NewMemory
    request_id: str = ""
    request_hash: str = ""
    dedup: Dedup = DEFAULT_DEDUP


def valid_min_similarity(value: float) -> bool:
    return math.isfinite(value) and MIN_SIMILARITY_LOWEST <= value <= MIN_SIMILARITY_HIGHEST


@dataclass(frozen=True, slots=True)
class Existing:
    """The values of the memory a duplicate merges into that the merge may change."""

    tags: list[str]
    importance: float
    expires_at: datetime | None
    metadata: dict[str, Any]
    confidence: float | None


def merged(existing: Existing, new: Existing) -> Existing:
    """The existing memory after absorbing a duplicate (DedupPolicy's rule).

    Tags: the new ones appended in order, none twice, up to the tag limit.
    Importance and confidence: the higher. Expiry: the later, unset (never)
    being the latest. Metadata: keys the existing memory lacks are added;
    its own values win, and keys that would take it past the metadata size
    limit are left out (repeated merges must not grow it without bound).
    """
    tags = list(existing.tags)
    for tag in new.tags:
        if len(tags) >= TAGS_MAX_COUNT:
            break
        if tag not in tags:
            tags.append(tag)
    expires_at = (
        None
        if existing.expires_at is None or new.expires_at is None
        else max(existing.expires_at, new.expires_at)
    )
    confidences = [c for c in (existing.confidence, new.confidence) if c is not None]
    return Existing(
        tags=tags,
        importance=max(existing.importance, new.importance),
        expires_at=expires_at,
        metadata=_merged_metadata(existing.metadata, new.metadata),
        confidence=max(confidences) if confidences else None,
    )


def _json_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def _merged_metadata(existing: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    result = dict(existing)
    for key, value in new.items():
        if key in result:
            continue
        result[key] = value
        if _json_size(result) > JSON_MAX_BYTES:
            del result[key]
    return result
