"""The partition job: partitions of memory_interactions and audit_log created
ahead of time, rows caught by their DEFAULT partitions given a partition of
their own, and partitions past retention dropped (storage/partitions.py,
migration 0018, docs/operations.md)."""

from __future__ import annotations

from dataclasses import dataclass

from memory_service.storage import session
from memory_service.storage.partitions import Partition, PartitionStore


@dataclass(frozen=True)
class Retention:
    interaction_days: int
    audit_days: int


class PartitionJob:
    def __init__(self, store: PartitionStore, retention: Retention) -> None:
        self._store = store
        self._retention = retention

    async def run(self) -> int:
        """One run; returns how many partitions it created or dropped.

        Maintenance of every user's rows, so as ALL_USERS: a faraday_platform
        connection, the only role the partition functions let in.
        """
        with session.acting_as(session.ALL_USERS):
            adopted = await self._store.adopt_default_rows()
            created = await self._store.create_ahead()
            dropped = await self._store.drop_expired(
                {
                    "memory_interactions": self._retention.interaction_days,
                    "audit_log": self._retention.audit_days,
                }
            )
        return len(adopted) + len(created) + len(dropped)

    async def partitions(self) -> list[Partition]:
        """Every partition of the partitioned tables, oldest first per table."""
        with session.acting_as(session.ALL_USERS):
            return await self._store.partitions()
