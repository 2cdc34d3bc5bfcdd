"""Pure rules: ranking, feedback, page tokens, validation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from memory_service.domain import feedback, page_token, ranking, validation
from memory_service.domain.errors import InvalidArgument


def test_recency_halves_every_half_life() -> None:
    half = timedelta(days=30)
    assert ranking.recency(timedelta(0), half) == 1.0
    assert ranking.recency(half, half) == pytest.approx(0.5)
    assert ranking.recency(3 * half, half) == pytest.approx(0.125)
    assert ranking.recency(-half, half) == 1.0  # clock skew never boosts


def test_score_parts_weigh_each_signal() -> None:
    w = ranking.Weights(importance=2.0, recency=1.0, relevance=3.0, half_life=timedelta(days=1))
    assert ranking.score_parts(0.5, timedelta(days=1), 0.2, w) == pytest.approx((1.0, 0.5, 0.6))


@pytest.mark.parametrize(
    ("helpful", "rating", "target"),
    [(True, None, 1.0), (False, None, 0.0), (None, 1, 0.0), (None, 3, 0.5), (None, 5, 1.0)],
)
def test_feedback_targets(helpful: bool | None, rating: int | None, target: float) -> None:
    assert feedback.target_importance(helpful, rating) == target


@pytest.mark.parametrize(("helpful", "rating"), [(None, None), (True, 3), (None, 0), (None, 6)])
def test_bad_feedback(helpful: bool | None, rating: int | None) -> None:
    with pytest.raises(InvalidArgument):
        feedback.target_importance(helpful, rating)


def test_next_importance_moves_part_way_and_stays_bounded() -> None:
    assert feedback.next_importance(0.5, 1.0, 0.2) == pytest.approx(0.6)
    assert feedback.next_importance(0.5, 0.0, 0.2) == pytest.approx(0.4)
    assert feedback.next_importance(1.0, 1.0, 1.0) == 1.0
    assert feedback.next_importance(0.0, 0.0, 0.7) == 0.0
    assert feedback.next_importance(1e-6, 0.0, 0.2) == 0.0  # never subnormal


def test_page_tokens_round_trip_and_bind_to_filters() -> None:
    token = page_token.encode(["2026-01-01T00:00:00+00:00", 42], {"user": "u"})
    assert page_token.decode(token, {"user": "u"}, arity=2) == ["2026-01-01T00:00:00+00:00", 42]
    assert page_token.decode("", {"user": "u"}, arity=2) is None
    for bad, filters in ((token, {"user": "v"}), ("!!", {"user": "u"}), ("e30", {"user": "u"})):
        with pytest.raises(InvalidArgument) as info:
            page_token.decode(bad, filters, arity=2)
        assert info.value.violations[0].field == "page_token"


def test_page_size_rules() -> None:
    assert page_token.page_size(0) == page_token.DEFAULT_PAGE_SIZE
    assert page_token.page_size(10_000) == page_token.MAX_PAGE_SIZE
    assert page_token.page_size(7) == 7
    with pytest.raises(InvalidArgument):
        page_token.page_size(-1)


def test_json_values_are_checked_for_what_jsonb_refuses() -> None:
    v = validation.Violations()
    validation.json_value(v, "a", {"k": "nul\x00"})
    validation.json_value(v, "b", {"k": float("nan")})
    deep: dict[str, object] = {}
    node = deep
    for _ in range(validation.JSON_MAX_DEPTH + 2):
        node["n"] = {}
        node = node["n"]  # type: ignore[assignment]
    validation.json_value(v, "c", deep)
    validation.json_value(v, "d", {"ok": [1, "two", None, True]})
    assert [x.field for x in v.items] == ["a", "b", "c"]


def test_tags_are_deduplicated_and_limited() -> None:
    v = validation.Violations()
    assert validation.tags(v, "tags", ["a", "b", "a"]) == ["a", "b"]
    validation.tags(v, "tags", ["x"] * 33)
    validation.tags(v, "more", ["ok", "y" * 65])
    assert [x.field for x in v.items] == ["tags", "more[1]"]


def test_default_weights_are_the_documented_ones() -> None:
    assert ranking.Weights(1.0, 0.5, 1.0, timedelta(days=30), 4.0) == ranking.DEFAULT_WEIGHTS


@pytest.mark.parametrize(
    "position",
    [
        ["not a time", 1],
        ["2026-01-01T00:00:00", 1],
        ["2026-01-01T00:00:00+00:00", "1"],
        [None, 1],
        ["2026-01-01T00:00:00+00:00", True],
    ],
)
def test_forged_keyset_positions_are_invalid_argument(position: list[object]) -> None:
    token = page_token.encode(position, {"f": 1})
    with pytest.raises(InvalidArgument):
        page_token.decode_time_and_id(token, {"f": 1})
