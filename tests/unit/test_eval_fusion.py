"""The eval's fusion rules (bench/eval/fusion.py) on examples worked out by hand."""

import pytest

from bench.eval import fusion

# q is 4th in both rankings, p and c first in one each.
LEXICAL = ["p", "a", "b", "q"]
SEMANTIC = ["c", "d", "e", "q"]


def test_rrf_with_k_60_rewards_agreement() -> None:
    # q: 2/64 = 0.0313 beats p and c: 1/61 = 0.0164; p and c tie, as do a
    # and d (1/62) and b and e (1/63): the lexical ranking's memory first.
    assert fusion.rrf([LEXICAL, SEMANTIC]) == ["q", "p", "c", "a", "d", "b", "e"]


def test_rrf_with_a_small_k_rewards_first_places() -> None:
    # k=1: p and c 1/2, q 2/5, a and d 1/3, b and e 1/4.
    assert fusion.rrf([LEXICAL, SEMANTIC], k=1) == ["p", "c", "q", "a", "d", "b", "e"]


def test_rrf_ignores_scores_and_counts_a_missing_memory_as_no_vote() -> None:
    assert fusion.rrf([["x", "y"], ["y"]]) == ["y", "x"]
    assert fusion.rrf([[], ["z"]]) == ["z"]


def test_rrf_rejects_a_negative_k() -> None:
    with pytest.raises(ValueError):
        fusion.rrf([LEXICAL], k=-1)


RELEVANCE = {"a": 0.9, "b": 0.3}
SIMILARITY = {"c": 0.5, "b": 0.46, "a": 0.3, "d": 0.2}


def test_weighted_sum_of_raw_scores_is_the_services_rule() -> None:
    # 1 * relevance + 4 * similarity: b 2.14, a 2.1, c 2.0, d 0.8.
    ranked = fusion.weighted_sum([RELEVANCE, SIMILARITY], [1, 4], normalise=False)
    assert ranked == ["b", "a", "c", "d"]


def test_weighted_sum_of_min_max_normalised_scores() -> None:
    # Relevance over a, b, c, d (c and d missing: 0) is 0..0.9: a 1, b 1/3.
    # Similarity is 0.2..0.5: c 1, b 0.867, a 1/3, d 0. Sums: a 1.333,
    # b 1.2, c 1, d 0.
    ranked = fusion.weighted_sum([RELEVANCE, SIMILARITY], [1, 1], normalise=True)
    assert ranked == ["a", "b", "c", "d"]


def test_weighted_sum_normalises_equal_scores_to_one() -> None:
    assert fusion.weighted_sum([{"a": 0.5, "b": 0.5}], [1], normalise=True) == ["a", "b"]
    with pytest.raises(ValueError):
        fusion.weighted_sum([RELEVANCE], [1, 1], normalise=True)
