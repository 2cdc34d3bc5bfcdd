"""The periodic sweep that deletes expired memories (the documentation's 'memory cleanup')."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from memory_service.domain.errors import Unavailable

logger = logging.getLogger(__name__)


async def run_periodically(sweep: Callable[[], Awaitable[int]], interval_seconds: float) -> None:
    """Call `sweep` every interval until cancelled; a failed sweep is logged, not fatal."""
    while True:
        try:
            deleted = await sweep()
            if deleted:
                logger.info("expiry sweep deleted %d memories", deleted)
        except Unavailable:
            logger.warning("expiry sweep skipped: database unavailable")
        except Exception:
            logger.exception("expiry sweep failed")
        await asyncio.sleep(interval_seconds)
