"""gRPC servicers: protobuf in, one use case, protobuf out; errors to status codes."""
