"""Domain errors: what went wrong, in the service's own words.

rpc/errors.py maps each class (along its hierarchy) to one gRPC status code;
nothing here knows about gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass


class DomainError(Exception):
    """Base of every error a caller can act on. The message is safe to send."""

    reason: str = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


@dataclass(frozen=True)
class FieldViolation:
    """One bad field: `field` is its path in the request, e.g. "memory.importance"."""

    field: str
    description: str


class InvalidArgument(DomainError):
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], *, omitted: int = 0) -> None:
        """`omitted`: further violations found but not collected (see validation.Violations)."""
        message = "; ".join(f"{v.field}: {v.description}" for v in violations)
        if omitted:
            message += f"; and {omitted} more not listed"
        super().__init__(message)
        self.violations = violations
        self.omitted = omitted

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    reason = "NOT_FOUND"

    def __init__(self, resource: str, key: object) -> None:
        super().__init__(f"{resource} {key} not found", reason=f"{resource.upper()}_NOT_FOUND")
        self.resource = resource


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class StaleEtag(DomainError):
    """The caller's etag no longer matches: someone else changed the resource."""

    reason = "ETAG_MISMATCH"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class UserInactive(FailedPrecondition):
    """A write for a user whose account is inactive: their data is read-only."""

    reason = "USER_INACTIVE"

    def __init__(self, user_id: object) -> None:
        super().__init__(f"user {user_id} is inactive; their memories are read-only")
        self.user_id = user_id


class Undecryptable(FailedPrecondition):
    """Stored ciphertext that none of the server's keys decrypts (or the server has none).

    An operator's mistake, not the caller's: the message says what to fix
    without naming the data.
    """

    reason = "UNDECRYPTABLE_DATA"

    def __init__(self) -> None:
        super().__init__(
            "stored user data cannot be decrypted with the server's encryption keys;"
            " an operator must configure the key it was encrypted with"
        )


class Unavailable(DomainError):
    """A dependency (the database) cannot be reached; retrying later may work."""

    reason = "DATABASE_UNAVAILABLE"


class Unauthenticated(DomainError):
    """No credentials, or credentials that do not verify."""

    reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """Valid credentials without the scope the call needs."""

    reason = "PERMISSION_DENIED"


class RateLimited(DomainError):
    """The caller spent its token bucket; `retry_after_seconds` says when to come back."""

    reason = "RATE_LIMITED"

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after_seconds:.2f} s")
        self.retry_after_seconds = retry_after_seconds


class DeadlineExceeded(DomainError):
    """The work ran past its time (the caller's deadline or the statement timeout)."""

    reason = "DEADLINE_EXCEEDED"


class Contention(DomainError):
    """Concurrent transactions collided (deadlock, serialization); retrying may work."""

    reason = "CONCURRENT_UPDATE"
