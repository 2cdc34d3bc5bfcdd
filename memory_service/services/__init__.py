"""Use cases, one async method each; no SQL and no protobuf."""
