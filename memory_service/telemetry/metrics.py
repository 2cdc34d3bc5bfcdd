"""Prometheus metrics: the metric objects, the hooks that move them, the /metrics endpoint.

Recording is off until a server starts the endpoint (FARADAY_METRICS_PORT):
until then every hook returns at its first line. Metrics are per process.
With `serve --workers N` each worker is its own process and serves its own
endpoint on FARADAY_METRICS_PORT + its index (0..N-1), to be scraped as N
targets: simpler and exact, where prometheus_client's multiprocess mode
would need a shared directory of mmap files and loses the pool gauges'
live reading (docs/observability.md).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_on = False

# Latency buckets for calls that take 0.5 ms to several seconds.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RPC_CALLS = Counter(
    "faraday_rpc_calls",
    "RPCs finished, by method and status code (denied and refused calls included).",
    ["method", "code"],
)
RPC_SECONDS = Histogram(
    "faraday_rpc_duration_seconds",
    "Server-side time of an RPC, from the first interceptor to its status.",
    ["method"],
    buckets=_SECONDS,
)
POOL_ACQUIRE_SECONDS = Histogram(
    "faraday_db_pool_acquire_seconds",
    "Time to get a connection from a pool (the wait, when none was idle).",
    ["pool"],
    buckets=_SECONDS,
)
POOL_WAITS = Counter(
    "faraday_db_pool_waits",
    "Acquisitions that found no idle connection (they waited or opened a new one).",
    ["pool"],
)
CACHE_LOOKUPS = Counter(
    "faraday_lesson_cache_lookups",
    "GetLesson cache lookups by result: hit, miss, error (Redis failed or the entry was"
    " unreadable) or skipped (Redis paused after a failure).",
    ["result"],
)
CACHE_ERRORS = Counter(
    "faraday_lesson_cache_errors",
    "Failed lesson-cache operations (get, put, invalidate, decode).",
    ["operation"],
)
RATE_LIMITED = Counter(
    "faraday_rate_limited_calls",
    "Calls refused RESOURCE_EXHAUSTED: over the credential's rate limit (credential)"
    " or from an address past its denied-calls budget (denied_calls).",
    ["reason"],
)
RECALL_RESULTS = Histogram(
    "faraday_recall_scored_rows",
    "Rows a recall's statement returned scored (a proxy for the candidates it"
    " considered; the statement does not count its candidates).",
    buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500, 1000),
)
EMBEDDING_SECONDS = Histogram(
    "faraday_embedding_duration_seconds",
    "Time of one model call of the server's embedder (a batch of texts).",
    ["model"],
    buckets=_SECONDS,
)
EMBEDDED_TEXTS = Counter("faraday_embedded_texts", "Texts the server's model embedded.", ["model"])
SWEEP_RUNS = Counter(
    "faraday_sweep_runs", "Periodic job runs, by job and outcome (ok, failed).", ["job", "outcome"]
)
SWEPT = Counter(
    "faraday_swept_items", "What the periodic jobs handled (expired memories deleted...).", ["job"]
)
RECALL_LOG_ROWS = Counter(
    "faraday_recall_log_rows",
    "Recall bookkeeping rows (an interaction and a last-access bump each) the batched writer"
    " handled, by outcome (written, dropped).",
    ["outcome"],
)


def enabled() -> bool:
    return _on


def rpc_finished(method: str, code: str, seconds: float) -> None:
    if not _on:
        return
    RPC_CALLS.labels(method, code).inc()
    RPC_SECONDS.labels(method).observe(seconds)


def pool_acquired(pool: str, seconds: float, waited: bool) -> None:
    if not _on:
        return
    POOL_ACQUIRE_SECONDS.labels(pool).observe(seconds)
    if waited:
        POOL_WAITS.labels(pool).inc()


def cache_lookup(result: str) -> None:
    if _on:
        CACHE_LOOKUPS.labels(result).inc()


def cache_error(operation: str) -> None:
    if _on:
        CACHE_ERRORS.labels(operation).inc()


def rate_limited(reason: str) -> None:
    if _on:
        RATE_LIMITED.labels(reason).inc()


def recall_scored(rows: int) -> None:
    if _on:
        RECALL_RESULTS.observe(rows)


def recall_log_rows(outcome: str, rows: int) -> None:
    if _on and rows:
        RECALL_LOG_ROWS.labels(outcome).inc(rows)


def embedded(model: str, texts: int, seconds: float) -> None:
    if not _on:
        return
    EMBEDDING_SECONDS.labels(model).observe(seconds)
    EMBEDDED_TEXTS.labels(model).inc(texts)


def sweep_ran(job: str, handled: int | None) -> None:
    """`handled` None: the run failed."""
    if not _on:
        return
    SWEEP_RUNS.labels(job, "ok" if handled is not None else "failed").inc()
    if handled:
        SWEPT.labels(job).inc(handled)


# --- Pool gauges, read from the live pools at scrape time.


class PoolStats(Protocol):
    def pool_sizes(self) -> Iterable[tuple[str, int, int, int]]:
        """(pool name, open connections, idle connections, maximum size) of each pool."""


_pools: weakref.WeakSet[Any] = weakref.WeakSet()
_pools_lock = threading.Lock()  # the scrape runs on the endpoint's thread


def watch_pools(owner: PoolStats) -> None:
    with _pools_lock:
        _pools.add(owner)


def unwatch_pools(owner: PoolStats) -> None:
    with _pools_lock:
        _pools.discard(owner)


class _PoolCollector(Collector):
    """In use, idle and maximum connections of each pool, summed over the open Databases."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals: dict[str, list[int]] = {}
        with _pools_lock:
            owners = list(_pools)
        for owner in owners:
            for name, size, idle, maximum in owner.pool_sizes():
                t = totals.setdefault(name, [0, 0, 0])
                t[0] += size - idle
                t[1] += idle
                t[2] += maximum
        for i, (metric, text) in enumerate(
            (
                ("faraday_db_pool_connections_in_use", "Pool connections lent out."),
                ("faraday_db_pool_connections_idle", "Open pool connections not lent out."),
                ("faraday_db_pool_connections_max", "Most connections the pool may open."),
            )
        ):
            family = GaugeMetricFamily(metric, text, labels=["pool"])
            for name, t in sorted(totals.items()):
                family.add_metric([name], t[i])
            yield family


REGISTRY.register(_PoolCollector())


@dataclass
class MetricsEndpoint:
    """A running /metrics HTTP endpoint (on a thread of its own, off the event loop)."""

    _httpd: WSGIServer
    _thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self._httpd.server_port)

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def serve(host: str, port: int) -> MetricsEndpoint:
    """Start recording and serve http://host:port/metrics; port 0 picks a free one."""
    global _on
    httpd, thread = start_http_server(port, addr=host)
    _on = True
    return MetricsEndpoint(httpd, thread)
