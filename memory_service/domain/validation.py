"""Input limits and the checks that enforce them.

Every check records a FieldViolation naming the request field, so one
INVALID_ARGUMENT can report all bad fields at once. Limits are documented in
the .proto comments; keep the two in step.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime
from typing import Any

from memory_service.domain.errors import FieldViolation, InvalidArgument
from memory_service.domain.models import RECALL_DEFAULT_LIMIT, Embedding

CONTENT_MAX_CHARS = 8000
CATEGORY_MAX_CHARS = 100
SOURCE_MAX_CHARS = 100
TAGS_MAX_COUNT = 32
TAG_MAX_CHARS = 64
FILTER_VALUES_MAX_COUNT = 50
JSON_MAX_BYTES = 16 * 1024
LESSON_JSON_MAX_BYTES = 64 * 1024
JSON_MAX_DEPTH = 16
# A metadata_filter (JSON containment) is checked against every row the
# listing or recall reads: kept small, it costs little per row.
JSON_FILTER_MAX_BYTES = 4 * 1024
JSON_FILTER_MAX_LEVELS = 8
QUERY_MAX_CHARS = 1000
COMMENT_MAX_CHARS = 2000
EMBEDDING_MAX_DIMENSION = 4096
EMBEDDING_MODEL_MAX_CHARS = 100
# A configured embedding model's name (docs/embeddings.md): storage writes it
# into the recall statement as a literal, so that the HNSW index, partial on
# the model, can serve a cached generic plan.
EMBEDDING_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/@+-]{0,99}")
# Measured cheap up to here (memory_service.proto, RecallMemoriesRequest.limit).
RECALL_MAX_LIMIT = 500
# Most requests of one BatchStoreMemories call.
BATCH_STORE_MAX_REQUESTS = 100
INT32_MAX = 2**31 - 1
# Every time a caller sends (timestamps, dates, page-token positions) lies in
# [TIME_MIN, TIME_END). asyncpg writes Python's datetime.max/min (which
# protobuf's 9999-12-31T23:59:59.999999999Z and 0001-01-01 become) as
# PostgreSQL's +/-infinity and reads infinity back as a naive datetime, so
# values near Python's limits do not round-trip; 9000 leaves room for time
# zone shifts and arithmetic. The tables' CHECK constraints (migration 0007)
# hold the same range.
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_END = datetime(9000, 1, 1, tzinfo=UTC)
TIME_RANGE = "must be from 1970-01-01T00:00:00Z (inclusive) to 9000-01-01T00:00:00Z (exclusive)"
DATE_RANGE = "must be from 1970-01-01 to 8999-12-31"
# The smallest positive score input (importance, confidence, recall weights):
# PostgreSQL raises "value out of range: underflow" when a product of
# nonzero float8s rounds to 0, as 5e-324 * 0.5 does, so a subnormal
# importance or weight would make recall fail. Products of two values of at
# least 1e-6 (and recency's 2**-1000) stay far above that.
SMALLEST_POSITIVE = 1e-6
# At most this many violations are collected (and sent) per request: the rest
# are only counted, so a request listing 100,000 bad items costs no more to
# answer than one listing 11, and the status fits a client's metadata limit.
VIOLATIONS_MAX_COUNT = 10


class Violations:
    """Collects field violations; `check()` raises them together.

    `keep`, if given, says which fields' violations count at all.
    """

    def __init__(self, keep: Callable[[str], bool] | None = None) -> None:
        self.items: list[FieldViolation] = []
        self.omitted = 0
        self._keep = keep

    def add(self, field: str, description: str) -> None:
        if self._keep is not None and not self._keep(field):
            return
        if len(self.items) < VIOLATIONS_MAX_COUNT:
            self.items.append(FieldViolation(field, description))
        else:
            self.omitted += 1

    def check(self) -> None:
        if self.items:
            raise InvalidArgument(self.items, omitted=self.omitted)


def _clean_text(v: Violations, field: str, value: str) -> bool:
    # PostgreSQL text cannot hold NUL; reject it here rather than fail in SQL.
    if "\x00" in value:
        v.add(field, "must not contain NUL characters")
        return False
    return True


def text(
    v: Violations, field: str, value: str, *, max_chars: int, required: bool = False
) -> str | None:
    """A string field; empty means unset (None) unless required."""
    if not value:
        if required:
            v.add(field, "is required")
        return None
    if required and not value.strip():
        v.add(field, "must not be blank")
        return None
    if len(value) > max_chars:
        v.add(field, f"must be at most {max_chars} characters, got {len(value)}")
        return None
    return value if _clean_text(v, field, value) else None


def user_id(v: Violations, field: str, value: str, *, required: bool = True) -> uuid.UUID | None:
    if not value:
        if required:
            v.add(field, "is required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        v.add(field, "must be a UUID such as 6f1c2b9e-4a8d-4c1e-9a55-0d6a3c7e2f10")
        return None


def positive_id(v: Violations, field: str, value: int, *, required: bool = True) -> int | None:
    """A row id: required ids must be > 0; optional ids use 0 for unset."""
    if value == 0 and not required:
        return None
    if value <= 0:
        v.add(field, "must be a positive id")
        return None
    if value > 2**63 - 1:
        v.add(field, "is out of range")
        return None
    return value


def reference_id(v: Violations, field: str, value: int) -> int | None:
    """An optional reference to an integer-keyed table (subjects, profiles): 0 is unset."""
    if value == 0:
        return None
    if not 0 < value <= INT32_MAX:
        v.add(field, f"must be 0 (none) or 1..{INT32_MAX}")
        return None
    return value


def in_time_range(value: datetime) -> bool:
    return TIME_MIN <= value < TIME_END


def date_in_range(value: date) -> bool:
    return TIME_MIN.date() <= value < TIME_END.date()


def unit_interval(v: Violations, field: str, value: float) -> float:
    if not (value == 0.0 or SMALLEST_POSITIVE <= value <= 1.0):  # NaN fails both
        v.add(field, f"must be 0 or within {SMALLEST_POSITIVE}..1.0, got {value}")
    return value


def string_list(
    v: Violations, field: str, values: Iterable[str], *, max_count: int, max_chars: int
) -> list[str]:
    """Non-empty strings, deduplicated in order."""
    items = list(values)
    if len(items) > max_count:
        v.add(field, f"must have at most {max_count} entries, got {len(items)}")
        return []
    seen: dict[str, None] = {}
    for i, item in enumerate(items):
        name = f"{field}[{i}]"
        if not item.strip():
            v.add(name, "must not be blank")
        elif len(item) > max_chars:
            v.add(name, f"must be at most {max_chars} characters")
        elif _clean_text(v, name, item):
            seen.setdefault(item, None)
    return list(seen)


def tags(v: Violations, field: str, values: Iterable[str]) -> list[str]:
    return string_list(v, field, values, max_count=TAGS_MAX_COUNT, max_chars=TAG_MAX_CHARS)


def json_value(v: Violations, field: str, value: Any, *, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """A JSON value that PostgreSQL's jsonb will accept, within size and depth limits."""
    problem = _json_problem(value, 0)
    if problem:
        v.add(field, problem)
        return None
    size = len(json.dumps(value, separators=(",", ":")).encode())
    if size > max_bytes:
        v.add(field, f"must be at most {max_bytes} bytes as JSON, got {size}")
        return None
    return value


def json_filter(v: Violations, field: str, value: dict[str, Any]) -> dict[str, Any] | None:
    """A JSON object to match by containment: None if empty; small and shallow.

    Levels count objects and lists, the outer object being level 1, so
    {"a": {"b": [1]}} has 3.
    """
    if not value:
        return None
    if _levels(value, JSON_FILTER_MAX_LEVELS) > JSON_FILTER_MAX_LEVELS:
        v.add(field, f"must be nested at most {JSON_FILTER_MAX_LEVELS} levels deep")
        return None
    result: dict[str, Any] | None = json_value(v, field, value, max_bytes=JSON_FILTER_MAX_BYTES)
    return result


def _levels(value: Any, limit: int) -> int:
    """How many objects and lists deep `value` is; stops counting past `limit`."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    items = value.values() if isinstance(value, dict) else value
    return 1 + max((_levels(item, limit - 1) for item in items), default=0)


def _json_problem(value: Any, depth: int) -> str | None:
    if depth > JSON_MAX_DEPTH:
        return f"must be nested at most {JSON_MAX_DEPTH} levels deep"
    if isinstance(value, float) and not math.isfinite(value):
        return "must not contain NaN or infinite numbers"
    if isinstance(value, str):
        return "must not contain NUL characters" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return "must not contain NUL characters"
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = _json_problem(item, depth + 1)
            if problem:
                return problem
    return None


def limit(v: Violations, field: str, value: int) -> int:
    if value == 0:
        return RECALL_DEFAULT_LIMIT
    if not 1 <= value <= RECALL_MAX_LIMIT:
        v.add(field, f"must be 1..{RECALL_MAX_LIMIT} (0 for {RECALL_DEFAULT_LIMIT}), got {value}")
    return value


def embedding(
    v: Violations, field: str, model_field: str, values: Iterable[float], model: str
) -> Embedding | None:
    """A caller's vector and its model name, both or neither; finite, bounded."""
    vector = tuple(values)
    if not vector:
        if model:
            v.add(model_field, f"set it only together with {field}")
        return None
    if len(vector) > EMBEDDING_MAX_DIMENSION:
        v.add(field, f"must have at most {EMBEDDING_MAX_DIMENSION} dimensions, got {len(vector)}")
        return None
    if not all(math.isfinite(x) for x in vector):
        v.add(field, "must not contain NaN or infinite numbers")
        return None
    name = text(v, model_field, model, max_chars=EMBEDDING_MODEL_MAX_CHARS, required=True)
    return Embedding(name, vector) if name else None
