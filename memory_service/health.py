"""Health: readiness follows PostgreSQL, liveness does not (docs/health.md).

Readiness is the overall status ("") and each service's: SERVING while a probe
of PostgreSQL succeeds, NOT_SERVING while it fails, so a load balancer or
Kubernetes stops sending calls that could only fail with UNAVAILABLE, and
sends them again once the database is back. Liveness is a name of its own
that is SERVING as long as the process serves at all: restarting the service
cannot bring PostgreSQL back, so a liveness probe must not depend on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

__all__ = ["LIVENESS_HEALTH", "follow_database"]

logger = logging.getLogger(__name__)

# The health-check name of liveness: SERVING while the process runs, whatever PostgreSQL does.
LIVENESS_HEALTH = "faraday.memory.v1.Liveness"


async def follow_database(
    probe: Callable[[], Awaitable[str | None]],
    set_serving: Callable[[bool], Awaitable[None]],
    interval_seconds: float,
) -> None:
    """Probe every interval until cancelled; tell `set_serving` each time the answer changes.

    `probe` returns None when PostgreSQL answered, else why not (one line,
    logged). The first probe runs one interval after the start: the server
    has just opened its pools, so the database was there.
    """
    serving = True
    while True:
        await asyncio.sleep(interval_seconds)
        problem = await probe()
        if (problem is None) == serving:
            continue
        serving = problem is None
        if serving:
            logger.warning("PostgreSQL answers again: health is SERVING")
        else:
            logger.warning("PostgreSQL does not answer (%s): health is NOT_SERVING", problem)
        await set_serving(serving)
