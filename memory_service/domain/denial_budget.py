"""How many denied calls a peer address may make before it is refused unheard.

Authentication costs work (a JWT signature check) and every denied call is
audited, so a caller without valid credentials could otherwise flood both.
Each peer address gets a token bucket (domain.token_bucket) that only
denials (UNAUTHENTICATED, PERMISSION_DENIED) spend. While it is empty every
call from that address is answered RESOURCE_EXHAUSTED before authentication
and writes no row of its own; the calls refused that way are counted, and
the counts are written as one aggregated audit row per address and interval
(`take_refusals`).

IPv6 peers are grouped by their /64, the block one host usually holds, so a
host cannot get a fresh budget per address. Callers that share an address
with a flooding one (NAT) are refused too while its bucket is empty: that is
the price of deciding before authentication.

At most `max_peers` addresses are tracked (least recently used dropped
first; a dropped bucket is a full one); refusals of dropped addresses are
still counted, under OTHER_PEERS.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict

from memory_service.domain.token_bucket import BucketState, take

OTHER_PEERS = "other"
DEFAULT_MAX_PEERS = 10_000


# Per connection (the peer string holds its port), asked on every call.
@functools.lru_cache(maxsize=1024)
def peer_address(peer: str) -> str:
    """grpc's peer string ("ipv4:10.0.0.7:53122", "ipv6:[2001:db8::1]:53122") to a budget key."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer[:255]  # unix sockets and the like: one budget per name
    host = rest.rsplit(":", 1)[0].replace("%5B", "[").replace("%5D", "]").strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return peer[:255]
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class DenialBudget:
    def __init__(
        self, rate_per_second: float, burst: int, max_peers: int = DEFAULT_MAX_PEERS
    ) -> None:
        if not rate_per_second > 0 or burst < 1:
            raise ValueError("denied calls need a rate above 0 and a burst of at least 1")
        self._rate = rate_per_second
        self._burst = burst
        self._max_peers = max_peers
        self._buckets: OrderedDict[str, BucketState] = OrderedDict()
        self._refusals: dict[str, int] = {}

    def refuse(self, peer: str, now: float) -> float:
        """Seconds until `peer` may be heard again (0.0: now); a refusal is counted."""
        state = self._buckets.get(peer)
        if state is None:
            return 0.0
        _, wait = take(state, now, self._rate, self._burst)  # a look: nothing is stored
        if wait > 0:
            key = peer if len(self._refusals) < self._max_peers else OTHER_PEERS
            self._refusals[key] = self._refusals.get(key, 0) + 1
        return wait

    def charge(self, peer: str, now: float) -> bool:
        """Spend one denial; False when the budget was already empty."""
        state, wait = take(self._buckets.get(peer), now, self._rate, self._burst)
        self._buckets[peer] = state
        self._buckets.move_to_end(peer)
        while len(self._buckets) > self._max_peers:
            self._buckets.popitem(last=False)
        return wait == 0

    def take_refusals(self) -> dict[str, int]:
        """The refusals counted since the last call, per address; the counts start again."""
        refusals, self._refusals = self._refusals, {}
        return refusals

    def keep_refusals(self, refusals: dict[str, int]) -> None:
        """Put back counts that could not be written, to go with the next ones."""
        for peer, count in refusals.items():
            self._refusals[peer] = self._refusals.get(peer, 0) + count
