"""Log lines: human-readable text (the default) or one JSON object per line.

stdlib logging with two small formatters rather than structlog or
python-json-logger: every module already logs through stdlib loggers, the
JSON form needs a dozen lines, and owning the formatter is what lets it
keep secrets and request data out in one place.

What keeps them out:
- nothing logs request content, queries or metadata, nor the authorization
  header (the access log names the caller, never its credential);
- exceptions are rendered as their type, SQLSTATE and stack, without their
  message (OSError's excepted): a message can quote data, as PostgreSQL's
  "Failing row contains (...)" does;
- every line is scrubbed of bearer tokens, JWTs, service tokens (fmt_...)
  and passwords in URLs, as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import re
import traceback
from datetime import UTC, datetime
from typing import Any

from memory_service.telemetry import request_id

FORMATS = ("text", "json")

# Fields the access log (rpc/observing.py) sets on its records, in this order.
ACCESS_FIELDS = ("method", "code", "duration_ms", "caller", "peer", "trace_id")

_SCRUB = (
    (re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+"), r"\1[redacted]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    (re.compile(r"\bfmt_[A-Za-z0-9_-]{8,}"), "[redacted-token]"),
    (re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1[redacted]@"),
)


def scrub(text: str) -> str:
    # Each _SCRUB pattern needs one of these (in any case): most lines, the
    # access log's among them, have none and skip the four regex passes.
    lowered = text.lower()
    if not ("bearer" in lowered or "eyj" in lowered or "fmt_" in lowered or "://" in lowered):
        return text
    for pattern, replacement in _SCRUB:
        text = pattern.sub(replacement, text)
    return text


def describe_exception(exc: BaseException) -> str:
    """Type (and SQLSTATE), never the message, unless it is an OSError's."""
    kind = type(exc)
    text = f"{kind.__module__}.{kind.__qualname__}"
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        text += f" (SQLSTATE {sqlstate})"
    if isinstance(exc, OSError):
        text += f": {exc}"
    return text


def render_exception(exc: BaseException) -> str:
    """A traceback, its chain included, with describe_exception in place of each message."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        stack = traceback.StackSummary.extract(traceback.walk_tb(current.__traceback__))
        parts.append(
            "Traceback (most recent call last):\n"
            + "".join(stack.format())
            + describe_exception(current)
            + "\n"
        )
        current = current.__cause__ or (
            None if current.__suppress_context__ else current.__context__
        )
    # Oldest first, as Python prints a chain.
    return "\nwhich led to:\n\n".join(reversed(parts)).rstrip("\n")


def _exception_text(record: logging.LogRecord) -> str:
    if record.exc_info and record.exc_info[1] is not None:
        return render_exception(record.exc_info[1])
    return ""


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message`, then the exception (if any)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None) or request_id.current.get()
        record.request_tag = f" [{rid}]" if rid else ""
        # Not logging's own exception text: another handler may have cached
        # it on the record, message included.
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text = saved
        exception = _exception_text(record)
        if exception:
            line += "\n" + exception
        return scrub(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, access fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.current.get()
        if rid:
            entry["request_id"] = rid
        for name in ACCESS_FIELDS:
            value = getattr(record, name, None)
            if value is not None and value != "":
                entry[name] = value
        exception = _exception_text(record)
        if exception:
            entry["exception"] = exception
        return scrub(json.dumps(entry, default=str))


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"FARADAY_LOG_FORMAT={fmt!r}: must be one of {', '.join(FORMATS)}")


def configure(level: str, fmt: str) -> None:
    """Root logging to stderr in `fmt`; ValueError for an unknown format or level."""
    # Neither format shows the caller's source line, thread or process: the
    # logging HOWTO's "Optimization" switches, so a record (one per RPC, the
    # access log's) does not look them up.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    try:
        logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    except ValueError as exc:
        raise ValueError(f"FARADAY_LOG_LEVEL={level!r}: {exc}") from exc
