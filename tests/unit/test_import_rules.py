"""ImportMemories' pure rules: import ids, original times, the tally's cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory_service.domain import imports
from memory_service.domain.errors import NotFound
from memory_service.domain.imports import ImportTally, ItemResult, Outcome
from memory_service.domain.validation import Violations

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _times(create=None, update=None, access=None):
    v = Violations()
    result = imports.original_times(
        v,
        NOW,
        ("memory.create_time", create),
        ("memory.update_time", update),
        ("memory.last_access_time", access),
    )
    return result, [f.field for f in v.items]


def test_defaults_are_now_then_create_time_then_unset() -> None:
    assert _times() == ((NOW, NOW, None), [])
    assert _times(create=T0) == ((T0, T0, None), [])
    assert _times(create=T0, update=T0 + timedelta(days=1), access=T0) == (
        (T0, T0 + timedelta(days=1), T0),
        [],
    )


def test_times_are_bounded_and_ordered() -> None:
    ahead = NOW + imports.CLOCK_SKEW + timedelta(seconds=1)
    assert _times(create=ahead)[1] == ["memory.create_time"]
    assert _times(update=ahead)[1] == ["memory.update_time"]
    assert _times(create=T0, access=ahead)[1] == ["memory.last_access_time"]
    assert _times(create=T0, update=T0 - timedelta(microseconds=1))[1] == ["memory.update_time"]
    assert _times(create=T0, access=T0 - timedelta(days=1))[1] == ["memory.last_access_time"]
    # The defaults follow create_time: an update_time left out is never before it.
    assert _times(create=T0)[1] == []


def test_a_little_clock_skew_is_taken_as_now() -> None:
    skewed = NOW + imports.CLOCK_SKEW
    assert _times(create=skewed, update=skewed, access=skewed) == ((NOW, NOW, NOW), [])


def test_import_ids_are_printable_ascii_up_to_128() -> None:
    for value, ok in (("a", True), ("~ !", True), ("x" * 128, True), ("", False),
                      ("x" * 129, False), ("tab\\there", True), ("tab\there", False),
                      ("é", False), ("nul\x00", False)):  # fmt: skip
        v = Violations()
        imports.import_id(v, "import_id", value)
        assert (not v.items) is ok, value


def test_the_tally_counts_everything_but_keeps_at_most_1000_results() -> None:
    tally = ImportTally()
    tally.add(ItemResult(0, "c", Outcome.CREATED, 1))
    for n in range(1, imports.RESULTS_MAX_COUNT + 6):
        tally.add(imports.rejected(n, "r" * 200, NotFound("user", n)))
    assert tally.counts[Outcome.CREATED] == 1
    assert tally.counts[Outcome.REJECTED] == imports.RESULTS_MAX_COUNT + 5
    assert len(tally.results) == imports.RESULTS_MAX_COUNT and tally.omitted == 5
    assert tally.results[0].import_id == "r" * 128  # cut as the contract says
