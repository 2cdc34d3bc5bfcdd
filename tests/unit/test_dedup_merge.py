"""domain.dedup.merged: the merge rule of DedupPolicy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from memory_service.domain.dedup import Dedup, DedupPolicy, Existing, merged
from memory_service.domain.validation import JSON_MAX_BYTES

T1 = datetime(2030, 1, 1, tzinfo=UTC)
T2 = datetime(2031, 1, 1, tzinfo=UTC)


def _m(**values: object) -> Existing:
    base: dict[str, object] = {
        "tags": [],
        "importance": 0.5,
        "expires_at": None,
        "metadata": {},
        "confidence": None,
    }
    return Existing(**(base | values))  # type: ignore[arg-type]


def test_tags_append_in_order_without_repeats_up_to_the_limit() -> None:
    assert merged(_m(tags=["a", "b"]), _m(tags=["c", "a", "d"])).tags == ["a", "b", "c", "d"]
    many = merged(_m(tags=[f"x{i}" for i in range(31)]), _m(tags=["y", "z"])).tags
    assert len(many) == 32 and many[-1] == "y"


def test_importance_and_confidence_are_the_higher() -> None:
    assert merged(_m(importance=0.2), _m(importance=0.7)).importance == 0.7
    assert merged(_m(importance=0.9), _m(importance=0.7)).importance == 0.9
    assert merged(_m(confidence=None), _m(confidence=0.3)).confidence == 0.3
    assert merged(_m(confidence=0.8), _m(confidence=None)).confidence == 0.8
    assert merged(_m(), _m()).confidence is None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [(T1, T2, T2), (T2, T1, T2), (None, T1, None), (T1, None, None), (None, None, None)],
)
def test_expiry_is_the_later_and_never_is_latest(
    old: datetime | None, new: datetime | None, expected: datetime | None
) -> None:
    assert merged(_m(expires_at=old), _m(expires_at=new)).expires_at == expected


def test_metadata_gains_missing_keys_within_the_size_limit() -> None:
    result = merged(_m(metadata={"a": 1, "b": 2}), _m(metadata={"b": 3, "c": 4}))
    assert result.metadata == {"a": 1, "b": 2, "c": 4}
    big = {"big": "x" * (JSON_MAX_BYTES - 20)}
    assert merged(_m(metadata=big), _m(metadata={"more": "y" * 100})).metadata == big


def test_min_similarity_only_with_semantic() -> None:
    with pytest.raises(ValueError):
        Dedup(DedupPolicy.EXACT, 0.9)
    assert Dedup(DedupPolicy.SEMANTIC, 0.9).active and not Dedup(DedupPolicy.NONE).active
