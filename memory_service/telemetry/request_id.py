"""The request id: one per call, for matching a caller's report to the server's log lines.

The caller's `x-request-id` metadata is used when it is a plain token (up to
128 letters, digits and . _ : / + = -), so a log line never carries what a
caller chose to inject; anything else, or none, gets a fresh id. The
server returns it in every call's trailing metadata, errors included. Not
to be confused with StoreMemory's `request_id` field, the idempotency key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

HEADER = "x-request-id"

# "" outside a call (start-up, the sweeps).
current: ContextVar[str] = ContextVar("faraday_request_id", default="")

_PLAIN = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


def from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The caller's request id if it is plain, else a new one."""
    for key, value in metadata or ():
        if key == HEADER:
            if isinstance(value, str) and _PLAIN.fullmatch(value):
                return value
            break
    return os.urandom(16).hex()  # 32 hex digits, as uuid4().hex but 5x cheaper


def with_request_id(metadata: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    """`metadata` plus the current request id (for an abort's trailing metadata)."""
    rid = current.get()
    return (*metadata, (HEADER, rid)) if rid else metadata
