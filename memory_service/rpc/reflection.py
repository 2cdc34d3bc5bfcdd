"""Server reflection under both names clients ask for: grpc.reflection.v1 and v1alpha.

grpcio-reflection (1.85) implements only v1alpha (grpc/grpc#38576, open),
which gRPC has deprecated; grpcurl, Postman and newer grpc_cli ask for v1
first. The v1 protocol is v1alpha under another package name (same messages,
same field numbers, same single method), so one servicer answers both: for
v1, its file descriptor is v1alpha's renamed and added to the descriptor pool
(so `grpcurl describe grpc.reflection.v1.ServerReflection` works too), and
its method handler (de)serializes with v1alpha's message classes, which read
and write the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

__all__ = ["V1ALPHA_SERVICE_NAME", "V1_SERVICE_NAME", "enable_reflection"]

V1ALPHA_SERVICE_NAME = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE_NAME = "grpc.reflection.v1.ServerReflection"
_V1ALPHA, _V1 = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."


def _add_v1_descriptor() -> None:
    """grpc/reflection/v1/reflection.proto in the default pool, made from v1alpha's."""
    pool = descriptor_pool.Default()
    name = "grpc/reflection/v1/reflection.proto"
    try:
        pool.FindFileByName(name)
        return  # a second server in this process: already there
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = name, "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's say "deprecated" and name v1alpha's packages
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # assigning "" would mark a scalar as typed
                field.type_name = field.type_name.replace(_V1ALPHA, _V1)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(_V1ALPHA, _V1)
            method.output_type = method.output_type.replace(_V1ALPHA, _V1)
    pool.Add(proto)


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Reflection over `service_names` (both reflection services are listed too)."""
    _add_v1_descriptor()
    servicer = ReflectionServicer((*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
