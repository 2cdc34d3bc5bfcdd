"""The audit log: who did what, when, from where. Append-only for the service role.

Two ways a row gets written, both from a domain.audit.AuditEvent:

- `write_in_transaction`, called by Database.connection() just before it
  commits a transaction of an audited call: the row is inserted by the same
  transaction as the change it records, and only if that transaction
  changed something (it has a transaction id), so a change and its row
  commit together or not at all, and a lookup does not count as the change.
- `AuditLog.record`, for a call that committed no change (refused,
  invalid, not found, a read such as an export): its own transaction. A
  failure raises; it is never swallowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from memory_service.domain.audit import AuditEvent

if TYPE_CHECKING:
    from memory_service.storage.database import Database

_COLUMNS = "actor_kind, actor, method, outcome, peer, resource"
_INSERT = f"INSERT INTO audit_log ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
# pg_current_xact_id_if_assigned() is NULL until the transaction writes a
# row or takes a row lock: exactly "this transaction changed something".
_INSERT_IF_CHANGED = f"""
INSERT INTO audit_log ({_COLUMNS})
SELECT $1, $2, $3, $4, $5, $6 WHERE pg_current_xact_id_if_assigned() IS NOT NULL
"""


def _args(event: AuditEvent) -> tuple[object, ...]:
    return (
        event.actor_kind,
        event.actor,
        event.method,
        event.outcome,
        event.peer,
        event.resource,
    )


async def write_in_transaction(conn: asyncpg.Connection, event: AuditEvent) -> None:
    """Add the call's row to the transaction about to commit, if it changed anything."""
    status: str = await conn.execute(_INSERT_IF_CHANGED, *_args(event))
    if status.endswith(" 1"):
        event.written = True


class AuditLog:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, event: AuditEvent) -> None:
        """Write one event in a transaction of its own; raises Unavailable if it cannot."""
        await self.record_all([event])

    async def record_all(self, events: list[AuditEvent]) -> None:
        """Write several events in one transaction: all of them, or none and raise."""
        async with self._db.connection(audited=False) as conn:
            await conn.executemany(_INSERT, [_args(e) for e in events])
        for event in events:
            event.written = True
