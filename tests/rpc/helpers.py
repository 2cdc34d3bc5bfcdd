"""Small helpers shared by the RPC tests."""

from __future__ import annotations

import uuid

import grpc
from faraday.memory.v1 import admin_service_pb2, admin_service_pb2_grpc, registry_pb2
from google.rpc import error_details_pb2, status_pb2


async def register_user(
    admin_stub: admin_service_pb2_grpc.AdminServiceStub, email: str | None = None
) -> str:
    """Register a user through the real AdminService; return its id."""
    email = email or f"teacher-{uuid.uuid4().hex[:8]}@school.example.org"
    user = await admin_stub.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(email=email, name="Test Teacher", is_active=True)
        )
    )
    return user.id


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status()
            status.ParseFromString(value)  # type: ignore[arg-type]
            return status
    raise AssertionError(f"no status details on {error.code()}: {error.details()}")


def error_reasons(error: grpc.aio.AioRpcError) -> list[str]:
    """The reasons of the google.rpc.ErrorInfo details of an error."""
    reasons: list[str] = []
    for detail in status_details(error).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
    return reasons


async def set_user_active(
    admin_stub: admin_service_pb2_grpc.AdminServiceStub, user_id: str, email: str, active: bool
) -> None:
    """Activate or deactivate a registered user (its other fields are replaced)."""
    changed = await admin_stub.UpsertUser(
        admin_service_pb2.UpsertUserRequest(
            user=registry_pb2.User(id=user_id, email=email, is_active=active)
        )
    )
    assert changed.id == user_id and changed.is_active is active


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The field paths of the google.rpc.BadRequest detail of an INVALID_ARGUMENT error."""
    fields: list[str] = []
    for detail in status_details(error).details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            fields.extend(v.field for v in bad_request.field_violations)
    return fields
