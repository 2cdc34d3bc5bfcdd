"""Property-based fuzzing of every unary RPC with random and hostile messages.

Hypothesis builds requests for every unary RPC of MemoryService,
LessonService and AdminService (DeleteUserData and ExportUserData aside),
mixing valid-looking values with hostile ones: NUL bytes, very long and
exotic Unicode text, SQL, jsonpath/jsonb and tsquery metacharacters,
int64 extremes, NaN/inf/-0.0/1e308 doubles, deeply nested or NaN-holding
Structs with NUL keys, timestamps and dates out of range, random field masks,
unknown enum numbers, random page tokens and etags, and request headers with
junk (invalid UTF-8 in binary ones). Some calls hit real rows: a few users, a
category tree, a profile, lessons and memories are registered first and
replenished when deleted. A focused test sends otherwise valid requests with
forged page tokens (true fingerprint, hostile keyset position) and etags;
three more send valid requests but for one kind of field at or past its
limit: floats (subnormal, tiny, extreme), times (the service's range
1970-01-01..9000-01-01 and one microsecond or nanosecond outside it) and
sizes (repeated fields and masks over their caps, 100,000 long).

For every call: the status is never INTERNAL, UNKNOWN or DEADLINE_EXCEEDED
(each call has a 5 s deadline: running into it is a hang), nor
RESOURCE_EXHAUSTED for a request within the server's message limit (an
error status over the client's 16 KiB metadata limit arrives so), nor anything else
that a correct server never sends here (UNAVAILABLE, UNIMPLEMENTED, ...);
INVALID_ARGUMENT names fields of the request in a google.rpc.BadRequest (or,
for bytes that do not parse, says MALFORMED_REQUEST); a failed call leaves
every table exactly as it was (row count and content hash); a successful one
changes only the tables its RPC writes, by the expected number of rows. A
last test sends raw bytes that are not a valid request message (garbage,
invalid UTF-8 in a string field at any depth, nesting past protobuf's parse
limit): INVALID_ARGUMENT.

The server runs on the session event loop, so Hypothesis drives a blocking
gRPC channel from a worker thread (never blocking the loop) and reads the
database through the loop with run_coroutine_threadsafe. Problems are
collected, not raised inside Hypothesis (the database changes under every
example, so replaying a shrunk example would not be faithful), and the test
fails at the end listing each distinct problem with its request.

Examples per test: a few hundred by default, derandomized (the file runs in
about 20 s); FARADAY_FUZZ_EXAMPLES=N runs N per test. `pytest -s` shows a
counts line per test.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    lesson_pb2,
    lesson_service_pb2,
    lesson_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)
from google.protobuf import duration_pb2, message_factory, struct_pb2, text_format, timestamp_pb2
from google.protobuf.message import DecodeError, Message
from google.rpc import error_details_pb2, status_pb2
from google.type import date_pb2
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from memory_service.domain import page_token
from memory_service.domain.errors import DomainError
from memory_service.rpc import lesson_messages, memory_messages
from memory_service.server import RunningServer
from tests.rpc.helpers import recalls_written

pytestmark = pytest.mark.asyncio(loop_scope="session")

EXAMPLES = int(os.environ.get("FARADAY_FUZZ_EXAMPLES", "0"))
CALL_TIMEOUT_SECONDS = 5.0

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

StatusCode = grpc.StatusCode
# What a correct server may answer to any request these tests send. Anything
# else is a finding: INTERNAL/UNKNOWN (a bug), DEADLINE_EXCEEDED (a hang),
# UNAVAILABLE (the database is up), UNIMPLEMENTED, CANCELLED, ...
ACCEPTABLE = {
    StatusCode.OK,
    StatusCode.INVALID_ARGUMENT,
    StatusCode.NOT_FOUND,
    StatusCode.ALREADY_EXISTS,
    StatusCode.FAILED_PRECONDITION,
    StatusCode.ABORTED,
    StatusCode.OUT_OF_RANGE,
    StatusCode.RESOURCE_EXHAUSTED,  # only for a request over the server's message limit
}
MESSAGE_LIMIT_BYTES = 1024 * 1024  # the test server's (Settings' default)
# The status of an error travels in trailing metadata; it must fit what a
# client accepts (grpc's default hard limit is 16 KiB), or the caller sees
# RESOURCE_EXHAUSTED instead of the error.
CLIENT_METADATA_LIMIT = 16 * 1024

TABLES = (
    "users",
    "user_preferences",
    "subject_categories",
    "assistant_profiles",
    "assistant_capabilities",
    "lessons",
    "user_memories",
    "memory_interactions",
    "memory_revisions",
)
_SNAPSHOT_SQL = " UNION ALL ".join(
    f"SELECT '{t}' AS t, count(*) AS n,"
    f" md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) AS h FROM {t} r"
    for t in TABLES
)


# --- Hostile building blocks -------------------------------------------------

METACHARACTERS = [
    # SQL and LIKE
    "'; DROP TABLE users; --", "' OR '1'='1", "'); SELECT pg_sleep(30); --",
    "1; SELECT pg_sleep(30)", "%", "_", "\\", "%_\\%", "100%_done", "''", '"', "$$", "$1", "?",
    ":query", "%(user_id)s", "{0}", "/* comment", "E'\\\\x00'",
    # jsonpath and jsonb operators
    "$.a[*] ? (@ > 1)", "$.**", "strict $.a", "@>", "<@", "->>", "#>>", "{a,b}", "?|", "@@",
    # tsquery and web-search syntax; stop words only
    "&|!():*", "a & b | !c", "!", "(", ")", ":*", "'a':*", "<->", "a <-> b", "<2>", "--", "-",
    "or", '"unterminated', '"" "" ""', "the a of",
    # JSON-ish and numeric-ish text
    "null", "NaN", "Infinity", "-0", "1e999", "{}", "[]", '{"a": [1, {"b": null}]}', "\\u0000",
    # Unicode oddities (lone surrogates cannot travel in a protobuf string)
    "\ufeff", "\u202e", "\u200b", "\U0001d54f\U0001d550", "\U0001f600\U0001f44d\U0001f3fd",
    "\u00df", "\u0130", "\r\n", "\t", "\u00a0", "\u3000",
    # etag-like
    'W/"1"', 'W/"\u00b2"', 'W/"\u0661"', 'W/"-1"', 'W/"99999999999999999999"',
]  # fmt: skip
SAFE_METACHARACTERS = [s for s in METACHARACTERS if s.strip() and "\x00" not in s]
BOUNDARY_LENGTHS = [
    0, 1, 20, 21, 35, 36, 50, 51, 64, 65, 100, 101, 128, 129, 200, 201, 255, 256,
    500, 501, 1000, 1001, 2000, 2001, 8000, 8001, 70_000, 300_000,
]  # fmt: skip
NAUGHTY_INT64 = [
    0, 1, -1, 2, INT32_MAX, INT32_MAX + 1, INT32_MIN, INT32_MIN - 1,
    2**53 + 1, INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1,
]  # fmt: skip
NAUGHTY_INT32 = [0, 1, -1, 5, 6, 100, 101, 500, 501, INT32_MAX, INT32_MIN]
NAUGHTY_DOUBLES = [
    math.nan, -math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, 0.5, 1e308, -1e308,
    5e-324, -5e-324, 1.0000000000000002, 0.9999999999999999, 10.0, 10.000000000000002, 2**63,
    # Subnormal and just below the smallest positive score input (1e-6).
    2.2250738585072014e-308, 2.225073858507201e-308, 1e-310, 1e-7, 9.999999999999999e-07, 1e-06,
]  # fmt: skip
# The service's time range is [0, TIME_END_SECONDS): 1970-01-01 to 9000-01-01.
TIME_END_SECONDS = 221845392000
SECONDS_EXTREMES = [
    -62135596801, -62135596800, -1, 0, 253402300799, 253402300800, 10**12, -(10**12),
    INT64_MAX, INT64_MIN, TIME_END_SECONDS - 1, TIME_END_SECONDS, TIME_END_SECONDS + 1,
]  # fmt: skip
# Overlong, truncated, surrogate-encoding, beyond U+10FFFF, stray continuation.
INVALID_UTF8_BYTES = [
    b"\xc0\xaf",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"ok\x80",
    b"\xff",
]
NANOS_EXTREMES = [-1, 0, 1, 999_999_999, 1_000_000_000, INT32_MAX, INT32_MIN]

any_text = st.text(st.characters(codec="utf-8"), max_size=40)
safe_char = st.characters(codec="utf-8", exclude_characters="\x00")


def _repeat(char: str, n: int) -> str:
    return char * n


long_text = st.builds(
    _repeat,
    st.sampled_from(["a", "\u00e9", "\U0001f600", " ", "\x00", "%", "'"]),
    st.sampled_from(BOUNDARY_LENGTHS),
)
with_nul = st.builds(lambda a, b: f"{a}\x00{b}", any_text, any_text)
blank = st.sampled_from(["", " ", "\t\n", "\u00a0", "\u3000 "])
hostile_text = st.one_of(st.sampled_from(METACHARACTERS), any_text, long_text, with_nul, blank)


def safe_text(max_chars: int, *, allow_empty: bool = False) -> st.SearchStrategy[str]:
    """Text within the field's limits, yet full of metacharacters."""
    options = [
        st.text(safe_char, min_size=1, max_size=min(max_chars, 40)).filter(str.strip),
        st.sampled_from([s for s in SAFE_METACHARACTERS if len(s) <= max_chars]),
        st.just("x" * max_chars),
        st.just("\U0001f600" * max_chars),
    ]
    if allow_empty:
        options.append(st.just(""))
    return st.one_of(*options)


def uuid_variants(real: str) -> list[str]:
    u = uuid.UUID(real)
    return [real.upper(), "{" + real + "}", "urn:uuid:" + real, u.hex, f" {real} ", real[:-1]]


hostile_uuid = st.one_of(
    st.uuids().map(str),  # well-formed, never registered
    st.sampled_from(["00000000-0000-0000-0000-000000000000", "not-a-uuid", "*", "", "'"]),
    hostile_text,
)

_json_keys = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=10),
    st.sampled_from(["", "\x00", "a\x00", "$.a", "@>", "'; DROP", "text", "subject", "->>"]),
)
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(),
    st.sampled_from(NAUGHTY_DOUBLES),
    st.integers(-(2**53), 2**53).map(float),
    st.one_of(st.sampled_from(METACHARACTERS), any_text, with_nul),
)
json_any = st.recursive(
    _json_scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4), st.dictionaries(_json_keys, kids, max_size=4)
    ),
    max_leaves=16,
)


def _nest(depth: int, kind: str) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": value} if kind == "dict" else [value]
    return value


deep_json = st.builds(
    _nest, st.sampled_from([15, 16, 17, 18, 31, 32, 33, 60, 120]), st.sampled_from(["dict", "list"])
)
_safe_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(safe_char, max_size=20),
    st.sampled_from(SAFE_METACHARACTERS),
)
safe_json_object = st.dictionaries(
    st.text(safe_char, max_size=10), st.one_of(_safe_scalars, st.lists(_safe_scalars, max_size=3)),
    max_size=4,
)  # fmt: skip
hostile_json_object = st.one_of(
    st.dictionaries(_json_keys, json_any, max_size=5),
    deep_json.map(lambda v: {"deep": v}),
    st.builds(lambda n: {"big": "x" * n}, st.sampled_from([16_000, 16_400, 65_000, 66_000])),
    st.just({"n": math.nan}),
    st.just({"\x00": 1}),
)

# metadata_filter's own limits: 8 levels (the outer object one of them) and
# 4096 bytes of compact JSON ({"big": ""} is 10 bytes), at and just past them.
hostile_json_filter = st.one_of(
    hostile_json_object,
    st.builds(_nest, st.sampled_from([6, 7, 8, 9]), st.sampled_from(["dict", "list"])).map(
        lambda v: {"deep": v}
    ),
    st.builds(lambda n: {"big": "x" * n}, st.sampled_from([4085, 4086, 4087, 4200])),
)


# JSON goes into messages in place: CopyFrom of a Struct nested deeper than
# protobuf's parse limit fails on the client, before anything is sent.


def fill_struct(target: struct_pb2.Struct, value: dict[str, Any]) -> None:
    target.update(value)


def fill_value(target: struct_pb2.Value, value: Any) -> None:
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int | float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, dict):
        target.struct_value.update(value)
    else:
        target.list_value.extend(value)


def timestamp_of(seconds: int, nanos: int = 0) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


hostile_timestamp = st.one_of(
    st.builds(
        timestamp_of,
        st.one_of(st.sampled_from(SECONDS_EXTREMES), st.integers(INT64_MIN, INT64_MAX)),
        st.one_of(st.sampled_from(NANOS_EXTREMES), st.integers(INT32_MIN, INT32_MAX)),
    ),
    # The bounds and one microsecond or nanosecond outside them.
    st.sampled_from(
        [
            timestamp_of(0),
            timestamp_of(-1, 999_999_999),
            timestamp_of(-1, 999_999_000),
            timestamp_of(TIME_END_SECONDS - 1, 999_999_999),
            timestamp_of(TIME_END_SECONDS),
            timestamp_of(253402300799, 999_999_999),
            timestamp_of(253402300799, 999_999_000),
            timestamp_of(-62135596800),
        ]
    ),
)
hostile_date = st.builds(
    date_pb2.Date,
    year=st.sampled_from(
        [0, 1, 1969, 1970, 2024, 8999, 9000, 9999, 10000, -1, INT32_MAX, INT32_MIN]
    ),
    month=st.sampled_from([0, 1, 2, 12, 13, -1, INT32_MAX]),
    day=st.sampled_from([0, 1, 29, 30, 31, 32, -1, INT32_MAX]),
)
safe_date = st.dates(
    min_value=datetime(1900, 1, 1).date(), max_value=datetime(2100, 1, 1).date()
).map(lambda d: date_pb2.Date(year=d.year, month=d.month, day=d.day))
hostile_duration = st.builds(
    duration_pb2.Duration,
    seconds=st.one_of(
        st.sampled_from([0, 59, 60, 3_155_760_000, 3_155_760_001, -60, *SECONDS_EXTREMES])
    ),
    nanos=st.sampled_from([0, 1, -1, 999_999_999, 1_000_000_000, INT32_MIN, INT32_MAX]),
)
hostile_etag = st.one_of(
    st.sampled_from(
        ['W/"\u00b2"', 'W/"\u2460"', '"\U0001d7d9"', 'W/"\u0661\u0662"', 'W/"+1"', "W/1"]
    ),
    hostile_text,
    st.builds(lambda body: f'W/"{body}"', st.text(max_size=4)),
    # Numeric-looking Unicode: superscripts, circled and Arabic-Indic digits.
    st.builds(
        lambda body: f'W/"{body}"',
        st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3),
    ),
    st.builds(lambda n: f'W/"{n}"', st.integers()),
    # Digit strings around a version's 10 digits and int()'s 4,300-digit limit.
    st.builds(
        lambda n, weak: ('W/"{}"' if weak else "{}").format("9" * n),
        st.sampled_from([10, 11, 4300, 4301, 100_000]),
        st.booleans(),
    ),
)
hostile_int64 = st.one_of(st.sampled_from(NAUGHTY_INT64), st.integers(INT64_MIN, INT64_MAX))
hostile_int32 = st.one_of(st.sampled_from(NAUGHTY_INT32), st.integers(INT32_MIN, INT32_MAX))
hostile_double = st.one_of(
    st.sampled_from(NAUGHTY_DOUBLES),
    st.floats(),
    # Subnormal: PostgreSQL raises "underflow" when a product with one rounds to 0.
    st.floats(min_value=0.0, max_value=2.2250738585072014e-308, exclude_min=True),
)
UNKNOWN_ENUMS = [999, -1, INT32_MAX, INT32_MIN]
# Headers: text values must be printable ASCII (the client refuses anything
# else before sending), binary ("-bin") ones may hold any bytes, invalid UTF-8
# included.
_ascii = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)
hostile_header = st.one_of(
    st.tuples(
        st.sampled_from(["authorization", "x-request-id", "x-user-id", "x-forwarded-for"]),
        st.one_of(
            _ascii,
            st.sampled_from([s for s in METACHARACTERS if s.isascii() and s.isprintable()]),
            st.sampled_from(["Bearer ", "Bearer a.b.c", "Basic Zm9vOmJhcg==", "x" * 4000]),
        ),
    ),
    st.tuples(
        st.sampled_from(["x-data-bin", "authorization-bin", "x-user-id-bin"]),
        st.one_of(st.binary(max_size=64), st.sampled_from(INVALID_UTF8_BYTES)),
    ),
)


def b64(payload: str) -> str:
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


random_token = st.one_of(
    hostile_text,
    # Deep nesting (json.loads recursion) and lengths around the 512-character cap.
    st.builds(
        lambda n, c: b64(c * n), st.sampled_from([300, 380, 1000, 100_000]), st.sampled_from("[{")
    ),
    st.builds(lambda n: "A" * n, st.sampled_from([511, 512, 513, 100_000])),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    json_any.map(lambda v: b64(json.dumps(v))),
    st.builds(
        lambda p, f: b64(json.dumps({"p": p, "f": f})),
        json_any,
        st.one_of(st.text(max_size=16), st.just("0" * 16)),
    ),
)
# A keyset position inside a token that carries the request's true
# fingerprint: what a client that reads the (documented, not secret) token
# format can forge.
_extreme_moments = st.sampled_from(
    [
        "0001-01-01T00:00:00+00:00",
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC
        "9999-12-31T23:59:59.999999+00:00",
        "9999-12-31T23:59:59.999999-14:00",  # year 10000 in UTC
        "2024-01-01T00:00:00+00:00",
        "1970-01-01T00:00:00+00:00",
        "1969-12-31T23:59:59.999999+00:00",
        "8999-12-31T23:59:59.999999+00:00",
        "9000-01-01T00:00:00+00:00",
    ]
)
_moments = st.one_of(
    _extreme_moments,
    st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    st.sampled_from(["2024-01-01T00:00:00", "2024-13-01T00:00:00+00:00", "garbage", ""]),
    _json_scalars,
)
_extreme_idents = st.sampled_from(
    [0, 1, -1, INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**100, -(2**100)]
)
_idents = st.one_of(_extreme_idents, st.integers(), st.just(True), _json_scalars)
forged_time_and_id = st.one_of(
    st.tuples(_extreme_moments, _extreme_idents).map(list),
    st.tuples(_extreme_moments, _extreme_idents).map(list),
    st.tuples(_moments, _idents).map(list),
    st.lists(_json_scalars, max_size=3),
)
forged_offset = st.one_of(
    st.tuples(_extreme_idents).map(list),
    st.tuples(_extreme_idents).map(list),
    st.tuples(_idents).map(list),
    st.lists(_idents, max_size=3),
)


# --- The rows the fuzzer can aim at -----------------------------------------


@dataclass
class World:
    """Ids of real rows (refreshed from the database before every example)."""

    user_ids: list[str] = field(default_factory=list)
    memories: list[tuple[int, int]] = field(default_factory=list)  # (id, version)
    lesson_ids: list[int] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    profile_ids: list[int] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)  # rpc -> a real next_page_token
    request_ids: set[str] = field(default_factory=set)  # request_ids already sent


@dataclass
class Snapshot:
    tables: dict[str, tuple[int, str]]  # table -> (rows, content hash)
    interactions_by_memory: dict[int, int]
    revisions_by_memory: dict[int, int]
    capabilities_by_profile: dict[int, int]


class Database:
    """asyncpg on the session loop, used from the Hypothesis thread."""

    def __init__(
        self, conn: asyncpg.Connection, loop: asyncio.AbstractEventLoop, server: RunningServer
    ) -> None:
        self._conn = conn
        self._loop = loop
        self._server = server

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _snapshot(self, world: World) -> Snapshot:
        await recalls_written(self._server)  # a recall's rows count as its own change
        c = self._conn
        tables = {r["t"]: (r["n"], r["h"]) for r in await c.fetch(_SNAPSHOT_SQL)}
        by_memory = await c.fetch("SELECT memory_id, count(*) FROM memory_interactions GROUP BY 1")
        revisions = await c.fetch("SELECT memory_id, count(*) FROM memory_revisions GROUP BY 1")
        by_profile = await c.fetch(
            "SELECT assistant_profile_id, count(*) FROM assistant_capabilities GROUP BY 1"
        )
        world.user_ids = [str(r[0]) for r in await c.fetch("SELECT id FROM users ORDER BY id")]
        world.memories = [
            (r[0], r[1]) for r in await c.fetch("SELECT id, version FROM user_memories ORDER BY id")
        ]
        world.lesson_ids = [r[0] for r in await c.fetch("SELECT id FROM lessons ORDER BY id")]
        world.category_ids = [
            r[0] for r in await c.fetch("SELECT id FROM subject_categories ORDER BY id")
        ]
        world.profile_ids = [
            r[0] for r in await c.fetch("SELECT id FROM assistant_profiles ORDER BY id")
        ]
        return Snapshot(
            tables=tables,
            interactions_by_memory={r[0]: r[1] for r in by_memory},
            revisions_by_memory={r[0]: r[1] for r in revisions},
            capabilities_by_profile={r[0]: r[1] for r in by_profile},
        )

    def snapshot(self, world: World) -> Snapshot:
        """Row counts and content hashes of every table; refreshes `world`'s ids."""
        result: Snapshot = self._run(self._snapshot(world))
        return result


# --- Drawing requests --------------------------------------------------------


class Draw:
    """Draws one request's values: each field valid-looking or hostile.

    How many fields are hostile is drawn per example: none (a plausible
    request that reaches the database with metacharacters inside the limits),
    exactly one (the others valid, so the hostile value gets past validation
    of the rest and as deep as it can), 10 % or 30 % of them, or all.
    """

    MODES = ("valid", "one", "one", "10%", "30%", "all")

    def __init__(
        self,
        data: st.DataObject,
        world: World,
        focus: frozenset[str] = frozenset(),
        sometimes: bool = False,
    ):
        self.data = data
        self.world = world
        # With a focus, exactly the named kinds of field are hostile: the rest
        # is valid, so the hostile value gets as far as it can.
        self.focus = focus
        # Each focused field hostile or not by a coin flip: a value that only
        # fails deep down (in SQL) must get there past its sibling fields.
        self.sometimes = sometimes
        self.mode = "valid" if focus else data.draw(st.sampled_from(self.MODES), label="mode")
        self.target = data.draw(st.integers(1, 8), label="the hostile field")
        self.fields = 0

    def __call__(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def hostile(self, kind: str = "") -> bool:
        """Whether the next field (of this kind) gets a hostile value."""
        self.fields += 1
        if self.focus:
            return kind in self.focus and (not self.sometimes or self.maybe())
        if self.mode in ("valid", "all"):
            return self.mode == "all"
        if self.mode == "one":
            return self.fields == self.target
        return bool(self(st.integers(0, 99)) < int(self.mode.rstrip("%")))

    def pick(
        self, valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], kind: str = ""
    ) -> Any:
        return self(hostile if self.hostile(kind) else valid)

    def maybe(self) -> bool:
        return bool(self(st.booleans()))

    # Field kinds.

    def text(self, max_chars: int, *, required: bool = False) -> str:
        return str(self.pick(safe_text(max_chars, allow_empty=not required), hostile_text))

    def texts(self, max_count: int, max_chars: int) -> list[str]:
        valid = st.lists(safe_text(max_chars), max_size=min(max_count, 4))
        hostile = st.one_of(
            st.lists(hostile_text, max_size=6),
            st.lists(st.just("t"), min_size=max_count + 1, max_size=max_count + 3),
            st.lists(safe_text(max_chars), min_size=max_count, max_size=max_count),
        )
        return list(self.pick(valid, hostile, "size"))

    # What is drawn never depends on the database (Hypothesis insists on
    # that): an index is drawn, then mapped onto the rows there are now.

    def index(self) -> int:
        return int(self(st.integers(0, 1023)))

    @staticmethod
    def choose(pool: list[Any], index: int, default: Any) -> Any:
        return pool[index % len(pool)] if pool else default

    def user_id(self, *, optional: bool = False) -> str:
        real = self.world.user_ids
        i = self.index()
        if self.hostile():
            if self.maybe():
                return str(self(hostile_uuid))
            variants = uuid_variants(self.choose(real, i, str(uuid.UUID(int=i))))
            return str(variants[self(st.integers(0, len(variants) - 1))])
        if optional and i % 4 == 0:
            return ""
        return str(self.choose(real, i, str(uuid.UUID(int=i))))

    def ref(self, ids: list[int], *, zero_ok: bool = True) -> int:
        i = self.index()
        if self.hostile():
            return int(self(hostile_int64))
        if zero_ok and i % 3 == 0:
            return 0
        return int(self.choose(ids, i, i % 5 + 1))

    def memory_id(self) -> int:
        return self.ref([m for m, _ in self.world.memories], zero_ok=False)

    def lesson_id(self) -> int:
        return self.ref(self.world.lesson_ids, zero_ok=False)

    def int32(self, valid: st.SearchStrategy[int]) -> int:
        return int(self.pick(valid, hostile_int32))

    def unit(self) -> float:
        return float(self.pick(st.floats(0.0, 1.0), hostile_double, "double"))

    def json_object(self) -> dict[str, Any]:
        result: dict[str, Any] = self.pick(safe_json_object, hostile_json_object)
        return result

    def json_filter(self) -> dict[str, Any]:
        result: dict[str, Any] = self.pick(safe_json_object, hostile_json_filter)
        return result

    def json_value(self) -> Any:
        return self.pick(st.one_of(safe_json_object, st.lists(_safe_scalars, max_size=4)), json_any)

    def timestamp(self, *, future: bool = False) -> timestamp_pb2.Timestamp:
        now = int(datetime.now(UTC).timestamp())
        offsets = st.integers(3600, 400 * 86400) if future else st.integers(-(10**9), 10**9)
        valid = st.builds(timestamp_of, offsets.map(lambda o: now + o), st.integers(0, 999_999_999))
        result: timestamp_pb2.Timestamp = self.pick(valid, hostile_timestamp, "time")
        return result

    def date(self) -> date_pb2.Date:
        result: date_pb2.Date = self.pick(safe_date, hostile_date, "time")
        return result

    def enum(self, known: list[int]) -> Any:  # an enum's ValueType, or a number it lacks
        return int(self.pick(st.sampled_from(known), st.sampled_from(UNKNOWN_ENUMS)))

    def page_size(self) -> int:
        return self.int32(st.sampled_from([0, 1, 2, 3, 500, 501, INT32_MAX]))

    def page_token(self, rpc: str, forge: Callable[[Any], str] | None) -> str:
        """'' mostly; else a real token (maybe of other filters), garbage, or a forgery."""
        hostile = self.hostile("page_token")
        kind = self(
            st.sampled_from(["random", "forged", "forged"] if hostile else ["none", "real"])
        )
        if kind == "real":
            return self.world.tokens.get(rpc, "")
        if kind == "random":
            return str(self(random_token))
        if kind == "forged" and forge is not None:
            return forge(self)
        return ""

    def etag(self, memory_id: int) -> str:
        """'' or the memory's current or a stale etag; or a hostile one."""
        if self.hostile("etag"):
            return str(self(hostile_etag))
        kind = self(st.integers(0, 2))
        version = dict(self.world.memories).get(memory_id)
        if kind == 0 or version is None:
            return ""
        return memory_messages.etag(version + kind - 1)

    def metadata(self) -> list[tuple[str, str | bytes]]:
        """Request headers: none, or a few hostile ones the gRPC client lets through."""
        if not self.hostile("metadata"):
            return []
        return list(self(st.lists(hostile_header, min_size=1, max_size=3)))

    def request_id(self) -> str:
        valid = st.one_of(st.just(""), st.uuids().map(str))
        hostile = st.one_of(hostile_text, st.just("r" * 129), st.just("\x7f"), st.just("caf\u00e9"))
        return str(self.pick(valid, hostile))


def _forger(
    fingerprint_of: Callable[[], Any], position: st.SearchStrategy[Any]
) -> Callable[[Draw], str]:
    def forge(d: Draw) -> str:
        try:
            filters = fingerprint_of()
        except DomainError:
            filters = {}  # the server rejects the filters before reading the token
        return page_token.encode(d(position), filters)

    return forge


# --- Request builders, one per RPC ------------------------------------------


def _memory(d: Draw, m: memory_pb2.Memory, *, for_update: bool = False) -> None:
    m.user_id = d.user_id()
    m.assistant_profile_id = d.ref(d.world.profile_ids)
    m.content = d.text(8000, required=True)
    m.category = d.text(100, required=True)
    m.tags.extend(d.texts(32, 64))
    m.source = d.text(100)
    if d.maybe():
        m.importance = d.unit()
    if d.maybe():
        m.confidence = d.unit()
    if d.maybe():
        fill_struct(m.context, d.json_object())
    if d.maybe():
        fill_struct(m.metadata, d.json_object())
    if d.maybe():
        m.expire_time.CopyFrom(d.timestamp(future=True))
    if for_update:
        m.id = d.memory_id()
        m.etag = d.etag(m.id)
        if d.mode != "valid" and d.maybe():
            # Fields UpdateMemory ignores: they must not reach the audit row
            # (a NUL here once failed its insert after the change committed).
            m.user_id = d(hostile_text)
            m.version = d(hostile_int64)
            m.create_time.CopyFrom(d(hostile_timestamp))
            m.update_time.CopyFrom(d(hostile_timestamp))
    elif d.mode != "valid" and d.maybe():  # output-only fields, which the server must ignore
        m.id = d(hostile_int64)
        m.version = d(hostile_int64)
        m.etag = d(hostile_text)
        m.create_time.CopyFrom(d(hostile_timestamp))
        m.last_access_time.CopyFrom(d(hostile_timestamp))


DEDUP_POLICIES = [
    memory_service_pb2.DEDUP_POLICY_UNSPECIFIED,
    memory_service_pb2.DEDUP_POLICY_NONE,
    memory_service_pb2.DEDUP_POLICY_EXACT,
    memory_service_pb2.DEDUP_POLICY_SEMANTIC,
]


def store_memory(
    d: Draw, request: memory_service_pb2.StoreMemoryRequest | None = None
) -> memory_service_pb2.StoreMemoryRequest:
    """A StoreMemoryRequest, filled in place when given one (a batch's item: appending
    a copy would re-parse it, and a hostile Struct is nested past the parse limit)."""
    if request is None:
        request = memory_service_pb2.StoreMemoryRequest()
    request.request_id = d.request_id()
    _memory(d, request.memory)
    request.dedup_policy = d.pick(st.sampled_from(DEDUP_POLICIES), st.sampled_from(UNKNOWN_ENUMS))
    if d.maybe():  # valid only with SEMANTIC, from 0.5 to 1
        request.dedup_min_similarity = d.pick(st.floats(0.5, 1.0), hostile_double, "double")
    if d.mode == "all" and d.maybe():
        request.ClearField("memory")
    return request


def batch_store_memories(d: Draw) -> memory_service_pb2.BatchStoreMemoriesRequest:
    """1-4 store requests, or (hostile) none, over 100, or two with one request_id."""
    request = memory_service_pb2.BatchStoreMemoriesRequest()
    count = d.pick(st.integers(1, 4), st.sampled_from([0, 101, 2]), "size")
    for _ in range(count):
        store_memory(d, request.requests.add())
    if count == 2 and d.hostile():
        request.requests[1].request_id = request.requests[0].request_id = "same"
    return request


def get_memory(d: Draw) -> memory_service_pb2.GetMemoryRequest:
    return memory_service_pb2.GetMemoryRequest(id=d.memory_id())


MASK_PATHS = [
    "content", "context", "importance", "category", "tags", "source", "confidence",
    "expire_time", "metadata", "assistant_profile_id",
]  # fmt: skip
hostile_paths = st.one_of(
    hostile_text,
    st.sampled_from(["id", "user_id", "version", "etag", "create_time", "memory.content", "*"]),
)


def update_memory(d: Draw) -> memory_service_pb2.UpdateMemoryRequest:
    request = memory_service_pb2.UpdateMemoryRequest()
    _memory(d, request.memory, for_update=True)
    valid = st.lists(st.sampled_from(MASK_PATHS), min_size=1, max_size=4)
    hostile = st.one_of(
        st.lists(st.one_of(st.sampled_from(MASK_PATHS), hostile_paths), max_size=5),
        # Around the 32-path cap, and far past it.
        st.builds(lambda n: [f"p{i}" for i in range(n)], st.sampled_from([11, 32, 33, 100_000])),
        st.builds(lambda n: MASK_PATHS * n, st.sampled_from([3, 4])),
    )
    request.update_mask.paths.extend(d.pick(valid, hostile, "size"))
    return request


def delete_memory(d: Draw) -> memory_service_pb2.DeleteMemoryRequest:
    request = memory_service_pb2.DeleteMemoryRequest(id=d.memory_id())
    request.etag = d.etag(request.id)
    return request


def list_memories(d: Draw) -> memory_service_pb2.ListMemoriesRequest:
    request = memory_service_pb2.ListMemoriesRequest(
        user_id=d.user_id(),
        assistant_profile_id=d.ref(d.world.profile_ids),
        categories=d.texts(50, 100),
        tags=d.texts(32, 64),
        page_size=d.page_size(),
    )
    _shared_filters(d, request)
    forge = _forger(lambda: asdict(memory_messages.memory_filter(request)), forged_time_and_id)
    request.page_token = d.page_token("ListMemories", forge)
    return request


def _shared_filters(
    d: Draw,
    request: memory_service_pb2.ListMemoriesRequest | memory_service_pb2.RecallMemoriesRequest,
) -> None:
    """The filters ListMemories and RecallMemories share: metadata, update and access times."""
    if d.maybe():
        fill_struct(request.metadata_filter, d.json_filter())
    for name in (
        "update_time_start",
        "update_time_end",
        "last_access_time_start",
        "last_access_time_end",
    ):
        if d.maybe():
            getattr(request, name).CopyFrom(d.timestamp())


def recall_memories(d: Draw) -> memory_service_pb2.RecallMemoriesRequest:
    request = memory_service_pb2.RecallMemoriesRequest(
        user_id=d.user_id(),
        query=d.text(1000),
        assistant_profile_id=d.ref(d.world.profile_ids),
        categories=d.texts(50, 100),
        tags=d.texts(32, 64),
        tag_match=d.enum([0, 1, 2]),
        min_importance=d.pick(st.floats(0.0, 0.3), hostile_double, "double"),
        limit=d.int32(st.sampled_from([0, 1, 5, 100, 500, 501])),
        skip_access_tracking=d.maybe(),
    )
    _shared_filters(d, request)
    if d.maybe():
        fill_struct(request.context, d.json_object())
    if d.maybe():
        request.create_time_start.CopyFrom(d.timestamp())
    if d.maybe():
        request.create_time_end.CopyFrom(d.timestamp())
    w = request.weights
    for name in ("importance", "recency", "relevance"):
        if d.maybe():
            setattr(w, name, d.pick(st.floats(0.0, 10.0), hostile_double, "double"))
    if d.maybe():
        valid_half_life = st.builds(duration_pb2.Duration, seconds=st.integers(60, 10**9))
        w.recency_half_life.CopyFrom(d.pick(valid_half_life, hostile_duration))
    return request


def record_feedback(d: Draw) -> memory_service_pb2.RecordFeedbackRequest:
    request = memory_service_pb2.RecordFeedbackRequest(
        memory_id=d.memory_id(), comment=d.text(2000), request_id=d.request_id()
    )
    signal = d(st.sampled_from(["helpful", "rating", "none"]))
    if signal == "helpful":
        request.helpful = d.maybe()
    elif signal == "rating" or d.mode == "valid":
        request.rating = d.int32(st.integers(1, 5))
    if d.maybe():
        fill_struct(request.context, d.json_object())
    return request


def list_interactions(d: Draw) -> memory_service_pb2.ListInteractionsRequest:
    request = memory_service_pb2.ListInteractionsRequest(
        user_id=d.user_id(optional=True),
        memory_id=d.ref([m for m, _ in d.world.memories]),
        type=d.enum([0, 1, 2, 3, 4]),
        page_size=d.page_size(),
    )
    if d.maybe():
        request.start_time.CopyFrom(d.timestamp())
    if d.maybe():
        request.end_time.CopyFrom(d.timestamp())
    forge = _forger(lambda: asdict(memory_messages.interaction_filter(request)), forged_time_and_id)
    request.page_token = d.page_token("ListInteractions", forge)
    return request


def list_memory_revisions(d: Draw) -> memory_service_pb2.ListMemoryRevisionsRequest:
    request = memory_service_pb2.ListMemoryRevisionsRequest(
        memory_id=d.memory_id(), page_size=d.page_size()
    )
    # The filters a revisions token is fingerprinted with (services/memories.py).
    forge = _forger(
        lambda: {"memory_id": memory_messages.memory_id(request.memory_id, "memory_id")},
        forged_offset,
    )
    request.page_token = d.page_token("ListMemoryRevisions", forge)
    return request


STATUSES = [0, 1, 2, 3]


def get_lesson(d: Draw) -> lesson_service_pb2.GetLessonRequest:
    return lesson_service_pb2.GetLessonRequest(id=d.lesson_id())


def list_lessons(d: Draw) -> lesson_service_pb2.ListLessonsRequest:
    request = lesson_service_pb2.ListLessonsRequest(
        user_id=d.user_id(optional=True),
        status=d.enum(STATUSES),
        grade_level=d.text(20),
        subject_category_id=d.ref(d.world.category_ids),
        subject_category_name=d.text(100),
        tags=d.texts(32, 64),
        page_size=d.page_size(),
    )
    if d.maybe():
        request.week_of_start.CopyFrom(d.date())
    if d.maybe():
        request.week_of_end.CopyFrom(d.date())
    if d.maybe():
        fill_struct(request.lesson_data, d.json_object())
    forge = _forger(lambda: asdict(lesson_messages.lesson_filter(request)), forged_offset)
    request.page_token = d.page_token("ListLessons", forge)
    return request


def search_lessons(d: Draw) -> lesson_service_pb2.SearchLessonsRequest:
    request = lesson_service_pb2.SearchLessonsRequest(
        query=d.text(500, required=True),
        user_id=d.user_id(optional=True),
        status=d.enum(STATUSES),
        page_size=d.page_size(),
    )

    def filters() -> Any:
        query, user, status = lesson_messages.search_terms(request)
        return {"query": query, "user_id": user, "status": status}

    request.page_token = d.page_token("SearchLessons", _forger(filters, forged_offset))
    return request


def upsert_user(d: Draw) -> admin_service_pb2.UpsertUserRequest:
    local = st.text(st.sampled_from("abcxyz0189._%+-"), min_size=1, max_size=20)
    emails = st.builds(lambda a, b: f"{a}@{b}.example.org", local, st.sampled_from(["x", "y-z"]))
    id_kind = d(st.sampled_from(["none", "registered", "new"]))
    user = registry_pb2.User(
        id=""
        if id_kind == "none"
        else d.user_id()
        if id_kind == "registered"
        else d.pick(st.uuids().map(str), hostile_uuid),
        email=d.pick(emails, st.one_of(hostile_text, emails.map(lambda e: e + "\n"))),
        name=d.text(255),
        is_active=d.maybe(),
        school=d.text(255),
        department=d.text(255),
        subjects=d.texts(50, 100),
        grade_levels=d.texts(50, 100),
        custom_instructions=d.text(8000),
    )
    if d.mode != "valid" and d.maybe():
        user.create_time.CopyFrom(d(hostile_timestamp))
    request = admin_service_pb2.UpsertUserRequest(user=user)
    if d.mode == "all" and d.maybe():
        request.ClearField("user")
    return request


def upsert_user_preferences(d: Draw) -> admin_service_pb2.UpsertUserPreferencesRequest:
    prefs = registry_pb2.UserPreferences(
        user_id=d.user_id(),
        theme=d.text(50),
        language=d.text(35),
        timezone=d.text(64),
    )
    request = admin_service_pb2.UpsertUserPreferencesRequest(preferences=prefs)
    if d.maybe():
        fill_struct(request.preferences.notifications, d.json_object())
    if d.mode == "all" and d.maybe():
        request.ClearField("preferences")
    return request


def upsert_subject_category(d: Draw) -> admin_service_pb2.UpsertSubjectCategoryRequest:
    category = registry_pb2.SubjectCategory(
        id=d.ref(d.world.category_ids) if d.maybe() else 0,
        name=d.text(100, required=True),
        description=d.text(8000),
        parent_id=d.ref(d.world.category_ids),
        level=d(hostile_int32),  # output only
        is_active=d.maybe(),
    )
    request = admin_service_pb2.UpsertSubjectCategoryRequest(category=category)
    if d.maybe():
        fill_struct(request.category.metadata, d.json_object())
    return request


def upsert_assistant_profile(d: Draw) -> admin_service_pb2.UpsertAssistantProfileRequest:
    profile = registry_pb2.AssistantProfile(
        id=d.ref(d.world.profile_ids) if d.maybe() else 0,
        name=d.text(100, required=True),
        description=d.text(8000),
        model_version=d.text(50, required=True),
        is_active=d.maybe(),
    )
    request = admin_service_pb2.UpsertAssistantProfileRequest(profile=profile)
    profile = request.profile
    if d.maybe():
        fill_struct(profile.configuration, d.json_object())
    for _ in range(51 if d.hostile("size") else d(st.integers(0, 4))):
        capability = profile.capabilities.add(
            name=d.text(100, required=True),
            description=d.text(8000),
            is_enabled=d.maybe(),
            priority=d(hostile_int32),
        )
        if d.maybe():
            fill_struct(capability.parameters, d.json_object())
    return request


JSON_VALUE_FIELDS = ("objectives", "materials", "activities", "assessment_criteria", "feedback")


def upsert_lesson(d: Draw) -> admin_service_pb2.UpsertLessonRequest:
    lesson = lesson_pb2.Lesson(
        id=d.ref(d.world.lesson_ids) if d.maybe() else 0,
        title=d.text(200, required=True),
        user_id=d.user_id(),
        subject_category_id=d.ref(d.world.category_ids),
        assistant_profile_id=d.ref(d.world.profile_ids),
        grade_level=d.text(20),
        content_area=d.text(100),
        status=d.enum(STATUSES),
        tags=d.texts(32, 64),
        related_lesson_ids=[
            d.ref(d.world.lesson_ids, zero_ok=False) for _ in range(d(st.integers(0, 3)))
        ]
        if not d.hostile("size")
        else d(st.builds(lambda n, i: [i] * n, st.sampled_from([50, 51, 100_000]), hostile_int64)),
    )
    request = admin_service_pb2.UpsertLessonRequest(lesson=lesson)
    lesson = request.lesson
    if d.mode != "valid" and d.maybe():  # output-only fields
        lesson.subject_category_name = d(hostile_text)
        lesson.update_time.CopyFrom(d(hostile_timestamp))
    if d.maybe():
        lesson.week_of.CopyFrom(d.date())
    if d.maybe():
        data = d.json_object()
        if d.maybe():
            data["text"] = d.text(8000)
        fill_struct(lesson.lesson_data, data)
    for name in JSON_VALUE_FIELDS:
        if d.maybe():
            if d.hostile() and d.maybe():
                getattr(lesson, name).SetInParent()  # a Value with no kind set
            else:
                fill_value(getattr(lesson, name), d.json_value())
    if d.mode == "all" and d.maybe():
        request.ClearField("lesson")
    return request


def delete_lesson(d: Draw) -> admin_service_pb2.DeleteLessonRequest:
    return admin_service_pb2.DeleteLessonRequest(id=d.lesson_id())


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    build: Callable[[Draw], Message]
    # Tables a successful call may change; every other table must stay the same.
    writes: tuple[str, ...] = ()


# RPCs deliberately not fuzzed here, with why (test_every_memory_rpc_is_fuzzed_or_excused).
NOT_FUZZED = {
    # Every check of this file sends one request message to a unary RPC, and
    # ImportMemories is client-streaming. Its items are decoded with
    # StoreMemory's own rules (memory_messages.decode_new_memory), which
    # StoreMemory's fuzzing covers; its own rules (import_id, original times,
    # stream protocol, undecodable messages) are tested in test_import.py.
    "ImportMemories": "client-streaming",
}
# A change of a memory keeps a revision; a deletion takes them with it.
_CHANGES = ("user_memories", "memory_interactions", "memory_revisions")
MEMORY_RPCS = [
    # A store may merge into an existing memory (DedupPolicy): a change, so a revision.
    Rpc("MemoryService", "StoreMemory", store_memory, _CHANGES),
    Rpc("MemoryService", "BatchStoreMemories", batch_store_memories, _CHANGES),
    Rpc("MemoryService", "GetMemory", get_memory),
    Rpc("MemoryService", "UpdateMemory", update_memory, _CHANGES),
    Rpc("MemoryService", "DeleteMemory", delete_memory, _CHANGES),
    Rpc("MemoryService", "ListMemories", list_memories),
    Rpc(
        "MemoryService",
        "RecallMemories",
        recall_memories,
        ("user_memories", "memory_interactions"),
    ),
    Rpc("MemoryService", "RecordFeedback", record_feedback, _CHANGES),
    Rpc("MemoryService", "ListInteractions", list_interactions),
    Rpc("MemoryService", "ListMemoryRevisions", list_memory_revisions),
]
LESSON_RPCS = [
    Rpc("LessonService", "GetLesson", get_lesson),
    Rpc("LessonService", "ListLessons", list_lessons),
    Rpc("LessonService", "SearchLessons", search_lessons),
]
ADMIN_RPCS = [
    Rpc("AdminService", "UpsertUser", upsert_user, ("users",)),
    Rpc("AdminService", "UpsertUserPreferences", upsert_user_preferences, ("user_preferences",)),
    Rpc("AdminService", "UpsertSubjectCategory", upsert_subject_category, ("subject_categories",)),
    Rpc(
        "AdminService",
        "UpsertAssistantProfile",
        upsert_assistant_profile,
        ("assistant_profiles", "assistant_capabilities"),
    ),
    Rpc("AdminService", "UpsertLesson", upsert_lesson, ("lessons",)),
    Rpc("AdminService", "DeleteLesson", delete_lesson, ("lessons",)),
]


# --- Checking one call -------------------------------------------------------


def _delta(before: Snapshot, after: Snapshot, table: str) -> int:
    return after.tables[table][0] - before.tables[table][0]


def expected_deltas(
    rpc: Rpc, request: Any, response: Any, before: Snapshot, world: World, outcome: str
) -> dict[str, set[int]]:
    """Allowed row-count changes of a successful call, per table it writes.

    `outcome`: StoreMemory's faraday-store-outcome header."""
    repeat = bool(getattr(request, "request_id", "")) and request.request_id in world.request_ids
    match rpc.name:
        case "StoreMemory":
            created, merged = outcome == "created", outcome == "deduplicated"
            return {
                "user_memories": {int(created)},
                "memory_interactions": {int(created or merged)},
                "memory_revisions": {0, 1} if merged else {0},
            }
        case "BatchStoreMemories":
            outcomes = Counter(r.outcome for r in response.results)
            created = outcomes[memory_service_pb2.STORE_OUTCOME_CREATED]
            merged = outcomes[memory_service_pb2.STORE_OUTCOME_DEDUPLICATED]
            return {
                "user_memories": {created},
                "memory_interactions": {created + merged},
                "memory_revisions": set(range(merged + 1)),
            }
        case "UpdateMemory":
            return {"user_memories": {0}, "memory_interactions": {1}, "memory_revisions": {0, 1}}
        case "DeleteMemory":
            gone = before.interactions_by_memory.get(request.id, 0)
            revisions = before.revisions_by_memory.get(request.id, 0)
            return {
                "user_memories": {-1},
                "memory_interactions": {-gone},
                "memory_revisions": {-revisions},
            }
        case "RecallMemories":
            return {"user_memories": {0}, "memory_interactions": {0, len(response.memories)}}
        case "RecordFeedback":
            return {
                "user_memories": {0},
                "memory_interactions": {0, 1} if repeat else {1},
                "memory_revisions": {0, 1},
            }
        case "UpsertUser":
            return {"users": {0, 1}}
        case "UpsertUserPreferences":
            return {"user_preferences": {0, 1}}
        case "UpsertSubjectCategory":
            return {"subject_categories": {0} if request.category.id else {0, 1}}
        case "UpsertAssistantProfile":
            return {"assistant_profiles": {0} if request.profile.id else {0, 1}}
        case "UpsertLesson":
            return {"lessons": {0} if request.lesson.id else {1}}
        case "DeleteLesson":
            return {"lessons": {-1}}
    return {}


def bad_request_fields(error: grpc.RpcError) -> tuple[list[str], list[str]]:
    """(BadRequest field paths, ErrorInfo reasons) of an error's status details."""
    fields: list[str] = []
    reasons: list[str] = []
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields.extend(v.field for v in bad.field_violations)
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reasons.append(info.reason)
    return fields, reasons


def _names_a_field(request: Message, path: str) -> bool:
    root = path.split(".")[0].split("[")[0]
    descriptor = request.DESCRIPTOR
    return root in descriptor.fields_by_name or root in descriptor.oneofs_by_name


def check_call(
    rpc: Rpc,
    request: Any,
    code: grpc.StatusCode,
    response: Any,
    error: grpc.RpcError | None,
    before: Snapshot,
    after: Snapshot,
    world: World,
    outcome: str = "",
) -> list[str]:
    problems: list[str] = []
    if code not in ACCEPTABLE:
        problems.append(f"status {code.name}")
    if (
        code == StatusCode.RESOURCE_EXHAUSTED
        and request.ByteSize() <= MESSAGE_LIMIT_BYTES
        # gRPC itself refuses request headers past its 8 KiB soft limit.
        and "metadata size exceeds" not in ((error.details() or "") if error is not None else "")
    ):
        problems.append("RESOURCE_EXHAUSTED for a request within the message limit")
    if code == StatusCode.INVALID_ARGUMENT and error is not None:
        fields, reasons = bad_request_fields(error)
        if not fields and "MALFORMED_REQUEST" not in reasons:
            problems.append("INVALID_ARGUMENT without a google.rpc.BadRequest naming a field")
        for path in fields:
            if not _names_a_field(request, path):
                problems.append(f"INVALID_ARGUMENT names {path!r}, not a field of the request")
    if code != StatusCode.OK:
        changed = [t for t in TABLES if before.tables[t] != after.tables[t]]
        if changed:
            problems.append(f"failed with {code.name} but changed {', '.join(changed)}")
        return problems
    for table in TABLES:
        if table not in rpc.writes and before.tables[table] != after.tables[table]:
            problems.append(f"succeeded but changed {table}, which {rpc.name} never writes")
    if rpc.name == "StoreMemory" and outcome not in ("created", "deduplicated", "replayed"):
        problems.append(f"faraday-store-outcome is {outcome!r}")
    if rpc.name == "BatchStoreMemories" and len(response.results) != len(request.requests):
        problems.append(f"{len(response.results)} results for {len(request.requests)} requests")
    for table, allowed in expected_deltas(rpc, request, response, before, world, outcome).items():
        delta = _delta(before, after, table)
        if delta not in allowed:
            problems.append(f"{table} changed by {delta} rows, expected one of {sorted(allowed)}")
    if rpc.name == "UpsertAssistantProfile":
        rows = after.capabilities_by_profile.get(response.id, 0)
        if rows != len(request.profile.capabilities):
            problems.append(
                f"profile {response.id} has {rows} capabilities,"
                f" the request sent {len(request.profile.capabilities)}"
            )
    if rpc.name == "DeleteMemory" and after.interactions_by_memory.get(request.id):
        problems.append("interactions of the deleted memory remain")
    if rpc.name == "DeleteMemory" and after.revisions_by_memory.get(request.id):
        problems.append("revisions of the deleted memory remain")
    return problems


# --- Running -----------------------------------------------------------------


@dataclass
class Tally:
    name: str
    examples: int = 0
    calls: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    per_rpc: dict[str, Counter[str]] = field(default_factory=dict)
    problems: dict[tuple[str, str], str] = field(default_factory=dict)  # (rpc, what) -> request

    def record(self, rpc: str, code: grpc.StatusCode) -> None:
        self.calls += 1
        self.codes[code.name] += 1
        self.per_rpc.setdefault(rpc, Counter())[code.name] += 1

    def problem(self, rpc: str, what: str, request: Message, details: str) -> None:
        text = text_format.MessageToString(request, as_utf8=True, as_one_line=True)
        if len(text) > 1500:
            text = text[:1500] + f"... ({len(text)} characters)"
        self.problems.setdefault((rpc, what), f"{details}\n  request: {text}")

    @property
    def internal(self) -> int:
        return self.codes["INTERNAL"] + self.codes["UNKNOWN"]

    def line(self) -> str:
        histogram = ", ".join(f"{k}={v}" for k, v in self.codes.most_common())
        return (
            f"FUZZ {self.name}: examples={self.examples} calls={self.calls}"
            f" codes[{histogram}] internal_or_unknown={self.internal}"
            f" hangs={self.codes['DEADLINE_EXCEEDED']} problems={len(self.problems)}"
        )

    def report(self) -> str:
        lines = [self.line()]
        for rpc, codes in sorted(self.per_rpc.items()):
            lines.append(f"  {rpc}: " + ", ".join(f"{k}={v}" for k, v in codes.most_common()))
        return "\n".join(lines)

    def failure(self) -> str:
        parts = [self.line()]
        for (rpc, what), example in sorted(self.problems.items()):
            parts.append(f"- {rpc}: {what}\n  {example}")
        return "\n".join(parts)


def max_examples(default: int) -> int:
    return EXAMPLES or default


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # problems are collected, never raised
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


class Client:
    """Blocking stubs on a channel of the Hypothesis thread."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{port}",
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_metadata_size", CLIENT_METADATA_LIMIT),
            ],
        )
        self.outcome = ""
        self.stubs: dict[str, Any] = {
            "MemoryService": memory_service_pb2_grpc.MemoryServiceStub(self.channel),
            "LessonService": lesson_service_pb2_grpc.LessonServiceStub(self.channel),
            "AdminService": admin_service_pb2_grpc.AdminServiceStub(self.channel),
        }

    def call(
        self, rpc: Rpc, request: Message, metadata: list[tuple[str, str | bytes]]
    ) -> tuple[grpc.StatusCode, Any, grpc.RpcError | None]:
        """The call's status, response and error; its StoreMemory outcome header in self.outcome."""
        method = getattr(self.stubs[rpc.service], rpc.name)
        self.outcome = ""
        try:
            response, call = method.with_call(
                request, timeout=CALL_TIMEOUT_SECONDS, metadata=metadata or None
            )
            self.outcome = dict(call.initial_metadata() or ()).get("faraday-store-outcome", "")
            return StatusCode.OK, response, None
        except grpc.RpcError as error:
            return error.code(), None, error

    def replenish(self, world: World) -> bool:
        """Keep a few memories and lessons around for the RPCs that aim at rows."""
        added = False
        if world.user_ids and len(world.memories) < 3:
            memory = memory_pb2.Memory(
                user_id=world.user_ids[0], content="Prefers worked examples.", category="pref"
            )
            self.stubs["MemoryService"].StoreMemory(
                memory_service_pb2.StoreMemoryRequest(
                    memory=memory, dedup_policy=memory_service_pb2.DEDUP_POLICY_NONE
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            added = True
        if world.user_ids and len(world.lesson_ids) < 3:
            lesson = lesson_pb2.Lesson(
                title="Fractions on a number line",
                user_id=world.user_ids[0],
                status=lesson_pb2.LESSON_STATUS_PUBLISHED,
            )
            self.stubs["AdminService"].UpsertLesson(
                admin_service_pb2.UpsertLessonRequest(lesson=lesson), timeout=CALL_TIMEOUT_SECONDS
            )
            added = True
        return added

    def close(self) -> None:
        self.channel.close()


def run_fuzz(
    name: str,
    rpcs: list[Rpc],
    examples: int,
    port: int,
    db: Database,
    focus: frozenset[str],
    sometimes: bool,
) -> Tally:
    """Runs in a worker thread: Hypothesis draws requests, a blocking channel sends them."""
    tally = Tally(name)
    world = World()
    client = Client(port)

    @fuzz_settings(examples)
    @given(st.data())
    def one_example(data: st.DataObject) -> None:
        before = db.snapshot(world)
        if client.replenish(world):
            before = db.snapshot(world)
        d = Draw(data, world, focus, sometimes)
        rpc = d(st.sampled_from(rpcs))
        request = rpc.build(d)
        metadata = d.metadata()
        code, response, error = client.call(rpc, request, metadata)
        after = db.snapshot(world)
        tally.examples += 1
        tally.record(rpc.name, code)
        details = f"{code.name}: {error.details() if error is not None else ''}"
        checked = check_call(
            rpc, request, code, response, error, before, after, world, client.outcome
        )
        for what in checked:
            tally.problem(rpc.name, what, request, f"{details}\n  metadata: {metadata!r}")
        request_id = getattr(request, "request_id", "")
        if request_id:
            world.request_ids.add(request_id)
        token = getattr(response, "next_page_token", "")
        if token:
            world.tokens[rpc.name] = token

    try:
        one_example()
    finally:
        client.close()
    return tally


async def seed(admin_stub: Any, memory_stub: Any) -> None:
    """A few real rows of every kind, so that some calls hit them."""
    users = []
    for i in range(3):
        user = await admin_stub.UpsertUser(
            admin_service_pb2.UpsertUserRequest(
                user=registry_pb2.User(
                    email=f"fuzz-{i}@school.example.org", name=f"Teacher {i}", is_active=True
                )
            )
        )
        users.append(user.id)
    await admin_stub.UpsertUserPreferences(
        admin_service_pb2.UpsertUserPreferencesRequest(
            preferences=registry_pb2.UserPreferences(user_id=users[0], theme="dark")
        )
    )
    parent = await admin_stub.UpsertSubjectCategory(
        admin_service_pb2.UpsertSubjectCategoryRequest(
            category=registry_pb2.SubjectCategory(name="Mathematics")
        )
    )
    child = await admin_stub.UpsertSubjectCategory(
        admin_service_pb2.UpsertSubjectCategoryRequest(
            category=registry_pb2.SubjectCategory(name="Fractions", parent_id=parent.id)
        )
    )
    profile = await admin_stub.UpsertAssistantProfile(
        admin_service_pb2.UpsertAssistantProfileRequest(
            profile=registry_pb2.AssistantProfile(
                name="Planner",
                model_version="gpt-4o",
                capabilities=[registry_pb2.AssistantCapability(name="plan", is_enabled=True)],
            )
        )
    )
    for i, status in enumerate(
        [lesson_pb2.LESSON_STATUS_PUBLISHED, lesson_pb2.LESSON_STATUS_DRAFT]
    ):
        lesson = lesson_pb2.Lesson(
            title=f"Adding fractions {i}",
            user_id=users[i],
            subject_category_id=child.id,
            assistant_profile_id=profile.id,
            grade_level="7",
            content_area="Fractions",
            status=status,
            tags=["fractions"],
        )
        lesson.lesson_data.update(
            {"text": "Number lines and equivalent fractions", "subject": "Math"}
        )
        await admin_stub.UpsertLesson(admin_service_pb2.UpsertLessonRequest(lesson=lesson))
    for i, content in enumerate(
        ["Prefers bullet points.", "Class 7B struggles with fractions.", "Uses Khan Academy."]
    ):
        memory = memory_pb2.Memory(
            user_id=users[i % 2],
            assistant_profile_id=profile.id if i else 0,
            content=content,
            category="preference",
            tags=["grade-7"],
        )
        memory.context.update({"class": "7B"})
        stored = await memory_stub.StoreMemory(memory_service_pb2.StoreMemoryRequest(memory=memory))
        await memory_stub.RecordFeedback(
            memory_service_pb2.RecordFeedbackRequest(memory_id=stored.id, rating=4)
        )


async def _fuzz(
    name: str,
    rpcs: list[Rpc],
    examples: int,
    server: RunningServer,
    database_url: str,
    admin_stub: Any,
    memory_stub: Any,
    focus: frozenset[str] = frozenset(),
    sometimes: bool = False,
) -> None:
    await seed(admin_stub, memory_stub)
    conn = await asyncpg.connect(database_url)
    try:
        db = Database(conn, asyncio.get_running_loop(), server)
        tally = await asyncio.to_thread(
            run_fuzz, name, rpcs, examples, server.port, db, focus, sometimes
        )
    finally:
        await conn.close()
    print("\n" + tally.report())
    assert tally.calls >= examples
    if tally.problems:
        pytest.fail(tally.failure(), pytrace=False)


async def test_memory_service_survives_hostile_requests(
    server: RunningServer, database_url: str, admin_stub: Any, memory_stub: Any
) -> None:
    examples = max_examples(450)
    await _fuzz(
        "MemoryService", MEMORY_RPCS, examples, server, database_url, admin_stub, memory_stub
    )


async def test_lesson_service_survives_hostile_requests(
    server: RunningServer, database_url: str, admin_stub: Any, memory_stub: Any
) -> None:
    examples = max_examples(200)
    await _fuzz(
        "LessonService", LESSON_RPCS, examples, server, database_url, admin_stub, memory_stub
    )


async def test_admin_service_survives_hostile_requests(
    server: RunningServer, database_url: str, admin_stub: Any, memory_stub: Any
) -> None:
    examples = max_examples(350)
    await _fuzz("AdminService", ADMIN_RPCS, examples, server, database_url, admin_stub, memory_stub)


TOKEN_AND_ETAG_RPCS = [
    rpc
    for rpc in MEMORY_RPCS + LESSON_RPCS
    if rpc.name
    in {"ListMemories", "ListInteractions", "ListMemoryRevisions", "ListLessons", "SearchLessons",
        "UpdateMemory", "DeleteMemory"}
]  # fmt: skip


async def test_forged_page_tokens_and_etags_are_rejected_cleanly(
    server: RunningServer, database_url: str, admin_stub: Any, memory_stub: Any
) -> None:
    """Valid requests but for the page token or etag: random, or forged with the true fingerprint.

    Tokens are opaque by contract but not secret (base64url JSON with a
    fingerprint of the filters), so a client can forge one with any keyset
    position: out-of-range ids, timestamps that overflow in UTC, wrong types.
    """
    examples = max_examples(200)
    await _fuzz(
        "page tokens and etags",
        TOKEN_AND_ETAG_RPCS,
        examples,
        server,
        database_url,
        admin_stub,
        memory_stub,
        focus=frozenset({"page_token", "etag"}),
    )


# The RPCs with fields of each kind (size: repeated fields and masks).
BOUNDARY_RPCS = {
    "double": {"StoreMemory", "BatchStoreMemories", "UpdateMemory", "RecallMemories"},
    "time": {
        "StoreMemory", "BatchStoreMemories", "UpdateMemory", "ListMemories", "RecallMemories",
        "ListInteractions",
        "UpsertLesson", "ListLessons",
    },
    "size": {
        "StoreMemory", "BatchStoreMemories", "UpdateMemory", "ListMemories", "RecallMemories",
        "ListLessons", "UpsertUser", "UpsertAssistantProfile", "UpsertLesson",
    },
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(BOUNDARY_RPCS))
async def test_boundary_values_are_rejected_cleanly(
    kind: str, server: RunningServer, database_url: str, admin_stub: Any, memory_stub: Any
) -> None:
    """Valid requests but for fields of one kind, each drawn at or beyond its limits or not.

    double: subnormal, tiny, NaN and extreme floats in every float field (a
    subnormal weight once reached PostgreSQL and failed with "underflow");
    time: timestamps and dates at 1970-01-01 and 9000-01-01, one microsecond
    or nanosecond outside, and protobuf's own extremes; size: repeated
    fields and masks just over their caps and 100,000 long.
    """
    examples = max_examples(100)
    rpcs = [
        rpc for rpc in MEMORY_RPCS + LESSON_RPCS + ADMIN_RPCS if rpc.name in BOUNDARY_RPCS[kind]
    ]
    await _fuzz(
        f"boundary {kind}", rpcs, examples, server, database_url, admin_stub, memory_stub,
        focus=frozenset({kind}), sometimes=True,
    )  # fmt: skip


# --- Bytes that are not a request message ------------------------------------


SERVICES = {
    "MemoryService": memory_service_pb2.DESCRIPTOR.services_by_name["MemoryService"],
    "LessonService": lesson_service_pb2.DESCRIPTOR.services_by_name["LessonService"],
    "AdminService": admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
}


def request_class(rpc: Rpc) -> Any:
    return message_factory.GetMessageClass(
        SERVICES[rpc.service].methods_by_name[rpc.name].input_type
    )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def string_paths(message: Any, depth: int = 0) -> Iterator[list[int]]:
    """Field-number paths to every string field, nested messages included.

    Reaches Struct keys and Value.string_value (e.g. inside Memory.metadata)
    through the map entries; stops five levels down, as Struct recurses.
    """
    for f in message.fields:
        if f.type == f.TYPE_STRING:
            yield [f.number]
        elif f.type == f.TYPE_MESSAGE and depth < 5:
            for path in string_paths(f.message_type, depth + 1):
                yield [f.number, *path]


def invalid_utf8_requests() -> dict[str, list[bytes]]:
    """Per RPC, one request per string field (at any depth) holding invalid UTF-8."""
    result: dict[str, list[bytes]] = {}
    for rpc in MEMORY_RPCS + LESSON_RPCS + ADMIN_RPCS:
        payloads = []
        for i, path in enumerate(string_paths(request_class(rpc).DESCRIPTOR)):
            payload = INVALID_UTF8_BYTES[i % len(INVALID_UTF8_BYTES)]
            for number in reversed(path):
                payload = length_delimited(number, payload)
            payloads.append(payload)
        result[rpc.name] = payloads
    return result


def _struct_in(message: Any, depth: int = 0) -> struct_pb2.Struct | None:
    """The first singular Struct field of `message` or of a message inside it."""
    for f in message.DESCRIPTOR.fields:
        if f.type != f.TYPE_MESSAGE or f.is_repeated:
            continue
        if f.message_type.full_name == "google.protobuf.Struct":
            found: struct_pb2.Struct = getattr(message, f.name)
            return found
        if depth < 2 and (inner := _struct_in(getattr(message, f.name), depth + 1)) is not None:
            return inner
    return None


def too_deep_requests() -> dict[str, bytes]:
    """Per RPC with a Struct field, a request nesting it past protobuf's parse depth limit."""
    result: dict[str, bytes] = {}
    for rpc in MEMORY_RPCS + LESSON_RPCS + ADMIN_RPCS:
        request = request_class(rpc)()
        struct = _struct_in(request)
        if struct is not None:
            struct.update({"deep": _nest(120, "dict")})  # serializes; only parsing is limited
            result[rpc.name] = request.SerializeToString()
    return result


garbage = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.sampled_from(
        [
            b"\xff\xff\xff\xff",
            b"\x08",  # a varint field with no value
            b"\x0a\x05ab",  # a length past the end
            b"\x0a\xff\xff\xff\xff\x0f",  # a 4 GiB length
            b"\x0f",  # field 1 with wire type 7
            b"\x00",  # field number 0
            b"\x08" + b"\xff" * 11,  # an 11-byte varint
        ]
    ),
)


async def test_undecodable_requests_are_invalid_argument(server: RunningServer) -> None:
    """Garbage, invalid UTF-8 and too deep nesting get INVALID_ARGUMENT, never INTERNAL/UNKNOWN."""
    rpcs = MEMORY_RPCS + LESSON_RPCS + ADMIN_RPCS
    utf8 = invalid_utf8_requests()
    deep = too_deep_requests()
    examples = max_examples(200)

    def run() -> Tally:
        tally = Tally("undecodable requests")
        channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")

        def send(rpc: Rpc, payload: bytes) -> None:
            method = channel.unary_unary(
                f"/faraday.memory.v1.{rpc.service}/{rpc.name}",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            try:
                method(payload, timeout=CALL_TIMEOUT_SECONDS)
                code = StatusCode.OK
                details = ""
            except grpc.RpcError as error:
                code = error.code()
                details = error.details() or ""
            tally.record(rpc.name, code)
            if code != StatusCode.INVALID_ARGUMENT:
                tally.problems.setdefault(
                    (rpc.name, code.name), f"{code.name}: {details}\n  bytes: {payload[:80]!r}"
                )

        try:
            for rpc in rpcs:  # every string field of every request, by hand
                for payload in utf8[rpc.name]:
                    send(rpc, payload)
                if rpc.name in deep:
                    send(rpc, deep[rpc.name])

            @fuzz_settings(examples)
            @given(st.sampled_from(rpcs), garbage)
            def random_bytes(rpc: Rpc, payload: bytes) -> None:
                tally.examples += 1
                try:
                    request_class(rpc).FromString(payload)
                except DecodeError:
                    send(rpc, payload)
                # Bytes that happen to parse are an ordinary request: not this test's business.

            random_bytes()
        finally:
            channel.close()
        return tally

    tally = await asyncio.to_thread(run)
    print("\n" + tally.report())
    assert tally.calls > 0
    if tally.problems:
        pytest.fail(tally.failure(), pytrace=False)


async def test_every_memory_rpc_is_fuzzed_or_excused() -> None:
    """A new MemoryService RPC is fuzzed, or NOT_FUZZED says why not.

    (AdminService's DeleteUserData and ExportUserData predate this check and
    are left out of the fuzzer without a recorded reason.)
    """
    fuzzed = {rpc.name for rpc in MEMORY_RPCS}
    declared = {m.name for m in SERVICES["MemoryService"].methods}
    assert declared - fuzzed - set(NOT_FUZZED) == set()
    assert not fuzzed & set(NOT_FUZZED)
