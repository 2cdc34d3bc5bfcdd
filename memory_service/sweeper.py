"""Periodic maintenance jobs: the expiry sweep (the documentation's 'memory cleanup'),
writing the audit log's aggregated refusals, the partition job
(services/partitions.py) and the lesson term job (services/lessons.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from memory_service.domain.errors import Unavailable
from memory_service.telemetry import metrics

logger = logging.getLogger(__name__)


async def run_periodically(
    job: Callable[[], Awaitable[int]],
    interval_seconds: float,
    name: str = "expiry sweep",
    *,
    first_after_seconds: float = 0.0,
) -> None:
    """Call `job` every interval until cancelled; a failed run is logged, not fatal.

    `job` returns how many things it handled (logged when not zero). The
    first run comes after `first_after_seconds`.
    """
    await asyncio.sleep(first_after_seconds)
    while True:
        try:
            handled = await job()
            metrics.sweep_ran(name, handled)
            if handled:
                logger.info("%s: %d", name, handled)
        except Unavailable:
            metrics.sweep_ran(name, None)
            logger.warning("%s skipped: database unavailable", name)
        except Exception:
            metrics.sweep_ran(name, None)
            logger.exception("%s failed", name)
        await asyncio.sleep(interval_seconds)
