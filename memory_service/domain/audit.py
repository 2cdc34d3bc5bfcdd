"""What the audit log says about one call, built only from values the server vouches for.

The auth interceptor opens an `AuditEvent` for every audited call (and for
denied calls) with the caller it authenticated, the method it routed and the
peer address grpc reported. Servicers and storage then `note()` what they
have validated or resolved: ids, counts, never request text. A raw request
string would let the caller decide whether the row can be written (a NUL
byte fails the insert) and how large it is (PITFALLS).

The event is request-scoped (a context variable), so the storage layer can
write it inside the transaction that makes the change it records: the change
and its audit row commit together or not at all (storage/audit.py).
"""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field

# Bounds of the audit row's text columns (migration 0002).
ACTOR_MAX_CHARS = 255
PEER_MAX_CHARS = 255

AuditValue = int | str | uuid.UUID | dict[str, int]


def bounded(text: str, max_chars: int) -> str:
    """Text the server produced, cut to its column and stripped of NULs."""
    return text.replace("\x00", "")[:max_chars]


@dataclass
class AuditEvent:
    actor_kind: str
    actor: str
    method: str
    peer: str | None
    outcome: str = "OK"
    resource: dict[str, int | str | dict[str, int]] = field(default_factory=dict)
    # Set once the row is in the database (or in a transaction about to commit).
    written: bool = False

    def __post_init__(self) -> None:
        self.actor = bounded(self.actor, ACTOR_MAX_CHARS)
        self.peer = bounded(self.peer, PEER_MAX_CHARS) or None if self.peer else None


current: ContextVar[AuditEvent | None] = ContextVar("faraday_audit_event", default=None)


def note(**values: AuditValue) -> None:
    """Add validated values to the current call's audit row (no-op for unaudited calls)."""
    event = current.get()
    if event is None:
        return
    for name, value in values.items():
        event.resource[name] = str(value) if isinstance(value, uuid.UUID) else value
