"""Decoding of the rich error details the memory service attaches to errors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, cast

import grpc

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped, unused-ignore]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class FieldViolation(NamedTuple):
    """One invalid request field, from a google.rpc.BadRequest detail."""

    field: str
    """Path of the offending field, e.g. ``memory.content``."""
    description: str
    """Why the value was rejected."""


def field_violations(error: grpc.RpcError) -> list[FieldViolation]:
    """Return the field violations of an INVALID_ARGUMENT error, or ``[]``.

    Works for ``grpc.aio.AioRpcError`` (what the clients raise) as well
    as for errors of synchronous calls: it reads the ``grpc-status-details-bin``
    trailing metadata as a ``google.rpc.Status`` and unpacks every
    ``google.rpc.BadRequest`` among its details.
    """
    # grpc-stubs types the pairs as `_Metadatum`; at runtime both the sync and
    # the aio errors yield (key, value) tuples.
    metadata = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    violations: list[FieldViolation] = []
    for key, value in metadata:
        if key != _STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad_request.field_violations
                )
    return violations
