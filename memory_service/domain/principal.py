"""Who is calling, and what they may touch. Pure values and rules, no I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from memory_service.domain.errors import NotFound, PermissionDenied


class Scope(StrEnum):
    MEMORIES_READ = "memories:read"
    MEMORIES_WRITE = "memories:write"
    # ImportMemories: bulk writes with caller-chosen original times, for
    # platform backends loading history. Never held by a user-scoped token.
    MEMORIES_IMPORT = "memories:import"
    LESSONS_READ = "lessons:read"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)
# What a user-scoped token may ever hold; `admin` and `memories:import` never.
USER_SCOPES = frozenset({Scope.MEMORIES_READ, Scope.MEMORIES_WRITE, Scope.LESSONS_READ})


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    kind "service": a platform backend acting for any user, limited by its
    scopes and, optionally, to some assistant profiles. kind "user": a
    teacher's own token (JWT subject), bound to that one user. kind "local":
    auth is not configured (loopback only), everything is allowed.
    """

    kind: str
    name: str
    scopes: frozenset[Scope]
    user_id: uuid.UUID | None = None
    assistant_profile_ids: frozenset[int] | None = None

    @property
    def key(self) -> str:
        """Stable identity for rate limits, idempotency keys and the audit log."""
        return f"{self.kind}:{self.name}"

    def require(self, scope: Scope) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(f"this credential lacks the {scope.value!r} scope")

    def user_filter(self, requested: uuid.UUID | None) -> uuid.UUID | None:
        """The user a call may act on: a user-scoped caller only ever gets itself.

        Naming another user is answered like a missing one (NOT_FOUND), so a
        caller cannot even learn that the other user exists.
        """
        if self.user_id is None:
            return requested
        if requested is not None and requested != self.user_id:
            raise NotFound("user", requested)
        return self.user_id

    @property
    def visibility(self) -> Visibility:
        return Visibility(self.user_id, self.assistant_profile_ids)

    def require_profile(self, profile_id: int | None, field: str) -> None:
        """A profile-limited credential writes only its own profiles' memories."""
        if self.assistant_profile_ids is not None and profile_id not in self.assistant_profile_ids:
            allowed = ", ".join(str(p) for p in sorted(self.assistant_profile_ids))
            raise PermissionDenied(
                f"{field}: this credential may only use assistant profiles {allowed}"
            )


@dataclass(frozen=True, slots=True)
class Visibility:
    """Which memories a caller may see: one user's (or any), some profiles' (or any).

    Memories shared by all assistants (no profile) are visible to every profile.
    """

    user_id: uuid.UUID | None = None
    profile_ids: frozenset[int] | None = None

    @property
    def profile_list(self) -> list[int] | None:
        return sorted(self.profile_ids) if self.profile_ids is not None else None


EVERYTHING = Visibility()


LOCAL = Principal(kind="local", name="local", scopes=ALL_SCOPES)
