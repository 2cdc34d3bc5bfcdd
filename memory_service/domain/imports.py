"""ImportMemories' rules: one item's checks, its outcome, the stream's tally. No I/O.

An item is a memory with StoreMemory's rules (domain.validation), an
import_id, and its original times. The times are bounded so that an import
cannot write what the service could never have written itself:

- `create_time` defaults to now, `update_time` to `create_time`,
  `last_access_time` to unset;
- each lies from 1970-01-01T00:00:00Z to now. Up to CLOCK_SKEW ahead of the
  server's clock is accepted and taken as now (an exporter's clock a little
  ahead must not reject a fresh memory); further ahead is rejected;
- create_time <= update_time and create_time <= last_access_time (compared
  as sent, before the skew is taken off);
- `expire_time`, if set, lies in the future, as for StoreMemory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from memory_service.domain.errors import (
    DomainError,
    FieldViolation,
    InvalidArgument,
)
from memory_service.domain.models import NewMemory
from memory_service.domain.validation import TIME_MIN, Violations

IMPORT_ID_MAX_CHARS = 128
# Items per ImportMemoriesRequest.items message.
ITEMS_MAX_COUNT = 1000
# Non-CREATED results kept in the response; the counts are always complete.
RESULTS_MAX_COUNT = 1000
# How far ahead of the server's clock an original time may be, taken as now.
CLOCK_SKEW = timedelta(seconds=60)


class Outcome(Enum):
    CREATED = "created"
    DEDUPLICATED = "deduplicated"
    ALREADY_DONE = "already_done"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ImportItem:
    """One valid item: the memory and its original times (skew already taken off)."""

    index: int  # position in the stream, from 0
    import_id: str
    memory: NewMemory
    created_at: datetime
    updated_at: datetime
    last_accessed: datetime | None


@dataclass(frozen=True, slots=True)
class ItemResult:
    index: int
    import_id: str
    outcome: Outcome
    memory_id: int = 0
    error: DomainError | None = None


@dataclass
class ImportTally:
    """The response's counts, and up to RESULTS_MAX_COUNT results that were not CREATED."""

    received: int = 0
    counts: dict[Outcome, int] = field(default_factory=lambda: dict.fromkeys(Outcome, 0))
    results: list[ItemResult] = field(default_factory=list)
    omitted: int = 0

    def add(self, result: ItemResult) -> None:
        self.counts[result.outcome] += 1
        if result.outcome is Outcome.CREATED:
            return
        if len(self.results) < RESULTS_MAX_COUNT:
            self.results.append(result)
        else:
            self.omitted += 1


def import_id(v: Violations, field_name: str, value: str) -> str:
    """1..128 printable ASCII characters, as a request_id."""
    if not value:
        v.add(field_name, "is required")
    elif len(value) > IMPORT_ID_MAX_CHARS:
        v.add(field_name, f"must be at most {IMPORT_ID_MAX_CHARS} characters, got {len(value)}")
    elif not all(" " <= c <= "~" for c in value):
        v.add(field_name, "must be printable ASCII characters only")
    return value


def original_times(
    v: Violations,
    now: datetime,
    create: tuple[str, datetime | None],
    update: tuple[str, datetime | None],
    last_access: tuple[str, datetime | None],
) -> tuple[datetime, datetime, datetime | None]:
    """(created_at, updated_at, last_accessed) from the sent times (field, value or None).

    Values already passed the API-wide time range (rpc.wire.timestamp); here
    the import's tighter bounds and order. A violation is recorded on `v`;
    the returned values are then meaningless.
    """
    latest = now + CLOCK_SKEW
    for name, value in (create, update, last_access):
        if value is not None and not TIME_MIN <= value <= latest:
            v.add(name, "must be from 1970-01-01T00:00:00Z to now (the server's clock)")
    created = create[1] if create[1] is not None else now
    updated = update[1] if update[1] is not None else created
    if update[1] is not None and updated < created:
        v.add(update[0], f"must not be before {create[0]}")
    if last_access[1] is not None and last_access[1] < created:
        v.add(last_access[0], f"must not be before {create[0]}")
    accessed = last_access[1]
    return (
        min(created, now),
        min(updated, now),
        None if accessed is None else min(accessed, now),
    )


def expire_time(v: Violations, field_name: str, value: datetime | None, now: datetime) -> None:
    if value is not None and value <= now:
        v.add(field_name, "must be in the future")


def rejected(index: int, import_id_sent: str, error: DomainError) -> ItemResult:
    return ItemResult(index, import_id_sent[:IMPORT_ID_MAX_CHARS], Outcome.REJECTED, error=error)


def invalid(index: int, import_id_sent: str, violations: list[FieldViolation]) -> ItemResult:
    return rejected(index, import_id_sent, InvalidArgument(violations))
