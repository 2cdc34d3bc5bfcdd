"""Opaque page tokens (AIP-158).

A token carries the keyset position of the last item returned plus a
fingerprint of the request's filters, so a token replayed with other filters
is rejected instead of silently returning a wrong page. Tokens are base64url
JSON: opaque by contract, not secret; a tampered token only yields
INVALID_ARGUMENT or a position in the caller's own result set.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from memory_service.domain.errors import InvalidArgument
from memory_service.domain.validation import in_time_range

DEFAULT_PAGE_SIZE = 50
_BIGINT_MAX = 2**63 - 1  # ids are PostgreSQL bigint
MAX_PAGE_SIZE = 500
# The tokens this service issues are under 150 characters. Refusing longer
# ones before decoding bounds the work a forged token can cause (and its
# nesting depth, which the JSON parser spends recursion on).
TOKEN_MAX_CHARS = 512


def page_size(value: int, *, default: int = DEFAULT_PAGE_SIZE, maximum: int = MAX_PAGE_SIZE) -> int:
    """0 means the default, too large is lowered to the maximum, negative is an error."""
    if value < 0:
        raise InvalidArgument.one("page_size", "must not be negative")
    if value == 0:
        return default
    return min(value, maximum)


def fingerprint(filters: Any) -> str:
    canonical = json.dumps(filters, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(position: list[Any], filters: Any) -> str:
    payload = json.dumps({"p": position, "f": fingerprint(filters)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _bad_token() -> InvalidArgument:
    return InvalidArgument.one("page_token", "is not a token this request can continue from")


def decode(token: str, filters: Any, *, arity: int) -> list[Any] | None:
    """Return the keyset position of `token`, or None for the first page."""
    if not token:
        return None
    bad = _bad_token()
    if len(token) > TOKEN_MAX_CHARS:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    # ValueError covers binascii.Error, UnicodeDecodeError and JSONDecodeError;
    # RecursionError is deep nesting.
    except (ValueError, RecursionError) as exc:
        raise bad from exc
    if not isinstance(payload, dict) or payload.get("f") != fingerprint(filters):
        raise bad
    position = payload.get("p")
    if not isinstance(position, list) or len(position) != arity:
        raise bad
    return position


def decode_time_and_id(token: str, filters: Any) -> tuple[datetime, int] | None:
    """A (timestamp, id) keyset position; a forged one is INVALID_ARGUMENT, never a crash."""
    position = decode(token, filters, arity=2)
    if position is None:
        return None
    moment, ident = position
    try:
        parsed = datetime.fromisoformat(moment)
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(UTC)  # overflows here, not in the driver
    except (TypeError, ValueError, OverflowError) as exc:
        raise _bad_token() from exc
    if parsed.tzinfo is None or not in_time_range(parsed):
        raise _bad_token()
    return parsed, _id(ident)


def _id(value: Any) -> int:
    if type(value) is not int or not 0 < value <= _BIGINT_MAX:
        raise _bad_token()
    return value


def encode_time_and_id(moment: datetime, ident: int, filters: Any) -> str:
    return encode([moment.isoformat(), ident], filters)


def decode_id(token: str, filters: Any) -> int | None:
    """An id keyset position (ids that grow with time); a forged one is INVALID_ARGUMENT."""
    position = decode(token, filters, arity=1)
    return None if position is None else _id(position[0])


def encode_id(ident: int, filters: Any) -> str:
    return encode([ident], filters)
