"""Deadlines, and gRPC's own retry policy for the calls that are safe to repeat.

Which methods are retried, on which codes and with what backoff is the
service config in ``service_config.json`` beside this module: the one copy,
shipped in the wheel and documented in the README for clients in other
languages. gRPC applies it per method name, so every attempt resends the
same serialized request (request ids stay the same by construction), the
call's deadline covers all attempts, and a server-streaming call is retried
only until its first response arrives. The server's ``grpc-retry-pushback-ms``
trailer (sent with RetryInfo on RESOURCE_EXHAUSTED and UNAVAILABLE) sets the
wait before the next attempt, or forbids it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

# gRPC treats a larger maxAttempts as 5 (gRFC A6).
_MAX_ATTEMPTS_CAP = 5
# A retried call keeps its request in memory until it commits; past this
# many bytes gRPC stops retrying it. The server takes requests up to 1 MiB by
# default (FARADAY_MAX_MESSAGE_BYTES), a BatchStoreMemories of 100 memories
# can approach that, and grpc's default buffer is only 256 KiB.
_RETRY_BUFFER_BYTES = 4 * 1024 * 1024
_LB_POLICIES = ("round_robin", "pick_first")


@cache
def _shipped_service_config() -> dict[str, Any]:
    text = (resources.files(__package__) / "service_config.json").read_text(encoding="utf-8")
    config: dict[str, Any] = json.loads(text)
    return config


def _seconds(value: float) -> str:
    return f"{value:.9f}".rstrip("0").rstrip(".") + "s"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Deadline and retry settings of a client (:class:`MemoryClient`, :class:`AdminClient`).

    The retry fields left at None keep the values of ``service_config.json``.
    """

    default_timeout_seconds: float = 5.0
    """Deadline of a call (all of its attempts) unless the call overrides it."""
    max_attempts: int | None = None
    """Attempts of a retryable call, the first included (1..5); 1 disables retries."""
    initial_backoff_seconds: float | None = None
    """Upper bound of the first backoff; doubles after every attempt."""
    max_backoff_seconds: float | None = None
    """Cap of the backoff upper bound."""
    load_balancing: str | None = None
    """gRPC's load-balancing policy over the addresses `target` resolves to:
    ``"round_robin"`` spreads calls over all of them (service replicas,
    docs/scaling.md), ``"pick_first"`` (gRPC's default) uses one at a time."""

    def __post_init__(self) -> None:
        if self.default_timeout_seconds <= 0:
            raise ValueError("default_timeout_seconds must be positive")
        if self.load_balancing not in (None, *_LB_POLICIES):
            raise ValueError(f"load_balancing must be one of {', '.join(_LB_POLICIES)}")
        if self.max_attempts is not None and not 1 <= self.max_attempts <= _MAX_ATTEMPTS_CAP:
            raise ValueError(f"max_attempts must be 1..{_MAX_ATTEMPTS_CAP}")
        policy = self.service_config()["methodConfig"][0].get("retryPolicy")
        if policy is not None:
            initial = float(policy["initialBackoff"].removesuffix("s"))
            ceiling = float(policy["maxBackoff"].removesuffix("s"))
            if not 0 < initial <= ceiling:
                raise ValueError("need 0 < initial_backoff_seconds <= max_backoff_seconds")

    def service_config(self) -> dict[str, Any]:
        """The shipped service config with this object's overrides applied."""
        config = copy.deepcopy(_shipped_service_config())
        if self.load_balancing is not None:
            config["loadBalancingConfig"] = [{self.load_balancing: {}}]
        for method_config in config["methodConfig"]:
            policy = method_config.get("retryPolicy")
            if policy is None:
                continue
            if self.max_attempts == 1:  # gRPC rejects a policy of fewer than 2 attempts
                del method_config["retryPolicy"]
                continue
            if self.max_attempts is not None:
                policy["maxAttempts"] = self.max_attempts
            if self.initial_backoff_seconds is not None:
                policy["initialBackoff"] = _seconds(self.initial_backoff_seconds)
            if self.max_backoff_seconds is not None:
                policy["maxBackoff"] = _seconds(self.max_backoff_seconds)
        return config

    def channel_options(self, *, retries: bool) -> list[tuple[str, Any]]:
        """Channel arguments: the service config, and retries on or off."""
        return [
            ("grpc.service_config", json.dumps(self.service_config())),
            ("grpc.enable_retries", int(retries)),
            ("grpc.per_rpc_retry_buffer_size", _RETRY_BUFFER_BYTES),
        ]
