"""Per-request database session state: whose rows a transaction may see, and its deadline.

Every transaction the service opens starts with
`SET LOCAL faraday.acting_user` and `SET LOCAL statement_timeout` taken from
these context variables. Row-level security policies (migration 0002) read
`faraday.acting_user`: a user id shows that user's rows only, "*" shows
all rows but only to the faraday_platform role (migration 0009; the
database runs such transactions on that role's pool), and anything else
(the default, "") shows none. Both settings are transaction-local, so they
can never leak to the next request that borrows the pooled connection.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ALL_USERS = "*"

acting_user: ContextVar[str] = ContextVar("faraday_acting_user", default="")
# The assistant profiles a profile-limited credential may use; None: any.
# Row-level security (migration 0006) lets such a credential read the
# memories of these profiles and the shared ones, and write only the former.
acting_profiles: ContextVar[frozenset[int] | None] = ContextVar(
    "faraday_acting_profiles", default=None
)
# time.monotonic() by which the caller's deadline passes; None: no deadline.
deadline: ContextVar[float | None] = ContextVar("faraday_deadline", default=None)


@contextmanager
def acting_as(user: uuid.UUID | str) -> Iterator[None]:
    """Run the block's database work as `user` (a UUID) or as ALL_USERS."""
    token = acting_user.set(str(user))
    try:
        yield
    finally:
        acting_user.reset(token)


def setting_value() -> str:
    """The acting user as it may be spliced into SQL: a canonical UUID, '*' or ''."""
    value = acting_user.get()
    if value in ("", ALL_USERS):
        return value
    return str(uuid.UUID(value))  # canonical form; anything else raises here, not in SQL


def profiles_value() -> str:
    """The acting profiles as they may be spliced into SQL: '' (any) or an int[] literal."""
    profiles = acting_profiles.get()
    if profiles is None:
        return ""
    return "{" + ",".join(str(int(p)) for p in sorted(profiles)) + "}"


def statement_timeout_ms(default_seconds: float) -> int:
    """The statement timeout for a new transaction: what is left of the deadline, if sooner."""
    limit = default_seconds
    ends = deadline.get()
    if ends is not None:
        limit = min(limit, ends - time.monotonic())
    return max(1, int(limit * 1000))
