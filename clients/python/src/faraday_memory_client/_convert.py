"""Python values to the well-known protobuf messages the clients send."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from google.protobuf import json_format, struct_pb2, timestamp_pb2

# googleapis-common-protos ships .pyi stubs but no py.typed marker.
from google.type import date_pb2  # type: ignore[import-untyped, unused-ignore]


def struct_message(value: Mapping[str, Any]) -> struct_pb2.Struct:
    """A JSON object as a ``google.protobuf.Struct``."""
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def value_message(value: Any) -> struct_pb2.Value:
    """Any JSON value (dict, list, str, number, bool, None) as a ``google.protobuf.Value``."""
    return json_format.ParseDict(value, struct_pb2.Value())


def timestamp_message(value: datetime) -> timestamp_pb2.Timestamp:
    """Naive datetimes are taken as UTC (protobuf's rule)."""
    timestamp = timestamp_pb2.Timestamp()
    timestamp.FromDatetime(value)
    return timestamp


def date_message(value: date) -> date_pb2.Date:
    """A calendar date as a ``google.type.Date``."""
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)
