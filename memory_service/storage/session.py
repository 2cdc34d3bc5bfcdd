"""Per-request database session state: whose rows a transaction may see, who acts, its deadline.

Every transaction the service opens starts with
`SET LOCAL faraday.acting_user` and `SET LOCAL statement_timeout` taken from
these context variables. Row-level security policies (migration 0002) read
`faraday.acting_user`: a user id shows that user's rows only, "*" shows
all rows but only to the faraday_platform role (migration 0009; the
database runs such transactions on that role's pool), and anything else
(the default, "") shows none. `faraday.actor` names the caller for the
revisions the memory trigger keeps (migration 0013). Every setting is
transaction-local, so none can leak to the next request that borrows the
pooled connection.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from memory_service.domain.audit import ACTOR_MAX_CHARS, bounded

ALL_USERS = "*"

acting_user: ContextVar[str] = ContextVar("faraday_acting_user", default="")
# The assistant profiles a profile-limited credential may use; None: any.
# Row-level security (migration 0006) lets such a credential read the
# memories of these profiles and the shared ones, and write only the former.
acting_profiles: ContextVar[frozenset[int] | None] = ContextVar(
    "faraday_acting_profiles", default=None
)
# Who the transaction's changes are attributed to in memory revisions: the
# authenticated caller's Principal.key ("service:<token name>", "user:<user
# id>", "local:local"), set by the auth interceptor. Empty: no request, the
# service's own work (sweeps, backfill, seed-demo), recorded as SYSTEM_ACTOR.
actor: ContextVar[str] = ContextVar("faraday_actor", default="")
SYSTEM_ACTOR = "system"
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


def actor_hex() -> str:
    """The actor's UTF-8 bytes in hex digits: spliced into SQL, nothing in it needs quoting.

    The actor is server-generated but not restricted: a token's configured
    name may hold quotes, backslashes or any Unicode. As hex it is only
    [0-9a-f], so it cannot end its literal whatever standard_conforming_strings
    says, and PostgreSQL decodes it back (convert_from(decode(..., 'hex'),
    'UTF8')). NULs are dropped (text cannot hold them) and it is cut to the
    audit log's 255 characters; what cannot be UTF-8 (a lone surrogate from
    a JSON escape) becomes "?".
    """
    text = bounded(actor.get() or SYSTEM_ACTOR, ACTOR_MAX_CHARS)
    return text.encode("utf-8", "replace").hex()


def statement_timeout_ms(default_seconds: float) -> int:
    """The statement timeout for a new transaction: what is left of the deadline, if sooner."""
    limit = default_seconds
    ends = deadline.get()
    if ends is not None:
        limit = min(limit, ends - time.monotonic())
    return max(1, int(limit * 1000))
