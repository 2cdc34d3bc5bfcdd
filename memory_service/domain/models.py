"""The service's data, as plain immutable values (no I/O, no protobuf, no SQL)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar

T = TypeVar("T")

JsonObject = dict[str, Any]


class InteractionType(StrEnum):
    STORE = "store"
    RECALL = "recall"
    UPDATE = "update"
    FEEDBACK = "feedback"
    MERGE = "merge"


class LessonStatus(StrEnum):
    DRAFT = "draft"
    PUBLISHED = "published"
    ARCHIVED = "archived"


@dataclass(frozen=True, slots=True)
class Memory:
    id: int
    user_id: uuid.UUID
    assistant_profile_id: int | None
    content: str
    context: JsonObject
    importance: float
    category: str
    tags: list[str]
    source: str | None
    confidence: float | None
    version: int
    created_at: datetime
    updated_at: datetime
    last_accessed: datetime | None
    expires_at: datetime | None
    metadata: JsonObject
    # The ImportItem.import_id it was imported as; None for a stored memory.
    import_id: str | None = None


@dataclass(frozen=True, slots=True)
class Embedding:
    """A text's embedding and the model it came from (unit length for built-in models)."""

    model: str
    vector: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class NewMemory:
    user_id: uuid.UUID
    assistant_profile_id: int | None
    content: str
    context: JsonObject
    importance: float
    category: str
    tags: list[str]
    source: str | None
    confidence: float | None
    expires_at: datetime | None
    metadata: JsonObject
    embedding: Embedding | None = None


# Memory fields UpdateMemory may change, by column name.
MUTABLE_MEMORY_FIELDS = (
    "content",
    "context",
    "importance",
    "category",
    "tags",
    "source",
    "confidence",
    "expires_at",
    "metadata",
    "assistant_profile_id",
)


@dataclass(frozen=True, slots=True)
class MemoryPatch:
    """New values for some columns of one memory (keys from MUTABLE_MEMORY_FIELDS)."""

    memory_id: int
    values: dict[str, Any]
    expected_version: int | None
    # With "content" in values: the new content's embedding, or None to
    # drop the old one (it no longer describes the memory).
    embedding: Embedding | None = None


@dataclass(frozen=True, slots=True)
class MemoryFilter:
    """ListMemories' filters; a page token is bound to all of them (domain.page_token).

    Time bounds are [from, before). A memory never recalled (last_accessed
    None) counts as accessed before every time: it fails accessed_from and
    passes accessed_before.
    """

    user_id: uuid.UUID
    assistant_profile_id: int | None = None
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    metadata: JsonObject | None = None  # JSON containment (metadata @> this)
    updated_from: datetime | None = None
    updated_before: datetime | None = None
    accessed_from: datetime | None = None
    accessed_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Weights:
    importance: float
    recency: float
    relevance: float
    half_life: timedelta
    semantic: float = 0.0


# Memories a recall returns when the caller does not say.
RECALL_DEFAULT_LIMIT = 10


@dataclass(frozen=True, slots=True)
class RecallQuery:
    """A recall of one user's memories; left out, a part means no query text and no filter."""

    user_id: uuid.UUID
    weights: Weights
    query: str = ""
    assistant_profile_id: int | None = None
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    match_all_tags: bool = False
    context: JsonObject | None = None
    min_importance: float = 0.0
    created_from: datetime | None = None
    created_before: datetime | None = None
    # As in MemoryFilter.
    metadata: JsonObject | None = None
    updated_from: datetime | None = None
    updated_before: datetime | None = None
    accessed_from: datetime | None = None
    accessed_before: datetime | None = None
    limit: int = RECALL_DEFAULT_LIMIT
    query_embedding: Embedding | None = None
    # The caller set a semantic weight above 0: an error, not a silent
    # lexical-only recall, if semantic ranking is impossible.
    semantic_required: bool = False
    # A background recall: log no interactions, leave last_accessed alone.
    skip_access_tracking: bool = False


class Signal(StrEnum):
    """What a recall ranked by."""

    IMPORTANCE = "importance"
    RECENCY = "recency"
    LEXICAL = "lexical"
    SEMANTIC = "semantic"


@dataclass(frozen=True, slots=True)
class ScoredMemory:
    memory: Memory
    score: float
    importance_score: float
    recency_score: float
    relevance_score: float
    semantic_score: float = 0.0


@dataclass(frozen=True, slots=True)
class Recalled:
    memories: list[ScoredMemory]
    signals: tuple[Signal, ...]


@dataclass(frozen=True, slots=True)
class Interaction:
    id: int
    memory_id: int
    user_id: uuid.UUID
    type: InteractionType
    created_at: datetime
    context: JsonObject | None
    feedback: JsonObject | None


@dataclass(frozen=True, slots=True)
class MemoryRevision:
    """A memory's values before one change of them, who made the change and when."""

    id: int
    memory_id: int
    user_id: uuid.UUID
    version: int  # the memory's version while it had these values
    content: str
    importance: float
    category: str
    tags: list[str]
    metadata: JsonObject
    expires_at: datetime | None
    changed_by: str
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class InteractionFilter:
    user_id: uuid.UUID | None
    memory_id: int | None
    type: InteractionType | None
    start: datetime | None
    end: datetime | None


@dataclass(frozen=True, slots=True)
class Feedback:
    memory_id: int
    helpful: bool | None
    rating: int | None
    comment: str
    context: JsonObject


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_position: list[Any] | None


@dataclass(frozen=True, slots=True)
class User:
    id: uuid.UUID | None
    email: str
    name: str | None
    # None only in an upsert: active if new, else unchanged. Stored users
    # always have a value.
    is_active: bool | None
    school: str | None
    department: str | None
    subjects: list[str]
    grade_levels: list[str]
    custom_instructions: str | None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserPreferences:
    user_id: uuid.UUID
    theme: str | None
    notifications: JsonObject
    language: str | None
    timezone: str | None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SubjectCategory:
    id: int | None
    name: str
    description: str | None
    parent_id: int | None
    # None only in an upsert: in use if new, else unchanged.
    is_active: bool | None
    metadata: JsonObject | None
    level: int = 1


@dataclass(frozen=True, slots=True)
class Capability:
    name: str
    description: str | None
    parameters: JsonObject | None
    # None only in an upsert: on if new to the profile, else unchanged.
    is_enabled: bool | None
    priority: int


@dataclass(frozen=True, slots=True)
class AssistantProfile:
    id: int | None
    name: str
    description: str | None
    model_version: str
    # None only in an upsert: in use if new, else unchanged.
    is_active: bool | None
    configuration: JsonObject | None
    capabilities: list[Capability]


@dataclass(frozen=True, slots=True)
class Lesson:
    id: int | None
    title: str
    user_id: uuid.UUID
    subject_category_id: int | None
    assistant_profile_id: int | None
    grade_level: str | None
    week_of: date | None
    content_area: str | None
    lesson_data: JsonObject
    objectives: Any
    materials: Any
    activities: Any
    assessment_criteria: Any
    feedback: Any
    status: LessonStatus
    tags: list[str]
    related_lessons: list[int]
    subject_category_name: str | None = None
    assistant_profile_name: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LessonFilter:
    user_id: uuid.UUID | None = None
    status: LessonStatus | None = None
    week_of_start: date | None = None
    week_of_end: date | None = None
    grade_level: str | None = None
    subject_category_id: int | None = None
    subject_category_name: str | None = None
    tags: list[str] = field(default_factory=list)
    lesson_data: JsonObject | None = None


@dataclass(frozen=True, slots=True)
class LessonMatch:
    lesson: Lesson
    rank: float
