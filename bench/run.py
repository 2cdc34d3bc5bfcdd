"""The performance benchmark (`make bench`): the service against its floors, on one machine.

    .venv/bin/python bench/run.py              # 1M memories, 10k users: a few minutes
    .venv/bin/python bench/run.py --quick      # small smoke run (about a minute)
    .venv/bin/python bench/run.py --only recall store --concurrency 16

Starts a throwaway embedded PostgreSQL (or uses --database-url, the schema
owner's URL to an empty database), migrates it, loads the data set
(bench/dataset.py) in growth stages, and starts a private redis-server when
the binary exists. Then:

1. growth: at 10k, 100k, ... memories, the real service recalls (with and
   without query text) for the probe user, whose size never changes;
2. the grid: every RPC kind at every concurrency against three targets, side
   by side: the service (`memory-service serve`, its own process), the grpc
   floor (bench/floor_server.py: a bare grpc.aio server doing the service's
   SQL) and the direct floor (the same SQL through asyncpg, no gRPC; for the
   cached GetLesson, a Redis GET). The load comes from bench/loadgen.py, a
   process of its own. The semantic kinds (hybrid recall with a caller's
   vector or the server's embedding of the query, StoreMemory embedded by
   the server) run against a second service and grpc floor started with
   FARADAY_EMBEDDING_MODEL set to the built-in WordLlama model;
3. the heaviest user's recall plans: EXPLAIN (ANALYZE, BUFFERS) as the
   service role of the recall statements with that user's most common term.

Writes bench/results/<timestamp>/{results.json, results.md, latency.png} and
prints the Markdown (tables, and PASS/FAIL for the issue's targets) to stdout.
bench/README.md explains how to read it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This checkout's memory_service and migrations, here and in every child
# (PYTHONPATH below), not whichever checkout the virtualenv installed: a
# worktree sharing another checkout's .venv would otherwise measure that one.
# Before the bench modules, which import memory_service (dataset.py).
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import dataset  # noqa: E402
import pg  # noqa: E402
import psutil  # noqa: E402
import report  # noqa: E402
from dataset import SEMANTIC_DIMENSION, SEMANTIC_KINDS, SEMANTIC_MODEL  # noqa: E402

GRID_KINDS = (
    "recall",
    "recall_query",
    "recall_vector",
    "recall_embed",
    "store",
    "store_embed",
    "feedback",
    "get_lesson",
    "list_lessons",
    "search_lessons",
    "get_lesson_cached",
)
# Not in the default grid (--only): recall with logging off, and every caller
# recalling for the same user at once.
EXTRA_KINDS = ("recall_nolog", "recall_query_nolog", "recall_one_user")
GROWTH_KINDS = ("probe_recall", "probe_recall_query", "probe_recall_vector")
GROWTH_CONCURRENCY = (1, 16)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:.0f} s")


class Server:
    """A server process (the service, a floor, redis) and its log."""

    def __init__(self, label: str, command: list[str], env: dict[str, str], logs: Path) -> None:
        self.label = label
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.log_path = logs / f"{label.replace(' ', '-')}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        wait_port(self.port, self.process, label)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_mb(self) -> tuple[float, float]:
        """Resident memory of the process tree: (total, largest single process), in MB."""
        sizes = [0]
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    sizes.append(p.memory_info().rss)
        return sum(sizes) / 2**20, max(sizes) / 2**20

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


class RssWatch(threading.Thread):
    """Samples every running server's RSS twice a second for the whole run."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.servers: dict[str, Server] = {}
        self.max_mb: dict[str, float] = {}  # process tree
        self.max_process_mb: dict[str, float] = {}  # largest single process
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(0.5):
            for name, server in list(self.servers.items()):
                total, largest = server.rss_mb()
                self.max_mb[name] = max(self.max_mb.get(name, 0.0), total)
                self.max_process_mb[name] = max(self.max_process_mb.get(name, 0.0), largest)

    def stop(self) -> None:
        self._stop.set()


class LoadGen:
    """The load-generator process: one JSON command in, one JSON answer out."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self._stderr = (logs / "loadgen.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH / "loadgen.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=ROOT,
            text=True,
        )

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the load generator died (see loadgen.log)")
        answer: dict[str, Any] = json.loads(line)
        if "failed" in answer:
            raise RuntimeError(f"load generator: {answer['failed']}")
        return answer

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._stderr.close()


class Bench:
    def __init__(self, args: argparse.Namespace, out: Path) -> None:
        self.args = args
        self.out = out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
        self.env = {**os.environ, "GRPC_ENABLE_FORK_SUPPORT": "false", "PYTHONPATH": path}
        self.servers: dict[str, Server] = {}
        self.rss = RssWatch()
        self.loadgen: LoadGen | None = None
        self.owner_url = ""
        self.app_url = ""
        self.redis_url: str | None = None
        self.redis_skipped: str | None = None
        self.pg_pid: int | None = None
        self.redis_pid: int | None = None
        self.cells: list[dict[str, Any]] = []
        self.load: list[dict[str, Any]] = []
        self.first_cell: set[tuple[str, str]] = set()
        self.floor_check: dict[str, Any] = {}
        self.explain: list[dict[str, Any]] = []
        self.import_result: dict[str, Any] | None = None
        self.model: Any = None  # the data set's embedding model, loaded on first use
        self.git_at_start = git_describe()

    # ------------------------------------------------------------ servers

    def service_command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "memory_service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
        ]
        if self.args.workers > 1:
            command += ["--workers", str(self.args.workers)]
        return command

    def server(self, name: str) -> Server:
        """The named server, started on first use."""
        if name in self.servers:
            return self.servers[name]
        env = dict(self.env)
        floor = [sys.executable, str(BENCH / "floor_server.py"), "--port", "{port}"]
        if self.args.workers > 1:
            floor += ["--workers", str(self.args.workers)]
        for key in (
            "FARADAY_REDIS_URL",
            "FARADAY_LOG_RECALL_INTERACTIONS",
            "FARADAY_PORT",
            "FARADAY_EMBEDDING_MODEL",
        ):
            env.pop(key, None)
        env["FARADAY_DATABASE_URL"] = self.app_url
        if name.endswith("semantic"):
            env["FARADAY_EMBEDDING_MODEL"] = SEMANTIC_MODEL
        if name == "service":
            command, label = self.service_command(), "service"
        elif name == "service semantic":
            command, label = self.service_command(), f"service with {SEMANTIC_MODEL}"
        elif name == "service redis":
            assert self.redis_url is not None
            env["FARADAY_REDIS_URL"] = self.redis_url
            command, label = self.service_command(), "service with Redis"
        elif name == "service nolog":
            env["FARADAY_LOG_RECALL_INTERACTIONS"] = "false"
            command, label = self.service_command(), "service, recall logging off"
        elif name == "floor":
            command, label = [*floor, "--database-url", self.app_url], "grpc floor"
        elif name == "floor semantic":
            command = [*floor, "--database-url", self.app_url]
            label = f"grpc floor with {SEMANTIC_MODEL}"
        elif name == "ceiling":
            command = [*floor, "--mode", "canned", "--database-url", self.app_url]
            label = "grpc.aio, canned answer"
        elif name == "floor nolog":
            command = [*floor, "--database-url", self.app_url, "--no-log-recalls"]
            label = "grpc floor, recall logging off"
        elif name == "floor redis":
            assert self.redis_url is not None
            command = [*floor, "--mode", "redis", "--redis-url", self.redis_url]
            label = "grpc floor on Redis"
        else:
            raise KeyError(name)
        log(f"  starting {label}")
        server = Server(name, command, env, self.logs)
        server.label = label
        self.servers[name] = server
        self.rss.servers[name] = server
        return server

    def stop_server(self, name: str) -> None:
        server = self.servers.pop(name, None)
        if server is not None:
            if self.loadgen is not None:  # drop channels to it (and the rest; reopened lazily)
                self.loadgen.ask({"op": "close"})
            self.rss.servers.pop(name, None)
            server.stop()

    def stop_all(self) -> None:
        if self.loadgen is not None:
            with contextlib.suppress(Exception):
                self.loadgen.ask({"op": "close"})
        for name in list(self.servers):
            self.stop_server(name)

    def start_redis(self) -> Server | None:
        if self.args.redis_url:
            self.redis_url = self.args.redis_url
            return None
        binary = shutil.which("redis-server")
        if binary is None:
            self.redis_skipped = "skipped: no redis-server binary on PATH (or pass --redis-url)"
            log(f"  Redis: {self.redis_skipped}")
            return None
        command = [
            binary,
            "--port",
            "{port}",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        redis = Server("redis", command, self.env, self.logs)
        self.redis_url = f"redis://127.0.0.1:{redis.port}/0"
        self.redis_pid = redis.pid
        return redis

    # ------------------------------------------------------------ cells

    def targets(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(target key, label, load-generator command fields) for one RPC kind."""
        if kind == "get_lesson_cached":
            if self.redis_url is None:
                return []
            return [
                ("service", "service (Redis)", self._grpc("service redis")),
                ("grpc floor", "grpc.aio + Redis", self._grpc("floor redis")),
                ("direct floor", "redis-py GET", {"target": "redis", "redis_url": self.redis_url}),
            ]
        nolog = kind.endswith("_nolog")
        direct = {"target": "asyncpg", "database_url": self.app_url}
        if kind in SEMANTIC_KINDS:
            return [
                ("service", "service (model)", self._grpc("service semantic")),
                ("grpc floor", "grpc.aio + model", self._grpc("floor semantic")),
                ("direct floor", "asyncpg + model", direct),
            ]
        targets = [
            ("service", "service", self._grpc("service nolog" if nolog else "service")),
            ("grpc floor", "grpc.aio + asyncpg", self._grpc("floor nolog" if nolog else "floor")),
            ("direct floor", "asyncpg", direct),
        ]
        if kind in ("recall", "list_lessons", "search_lessons"):
            # What gRPC, protobuf and the load generator alone reach here.
            targets.append(("grpc ceiling", "grpc.aio, canned answer", self._grpc("ceiling")))
        return targets

    def _grpc(self, name: str) -> dict[str, Any]:
        server = self.server(name)
        return {"target": "grpc", "address": server.address, "server_pids": [server.pid]}

    def measure(
        self,
        phase: str,
        kind: str,
        targets: list[tuple[str, str, dict[str, Any]]],
        concurrency: int,
        size: int,
        workload: Path,
        duration: float | None = None,
    ) -> None:
        """One cell per target, measured in interleaved rounds (A B C A B C ...).

        Rounds spread the targets of a comparison over the same stretch of
        time, so a checkpoint, an autovacuum or a noisy neighbour lands on all
        of them rather than on whichever happened to be running.
        """
        assert self.loadgen is not None
        rounds = max(1, self.args.rounds)
        duration = duration or self.args.duration
        parts: dict[str, list[dict[str, Any]]] = {t[0]: [] for t in targets}
        for _ in range(rounds):
            for target, _label, fields in targets:
                first = (kind, target) not in self.first_cell
                self.first_cell.add((kind, target))
                parts[target].append(
                    self.loadgen.ask(
                        {
                            "op": "run",
                            "rpc": kind,
                            "concurrency": concurrency,
                            "warmup": self.args.warmup * (3 if first else 1),
                            "duration": duration / rounds,
                            "workload": str(workload),
                            "pg_pid": self.pg_pid,
                            "helper_pids": [self.redis_pid] if self.redis_pid else [],
                            **fields,
                        }
                    )
                )
        for target, label, _fields in targets:
            cell = {
                "phase": phase,
                "rpc": kind,
                "target": target,
                "target_label": label,
                "concurrency": concurrency,
                "size": size,
                **combine(parts[target]),
            }
            self.cells.append(cell)
            errors = ""
            if cell["errors"]:
                errors = f", {cell['errors']} ERRORS {cell['error_samples'][:1]}"
            log(
                f"  {kind:<20} {label:<20} c={concurrency:<3} {cell['throughput']:7.0f}/s"
                f"  p50 {cell.get('p50_ms', 0):7.2f}  p99 {cell.get('p99_ms', 0):7.2f} ms"
                f"  cpu/call {cell.get('server_cpu_ms_per_call', 0):.3f} ms{errors}"
            )

    # ------------------------------------------------------------ phases

    async def load_to(self, plan: dataset.Plan, start: int, size: int) -> None:
        log(f"loading memories {start:,} .. {size:,}")
        # Past the grid's size, vectors only with --vectors-beyond-grid: the
        # HNSW rebuild over 10M of them would take hours on two cores, and the
        # probe users' hybrid recall (their vectors are loaded at the first
        # stage) reads their own rows, not the index (bench/README.md).
        vectors = self.args.embeddings and (
            size <= self.args.memories or self.args.vectors_beyond_grid
        )
        if self.model is None and vectors:
            from memory_service.embedding import load_model

            self.model = load_model(SEMANTIC_MODEL)
        conn = await asyncpg.connect(self.owner_url)
        try:
            stats = await dataset.load_memories(
                conn,
                plan,
                start,
                size,
                model=self.model if vectors else None,
                terms=self.args.terms,
            )
        finally:
            await conn.close()
        stats["size"] = size
        self.load.append(stats)
        log(f"  {stats}")

    def write_workload(self, plan: dataset.Plan, size: int) -> Path:
        path = self.out / f"workload-{size}.json"
        path.write_text(
            json.dumps(dataset.workload(plan, size, traffic_exponent=self.args.traffic_exponent))
        )
        return path

    def growth_stage(self, plan: dataset.Plan, size: int) -> None:
        workload = self.write_workload(plan, size)
        log(f"growth: probe user's recall at {size:,} memories")
        for kind in GROWTH_KINDS:
            if kind == "probe_recall_vector":  # hybrid: the service with the model
                if not self.args.embeddings:
                    continue
                targets = [("service", "service (model)", self._grpc("service semantic"))]
            else:
                targets = [("service", "service", self._grpc("service"))]
            for level in GROWTH_CONCURRENCY:
                # Two thirds of a grid cell: 12 cells, and their answer is a trend.
                duration = self.args.duration * 2 / 3
                self.measure("growth", kind, targets, level, size, workload, duration)

    def verify_floor(self, workload: Path) -> None:
        """Check the grpc floor answers as the service does, so it is the same work."""
        assert self.loadgen is not None
        semantic: dict[str, str] = {}
        if set(self.args.only or GRID_KINDS) & set(SEMANTIC_KINDS):
            semantic = {
                "semantic_service": self.server("service semantic").address,
                "semantic_floor": self.server("floor semantic").address,
            }
        self.floor_check = self.loadgen.ask(
            {
                "op": "verify",
                "service": self.server("service").address,
                "floor": self.server("floor").address,
                "workload": str(workload),
                **semantic,
            }
        )
        for kind, found in self.floor_check.items():
            flag = "" if found["same"] == found["asked"] else f"  DIFFERENT: {found['differences']}"
            log(f"  floor check {kind}: {found['same']}/{found['asked']} identical{flag}")

    def grid(self, plan: dataset.Plan, size: int) -> None:
        workload = self.write_workload(plan, size)
        self.verify_floor(workload)
        kinds = [k for k in self.args.only or GRID_KINDS if k != "import"]
        for kind in kinds:
            targets = self.targets(kind)
            if not targets:
                log(f"{kind}: {self.redis_skipped}")
                continue
            log(f"{kind}:")
            for level in self.args.concurrency:
                self.measure("grid", kind, targets, level, size, workload)
            if kind == "get_lesson_cached":  # only they need these two
                self.stop_server("service redis")
                self.stop_server("floor redis")
            if kind.endswith("_nolog"):
                self.stop_server("service nolog")
                self.stop_server("floor nolog")

    async def import_cell(self) -> None:
        """ImportMemories into the loaded database against two floors (bench/import_cell.py)."""
        import import_cell

        log(f"import: {self.args.import_memories:,} memories, {self.args.import_users} users")
        service = self.server("service")
        self.import_result = await import_cell.measure(
            self.owner_url,
            self.app_url,
            service.address,
            count=self.args.import_memories,
            users=self.args.import_users,
            pg_pid=self.pg_pid,
            server_pid=service.pid,
        )
        for line in report.import_table(self.import_result):
            log(f"  {line}")

    def explain_heaviest(self, plan: dataset.Plan, size: int) -> None:
        """EXPLAIN ANALYZE the recall statements for the heaviest user, as the service role."""
        assert self.loadgen is not None
        counts = plan.counts_at(size)
        answer = self.loadgen.ask(
            {
                "op": "explain",
                "database_url": self.app_url,
                "user_id": str(plan.user_ids[int(counts.argmax())]),
                "semantic": self.args.embeddings,
            }
        )
        for e in answer["plans"]:
            e["user_memories"] = int(counts.max())
            self.explain.append(e)
            log(f"  EXPLAIN {e['rpc']}, heaviest user ({e['user_memories']:,} memories),"
                f" query {e['query']!r}: {e['plan'][-1].strip()}")  # fmt: skip

    async def environment(self) -> dict[str, Any]:
        conn = await asyncpg.connect(self.owner_url)
        try:
            version = await conn.fetchval("SHOW server_version")
            settings = {
                r["name"]: r["value"]
                for r in await conn.fetch(
                    "SELECT name, current_setting(name) AS value FROM pg_settings"
                    " WHERE name = ANY($1::text[])",
                    [
                        "shared_buffers",
                        "max_connections",
                        "synchronous_commit",
                        "work_mem",
                        "effective_cache_size",
                        "jit",
                        "max_parallel_workers_per_gather",
                    ],
                )
            }
            tables = await dataset.table_stats(conn)
        finally:
            await conn.close()
        import grpc

        return {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "asyncpg": asyncpg.__version__,
            "postgres": f"PostgreSQL {version}",
            "postgres_settings": settings,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "git": git_describe(),
            "git_at_start": self.git_at_start,
            "tables": tables,
        }


def is_plain_service(name: str) -> bool:
    return name.startswith("service") and not name.endswith("semantic")


def git_describe() -> str:
    """The commit, and a digest of the service's code (which others may be editing)."""
    import hashlib

    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    digest = hashlib.sha1()
    for folder in ("memory_service", "migrations"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            digest.update(path.read_bytes())
    return f"{commit} (service code {digest.hexdigest()[:10]})"


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's figures from its rounds."""
    import numpy as np

    calls = sum(p["calls"] for p in parts)
    window = sum(p["window_s"] for p in parts)
    cell: dict[str, Any] = {
        "calls": calls,
        "errors": sum(p["errors"] for p in parts),
        "error_samples": [e for p in parts for e in p["error_samples"]][:3],
        "window_s": round(window, 3),
        "rounds": len(parts),
        "round_throughputs": [round(p["throughput"], 1) for p in parts],
        "throughput": calls / window if window else 0.0,
        "server_cpu_s": sum(p["server_cpu_s"] for p in parts),
        "pg_cpu_s": sum(p["pg_cpu_s"] for p in parts),
        "loadgen_cpu_s": sum(p["loadgen_cpu_s"] for p in parts),
        "server_rss_mb": max(p["server_rss_mb"] for p in parts),
        "other_cpu_s": sum(p["other_cpu_s"] for p in parts),
        "steal_s": sum(p["steal_s"] for p in parts),
    }
    # Cores busy outside the benchmark's processes during the windows.
    cell["other_cores"] = (cell["other_cpu_s"] + cell["steal_s"]) / window if window else 0.0
    if calls:
        ms = np.concatenate([np.array(p["latencies_us"], dtype=np.float64) for p in parts]) / 1e3
        p50, p95, p99 = np.percentile(ms, [50, 95, 99])
        cell |= {
            "p50_ms": float(p50),
            "p95_ms": float(p95),
            "p99_ms": float(p99),
            "mean_ms": float(ms.mean()),
            "max_ms": float(ms.max()),
            "server_cpu_ms_per_call": cell["server_cpu_s"] * 1000 / calls,
            "pg_cpu_ms_per_call": cell["pg_cpu_s"] * 1000 / calls,
            "loadgen_cpu_ms_per_call": cell["loadgen_cpu_s"] * 1000 / calls,
        }
    return cell


def stages(memories: int, max_size: int) -> tuple[list[int], list[int]]:
    """Growth sizes up to the grid's size, and beyond it (up to --max-size)."""
    sizes = dataset.growth_sizes(max(memories, max_size))
    sizes = sorted({*(s for s in sizes if s < memories), memories, *sizes})
    return [s for s in sizes if s <= memories], [s for s in sizes if s > memories]


def enough_disk(path: Path, memories: int) -> bool:
    # ~3.7 KB per memory with its interactions, term postings and indexes: 37 GB
    # at 10M (2026-12-02, bench/README.md); that and a quarter more free.
    return shutil.disk_usage(path).free > 1.25 * 3700 * memories


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = datetime.now(UTC)
    out = args.results_dir / started.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args, out)
    t0 = time.perf_counter()
    spec = dataset.Spec(
        users=args.users,
        memories=max(args.memories, args.max_size),
        lessons=args.lessons,
        interactions_per_memory=args.interactions_per_memory,
        probe_memories=args.probe_memories,
        seed=args.seed,
    )
    within, beyond = stages(args.memories, args.max_size)
    if args.skip_growth:
        within, beyond = [args.memories], []
    elif args.reuse_database:  # --growth-only: the loaded size, then on to --max-size
        within = [args.memories]
    tmp = Path(tempfile.mkdtemp(prefix="faraday-bench-"))
    embedded: pg.Embedded | None = None
    redis: Server | None = None
    try:
        if args.database_url:
            bench.owner_url = args.database_url
        else:
            log(f"starting PostgreSQL in {tmp}")
            embedded = pg.Embedded.start(tmp, pg.settings_of(args.pg_setting))
            bench.owner_url = embedded.url
            bench.pg_pid = embedded.postmaster_pid
        from memory_service.storage import migrate

        await migrate.upgrade(bench.owner_url)
        if args.embeddings:
            # As `memory-service migrate` does with the model configured: the
            # HNSW index heavy users' semantic recall reads. The loader drops
            # it around each COPY and rebuilds it (memory_embeddings is a
            # bulk table), which at 1M vectors is the longest load stage.
            await migrate.ensure_vector_index(bench.owner_url, SEMANTIC_MODEL, SEMANTIC_DIMENSION)
        bench.app_url = migrate.app_role_url(bench.owner_url)
        conn = await asyncpg.connect(bench.owner_url)
        try:
            if bench.pg_pid is None:  # --database-url: its postmaster, if it runs here
                bench.pg_pid = postmaster_pid(await conn.fetchval("SELECT pg_backend_pid()"))
            held = await conn.fetchval("SELECT count(*) FROM user_memories")
            plan = dataset.Plan.build(spec)
            if args.reuse_database:
                if held < args.memories:
                    raise SystemExit(
                        f"--reuse-database: the database holds {held:,} memories, not the"
                        f" {args.memories:,} of this data set"
                    )
                log(f"reusing the loaded database ({held:,} memories)")
                registry = await dataset.load_registry(conn, plan)  # reads the ids back
            else:
                if held:
                    raise SystemExit("the database already holds memories: give an empty one")
                log("loading users, preferences, subjects, profiles, lessons")
                registry = await dataset.load_registry(conn, plan)
        finally:
            await conn.close()
        redis = bench.start_redis()
        bench.rss.start()
        bench.loadgen = LoadGen(bench.env, bench.logs)
        loaded = 0
        for size in within:
            if not args.reuse_database:
                await bench.load_to(plan, loaded, size)
            loaded = size
            if not args.skip_growth:
                bench.growth_stage(plan, size)
            if size != args.memories:
                bench.stop_server("service")
                bench.stop_server("service semantic")
        if not args.growth_only:
            log(f"grid at {args.memories:,} memories")
            bench.grid(plan, args.memories)
            if args.import_memories and (not args.only or "import" in args.only):
                await bench.import_cell()
            bench.explain_heaviest(plan, args.memories)
        for size in beyond:
            bench.stop_all()
            if not enough_disk(tmp, size):
                log(f"growth: not enough free disk for {size:,} memories; stopping there")
                break
            await bench.load_to(plan, loaded, size)
            loaded = size
            bench.growth_stage(plan, size)
        bench.stop_all()
        environment = await bench.environment()
    finally:
        bench.stop_all()
        bench.rss.stop()
        if bench.loadgen is not None:
            bench.loadgen.stop()
        if redis is not None:
            redis.stop()
        if embedded is not None:
            embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    config = {
        **{k: v for k, v in vars(args).items() if k not in ("results_dir",)},
        "spec": asdict(spec),
        "growth_sizes": within + beyond,
        "workers_flag": args.workers > 1,
    }
    results: dict[str, Any] = {
        "started": started.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "config": config,
        "environment": environment,
        "registry": registry,
        "load": bench.load,
        "cells": bench.cells,
        "redis": {"url": bench.redis_url, "skipped": bench.redis_skipped},
        "floor_check": bench.floor_check,
        "explain": bench.explain,
        "import": bench.import_result,
        "rss": {
            "max_mb_by_server": bench.rss.max_mb,
            "max_process_mb_by_server": bench.rss.max_process_mb,
            # Without an embedding model; the one with it has its own target.
            "service_max_mb": max(
                (v for k, v in bench.rss.max_mb.items() if is_plain_service(k)),
                default=None,
            ),
            "service_max_process_mb": max(
                (v for k, v in bench.rss.max_process_mb.items() if is_plain_service(k)),
                default=None,
            ),
            "service_model_max_mb": bench.rss.max_mb.get("service semantic"),
        },
        "total_s": time.perf_counter() - t0,
    }
    results["growth_summary"] = report.growth_summary(results)
    results["checks"] = report.checks(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(report.render(results, out))
    log(f"results in {out}")
    return results


def postmaster_pid(backend_pid: int) -> int | None:
    """The postmaster of a backend on this machine, whose process tree is PostgreSQL's
    CPU; None when the server runs elsewhere (its CPU then counts as noise)."""
    import psutil

    try:
        parent = psutil.Process(backend_pid).parent()
    except psutil.Error:
        return None
    return parent.pid if parent is not None and "postgres" in parent.name() else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = parser.add_argument_group("data set")
    size.add_argument("--memories", type=int, default=1_000_000, help="memories for the grid")
    size.add_argument("--users", type=int, default=10_000)
    size.add_argument("--lessons", type=int, default=20_000)
    size.add_argument("--interactions-per-memory", type=float, default=1.5)
    size.add_argument("--probe-memories", type=int, default=200)
    size.add_argument("--seed", type=int, default=42)
    size.add_argument(
        "--max-size",
        type=int,
        default=0,
        help="keep growing past --memories up to this many for the growth curve (e.g. 10000000)",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell")
    load.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="split each cell's duration into this many rounds, interleaved across targets",
    )
    load.add_argument(
        "--warmup",
        type=float,
        default=0.2,
        help="warm-up seconds before each round (three times this for a target's first one)",
    )
    load.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    load.add_argument(
        "--only",
        nargs="+",
        choices=GRID_KINDS + EXTRA_KINDS + ("import",),
        help="RPC kinds for the grid (default: all but the *_nolog ones); `import` for the"
        " import cell",
    )
    load.add_argument(
        "--import-memories",
        type=int,
        default=50_000,
        help="memories the import cell imports per target (0: no import cell)",
    )
    load.add_argument(
        "--import-users", type=int, default=50, help="users the import cell's memories belong to"
    )
    load.add_argument(
        "--traffic-exponent",
        type=float,
        default=0.5,
        help="recall users drawn with weight memory_count ** this (0 uniform, 1 proportional)",
    )
    load.add_argument("--skip-growth", action="store_true", help="load once, no growth curve")
    load.add_argument(
        "--growth-only",
        action="store_true",
        help="no grid: the growth stage at --memories (with --reuse-database: the loaded"
        " database's point of the growth curve), then the stages up to --max-size",
    )
    size.add_argument(
        "--terms",
        choices=dataset.TERMS_MODES,
        default="bulk",
        help="how the memories' term index is filled (bench/dataset.py)",
    )
    size.add_argument(
        "--vectors-beyond-grid",
        action="store_true",
        help="past --memories (growth to --max-size), load vectors too (hours at 10M)",
    )
    size.add_argument(
        "--no-embeddings",
        dest="embeddings",
        action="store_false",
        help=f"load no vectors ({SEMANTIC_MODEL}) for the memories",
    )
    load.add_argument("--workers", type=int, default=1, help="memory-service serve --workers N")
    where = parser.add_argument_group("where")
    where.add_argument("--database-url", help="schema owner's URL to an empty database")
    where.add_argument(
        "--reuse-database",
        action="store_true",
        help="with --database-url and --skip-growth: the database already holds this data set"
        " (same sizes and --seed) from an earlier run; skip the load and run the cells"
        " (earlier runs' writes stay in it)",
    )
    where.add_argument("--redis-url", help="an existing Redis instead of a private redis-server")
    where.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra setting for the embedded PostgreSQL (repeatable)",
    )
    where.add_argument("--results-dir", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20k memories, 500 users, 1,000 lessons, 0.5 s cells",
    )
    args = parser.parse_args(argv)
    if args.reuse_database and not (args.database_url and (args.skip_growth or args.growth_only)):
        parser.error("--reuse-database needs --database-url and --skip-growth or --growth-only")
    if args.quick:
        defaults = {"memories": 1_000_000, "users": 10_000, "lessons": 20_000, "duration": 3.0}
        quick = {"memories": 20_000, "users": 500, "lessons": 1_000, "duration": 0.5}
        if args.import_memories == 50_000:
            args.import_memories = 5_000
        for name, value in quick.items():
            if getattr(args, name) == defaults[name]:  # explicit flags win
                setattr(args, name, value)
        if args.warmup == 0.2:
            args.warmup = 0.1
        if args.rounds == 3:
            args.rounds = 1
    if args.workers > 1:
        help_text = subprocess.run(
            [sys.executable, "-m", "memory_service.cli", "serve", "--help"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout
        if "--workers" not in help_text:
            parser.error("this memory-service has no --workers flag")
    return args


def main() -> None:
    args = parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
