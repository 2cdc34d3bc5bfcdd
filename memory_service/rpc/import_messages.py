"""ImportMemories messages <-> domain values. The rules live in domain.imports."""

from __future__ import annotations

from datetime import datetime

from faraday.memory.v1 import memory_service_pb2
from google.rpc import code_pb2

from memory_service.domain import imports
from memory_service.domain import validation as check
from memory_service.domain.dedup import Dedup
from memory_service.domain.errors import DomainError, InvalidArgument
from memory_service.domain.imports import ImportItem, ItemResult
from memory_service.rpc import wire
from memory_service.rpc.errors import status_code_for
from memory_service.rpc.memory_messages import decode_new_memory, dedup_options

_OUTCOMES = {
    imports.Outcome.CREATED: memory_service_pb2.STORE_OUTCOME_CREATED,
    imports.Outcome.DEDUPLICATED: memory_service_pb2.STORE_OUTCOME_DEDUPLICATED,
    imports.Outcome.ALREADY_DONE: memory_service_pb2.STORE_OUTCOME_ALREADY_DONE,
    imports.Outcome.REJECTED: memory_service_pb2.STORE_OUTCOME_REJECTED,
}


def import_options(request: memory_service_pb2.ImportMemoriesRequest | None) -> Dedup:
    """The first message's options; INVALID_ARGUMENT for the stream if it has none.

    The checks are StoreMemoryRequest's (memory_messages.dedup_options); an
    unset threshold is the server's default (services/imports.py fills it).
    """
    if request is None or request.WhichOneof("payload") != "options":
        raise InvalidArgument.one(
            "options", "the first message of an ImportMemories stream must carry the options"
        )
    options = request.options
    v = check.Violations()
    minimum = options.dedup_min_similarity if options.HasField("dedup_min_similarity") else None
    dedup = dedup_options(v, options.dedup_policy, minimum, prefix="options.")
    v.check()
    return dedup


def items_of(
    request: memory_service_pb2.ImportMemoriesRequest,
) -> list[memory_service_pb2.ImportItem]:
    """A later message's items; INVALID_ARGUMENT for the stream if it is not 1..1000 items."""
    if request.WhichOneof("payload") != "items":
        raise InvalidArgument.one(
            "options", "only the first message of an ImportMemories stream carries options"
        )
    count = len(request.items.items)
    if not 1 <= count <= imports.ITEMS_MAX_COUNT:
        raise InvalidArgument.one(
            "items.items", f"must hold 1..{imports.ITEMS_MAX_COUNT} items, got {count}"
        )
    return list(request.items.items)


def import_item(
    item: memory_service_pb2.ImportItem, index: int, now: datetime
) -> ImportItem | ItemResult:
    """The item's domain value, or its REJECTED result naming each bad field (relative to it)."""
    v = check.Violations()
    import_id = imports.import_id(v, "import_id", item.import_id)
    m = item.memory
    if not item.HasField("memory"):
        v.add("memory", "is required")
        return imports.invalid(index, item.import_id, v.items)
    memory = decode_new_memory(v, m)
    times = [
        (
            "memory.create_time",
            wire.timestamp(v, "memory.create_time", m.create_time, m.HasField("create_time")),
        ),
        (
            "memory.update_time",
            wire.timestamp(v, "memory.update_time", m.update_time, m.HasField("update_time")),
        ),
        (
            "memory.last_access_time",
            wire.timestamp(
                v, "memory.last_access_time", m.last_access_time, m.HasField("last_access_time")
            ),
        ),
    ]
    created, updated, accessed = imports.original_times(v, now, times[0], times[1], times[2])
    if memory is not None:
        imports.expire_time(v, "memory.expire_time", memory.expires_at, now)
    if v.items or memory is None:
        return imports.rejected(index, item.import_id, InvalidArgument(v.items, omitted=v.omitted))
    return ImportItem(index, import_id, memory, created, updated, accessed)


def _item_error(error: DomainError) -> memory_service_pb2.ItemError:
    message = memory_service_pb2.ItemError(
        code=status_code_for(error), message=error.message, reason=error.reason
    )
    if isinstance(error, InvalidArgument):
        shown = error.violations[: check.VIOLATIONS_MAX_COUNT]
        message.field_violations.extend(
            memory_service_pb2.FieldViolation(field=f.field, description=f.description)
            for f in shown
        )
    if message.code == code_pb2.INTERNAL:  # never the text of a bug
        message.message = "internal error"
    return message


def _result(result: ItemResult) -> memory_service_pb2.ImportItemResult:
    message = memory_service_pb2.ImportItemResult(
        index=result.index,
        import_id=result.import_id,
        outcome=_OUTCOMES[result.outcome],
        memory_id=result.memory_id,
    )
    if result.error is not None:
        message.error.CopyFrom(_item_error(result.error))
    return message


def import_response(tally: imports.ImportTally) -> memory_service_pb2.ImportMemoriesResponse:
    counts = tally.counts
    return memory_service_pb2.ImportMemoriesResponse(
        received=tally.received,
        created=counts[imports.Outcome.CREATED],
        deduplicated=counts[imports.Outcome.DEDUPLICATED],
        already_done=counts[imports.Outcome.ALREADY_DONE],
        rejected=counts[imports.Outcome.REJECTED],
        results=[_result(r) for r in tally.results],
        results_omitted=tally.omitted,
    )
