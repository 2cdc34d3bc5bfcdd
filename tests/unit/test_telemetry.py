"""The log formatters, their scrubbing, and request ids: pure code, no server."""

from __future__ import annotations

import json
import logging

import pytest

from memory_service.telemetry import logs, request_id


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(
        "memory_service.x", logging.ERROR, __file__, 1, message, args, exc_info
    )


@pytest.mark.parametrize(
    ("text", "hidden"),
    [
        ("authorization: Bearer fmt_abcdefgh12345678", "fmt_abcdefgh12345678"),
        ("AUTHORIZATION: BEARER s3cr3t-opaque-token", "s3cr3t-opaque-token"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl seen", "eyJzdWIiOiIxIn0"),
        ("postgresql://faraday_app:hunter2@db:5432/memory", "hunter2"),
        ("redis://:s3cret@cache:6379/0", "s3cret"),
        ("a fmt_Zz09_-abcdefghij token", "fmt_Zz09_-abcdefghij"),
    ],
)
def test_scrub_hides_credentials(text: str, hidden: str) -> None:
    assert hidden not in logs.scrub(text)


def test_scrub_keeps_ordinary_text() -> None:
    line = "GET /faraday.memory.v1.MemoryService/StoreMemory OK 1.2 ms caller=service:obs"
    assert logs.scrub(line) == line


DATA = "Zebra"  # a traceback shows the raising lines' source: the data must not be in it


def _raise_chain() -> BaseException:
    try:
        try:
            raise KeyError(f"the content: {DATA}")
        except KeyError as inner:
            raise RuntimeError(f"failing row contains ({DATA})") from inner
    except RuntimeError as exc:
        return exc


def test_exceptions_are_logged_without_their_messages() -> None:
    exc = _raise_chain()
    for fmt in logs.FORMATS:
        line = logs.formatter(fmt).format(_record("internal error %s", "abc123", exc=exc))
        assert "Zebra" not in line
        assert "RuntimeError" in line and "KeyError" in line and "_raise_chain" in line
        assert "abc123" in line


def test_os_errors_keep_their_message() -> None:
    assert "refused" in logs.describe_exception(ConnectionRefusedError(111, "refused"))


def test_a_cached_exception_text_is_not_reused() -> None:
    exc = _raise_chain()
    record = _record("boom", exc=exc)
    logging.Formatter().format(record)  # another handler caches the full text
    assert "Zebra" in (record.exc_text or "")
    assert "Zebra" not in logs.formatter("text").format(record)


def test_json_lines_are_one_object_with_request_id_and_access_fields() -> None:
    token = request_id.current.set("rid-1")
    try:
        record = _record("a\nmulti-line message")
        record.method, record.code, record.duration_ms = "/x.Y/Z", "OK", 1.5
        line = logs.formatter("json").format(record)
    finally:
        request_id.current.reset(token)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["request_id"] == "rid-1" and entry["message"] == "a\nmulti-line message"
    assert (entry["method"], entry["code"], entry["duration_ms"]) == ("/x.Y/Z", "OK", 1.5)
    assert entry["level"] == "ERROR" and entry["logger"] == "memory_service.x"


def test_an_unknown_format_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="FARADAY_LOG_FORMAT"):
        logs.formatter("xml")


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("abc-123", True),
        ("7f0c1c5e-2a8b-4c1e-9d4b-1f2e3d4c5b6a", True),
        ("has space", False),
        ("x" * 129, False),
        ("new\nline", False),
        ("", False),
    ],
)
def test_request_ids_from_callers_are_kept_only_when_plain(given: str, kept: bool) -> None:
    got = request_id.from_metadata([("x-request-id", given)])
    assert (got == given) is kept
    assert 0 < len(got) <= 128


def test_no_request_id_gets_a_fresh_one() -> None:
    first, second = request_id.from_metadata(None), request_id.from_metadata([])
    assert first != second and len(first) == 32
