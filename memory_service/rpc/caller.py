"""The authenticated caller of the current RPC, set by the auth interceptor."""

from __future__ import annotations

from contextvars import ContextVar

from memory_service.domain.principal import LOCAL, Principal

# LOCAL (everything allowed) only when auth is not configured: the
# interceptor sets the real principal before any servicer code runs.
current: ContextVar[Principal] = ContextVar("faraday_caller", default=LOCAL)

# Who a call is from until it is authenticated (rpc/observing.py sets it,
# for the access log): no scopes, so nothing is allowed in its name.
ANONYMOUS = Principal(kind="anonymous", name="anonymous", scopes=frozenset())
