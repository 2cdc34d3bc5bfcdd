"""The denied-call budget per peer address: pure arithmetic on a given clock."""

from __future__ import annotations

import pytest

from memory_service.domain.denial_budget import OTHER_PEERS, DenialBudget, peer_address


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.0.0.7:53122", "10.0.0.7"),
        ("ipv6:[2001:db8::1]:53122", "2001:db8::/64"),
        ("ipv6:%5B2001:db8::ffff:1%5D:1", "2001:db8::/64"),
        ("ipv6:[::ffff:127.0.0.1]:40858", "127.0.0.1"),
        ("unix:/run/faraday.sock", "unix:/run/faraday.sock"),
        ("ipv4:not-an-address:1", "ipv4:not-an-address:1"),
    ],
)
def test_peer_address_groups_what_one_host_holds(peer: str, address: str) -> None:
    assert peer_address(peer) == address


def test_a_peer_is_heard_for_its_burst_then_refused_until_it_refills() -> None:
    budget = DenialBudget(rate_per_second=1.0, burst=3)
    assert budget.refuse("a", 0.0) == 0.0  # never denied: heard
    assert [budget.charge("a", 0.0) for _ in range(3)] == [True, True, True]
    assert budget.refuse("a", 0.0) == pytest.approx(1.0)
    assert budget.refuse("a", 0.5) == pytest.approx(0.5)
    assert budget.refuse("b", 0.5) == 0.0  # another address has its own budget
    assert budget.refuse("a", 1.0) == 0.0
    assert budget.take_refusals() == {"a": 2}
    assert budget.take_refusals() == {}


def test_refusals_are_counted_within_a_bound_and_can_be_put_back() -> None:
    budget = DenialBudget(rate_per_second=1.0, burst=1, max_peers=2)
    for peer in ("a", "b", "c"):
        budget.charge(peer, 0.0)
    # At most max_peers buckets: "a", the least recently used, is forgotten (full).
    assert budget.refuse("a", 0.0) == 0.0
    assert budget.refuse("b", 0.0) > 0 and budget.refuse("c", 0.0) > 0
    budget.charge("d", 0.0)
    assert budget.refuse("d", 0.0) > 0
    refusals = budget.take_refusals()
    assert refusals == {"b": 1, "c": 1, OTHER_PEERS: 1}
    budget.keep_refusals(refusals)
    budget.keep_refusals({"b": 2})
    assert budget.take_refusals() == {"b": 3, "c": 1, OTHER_PEERS: 1}


def test_a_budget_that_hears_nobody_is_refused() -> None:
    with pytest.raises(ValueError):
        DenialBudget(rate_per_second=0.0, burst=5)
    with pytest.raises(ValueError):
        DenialBudget(rate_per_second=1.0, burst=0)
