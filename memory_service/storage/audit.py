"""The audit log: who did what, when, from where. Append-only for the service role."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from memory_service.domain.errors import Unavailable
from memory_service.storage.database import Database

logger = logging.getLogger(__name__)

_INSERT = """
INSERT INTO audit_log (actor_kind, actor, method, outcome, peer, resource)
VALUES ($1, $2, $3, $4, $5, $6)
"""


@dataclass(frozen=True)
class AuditEvent:
    actor_kind: str
    actor: str
    method: str
    outcome: str
    peer: str | None
    resource: dict[str, Any]


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, event: AuditEvent) -> None:
        """Write one event. A database outage is logged, not raised: the call it
        describes has already been answered."""
        try:
            async with self._db.connection() as conn:
                await conn.execute(
                    _INSERT,
                    event.actor_kind,
                    event.actor[:255],
                    event.method[:200],
                    event.outcome,
                    (event.peer or "")[:255] or None,
                    event.resource,
                )
        except Unavailable:
            logger.error("audit event lost (database unavailable): %s", event)
