"""Recall quality through the real gRPC API (`make eval`): bench/eval/README.md.

    .venv/bin/python -m bench.eval.run

Checks the labelled data (bench/eval/data/), starts a throwaway embedded
PostgreSQL and `memory-service serve` as the benchmark does (bench/pg.py,
bench/run.py's Server), registers the teachers and stores their memories
through AdminService and MemoryService, then asks RecallMemories (limit 10)
every query in each mode. Prints one Markdown table next to two references
computed in Python (bench/eval/references.py) and writes
bench/results/eval-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)

from bench.eval import corpus, metrics, references
from bench.eval.corpus import Corpus
from memory_service.embedding import MODEL_NAMES, load_model

BENCH = Path(__file__).resolve().parent.parent
# bench/run.py and bench/pg.py import their siblings as top-level modules.
sys.path.insert(0, str(BENCH))
import pg  # noqa: E402
from run import Server, git_describe, log  # noqa: E402  (bench/run.py's helpers)

# A mode is the RecallWeights fields it sets. Recency is 0 throughout: the
# API cannot back-date a memory, so every memory is as recent as every other
# and the data's `age_days` cannot be honoured. `lexical` is relevance alone
# (what the query text finds); `default` is what an assistant gets today
# without weights (importance 1.0 dominates relevance, which rarely passes
# 0.1). `semantic` is the embeddings alone, `hybrid` both text signals.
# The built-in model behind the semantic and hybrid rows and the dense
# reference, unless --model says otherwise (all-minilm-l6-v2 needs the
# `embeddings-minilm` extra).
EMBEDDING_MODEL = "wordllama-l2-supercat-256"

MODES: dict[str, dict[str, float]] = {
    "lexical": {"importance": 0.0, "recency": 0.0, "relevance": 1.0, "semantic": 0.0},
    "default": {"recency": 0.0},
    "semantic": {"importance": 0.0, "recency": 0.0, "relevance": 0.0, "semantic": 1.0},
    # Both text signals at the server's default weights (relevance 1, semantic 4).
    "hybrid": {"importance": 0.0, "recency": 0.0},
}
LABELS = {
    "bm25": "BM25 reference (rank_bm25)",
    "dense": "dense reference (the service's model, brute-force cosine)",
    "lexical": "service lexical (relevance only)",
    "default": "service, default weights",
    "semantic": "service semantic",
    "hybrid": "service hybrid",
}
NOT_YET = "n/a (not implemented yet)"
CALL_TIMEOUT_SECONDS = 10.0


def supported(mode: str) -> bool:
    fields = memory_service_pb2.RecallWeights.DESCRIPTOR.fields_by_name
    return all(name in fields for name in MODES[mode])


async def load(channel: grpc.aio.Channel, data: Corpus) -> tuple[dict[str, str], dict[int, str]]:
    """Registers the teachers and stores their memories.

    Returns the server's user id for each data set user id, and the data set
    id for each server memory id.
    """
    admin = admin_service_pb2_grpc.AdminServiceStub(channel)
    memories = memory_service_pb2_grpc.MemoryServiceStub(channel)
    user_ids: dict[str, str] = {}
    for user in data.users:
        registered = await admin.UpsertUser(
            admin_service_pb2.UpsertUserRequest(
                user=registry_pb2.User(
                    email=user["email"],
                    name=user["name"],
                    is_active=True,
                    subjects=user["subjects"],
                    grade_levels=user["grade_levels"],
                )
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        user_ids[user["id"]] = registered.id
    ids: dict[int, str] = {}
    for m in data.memories:
        stored = await memories.StoreMemory(
            memory_service_pb2.StoreMemoryRequest(
                memory=memory_pb2.Memory(
                    user_id=user_ids[m.user],
                    content=m.content,
                    category=m.category,
                    importance=m.importance,
                    tags=m.tags,
                    source="eval",
                )
            ),
            timeout=CALL_TIMEOUT_SECONDS,
        )
        ids[stored.id] = m.id
    return user_ids, ids


async def recall(
    channel: grpc.aio.Channel, data: Corpus, user_ids: dict[str, str], ids: dict[int, str]
) -> dict[str, references.Rankings]:
    memories = memory_service_pb2_grpc.MemoryServiceStub(channel)
    rankings: dict[str, references.Rankings] = {}
    for mode in (m for m in MODES if supported(m)):
        rankings[mode] = {}
        weights = memory_service_pb2.RecallWeights()
        for field, value in MODES[mode].items():  # by name: the fields vary with the proto
            setattr(weights, field, value)
        for query in data.queries:
            answer = await memories.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(
                    user_id=user_ids[query.user],
                    query=query.query,
                    limit=metrics.CUTOFF,
                    weights=weights,
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            rankings[mode][query.id] = [ids[s.memory.id] for s in answer.memories]
    return rankings


def summarise(data: Corpus, rankings: references.Rankings) -> dict[str, dict[str, float]]:
    """Mean metrics over all queries and over each kind of query."""
    groups = {
        "all": data.queries,
        **{k: [q for q in data.queries if q.kind == k] for k in ("paraphrase", "lexical")},
    }
    return {
        group: metrics.mean([metrics.score(rankings[q.id], q.relevant) for q in queries])
        for group, queries in groups.items()
    }


def table(results: dict[str, dict[str, dict[str, float]] | None], data: Corpus) -> str:
    paraphrases = sum(q.kind == "paraphrase" for q in data.queries)
    head = [f"all {n}" for n in metrics.NAMES] + [f"paraphrase {n}" for n in metrics.NAMES]
    lines = [
        f"Recall quality: {len(data.queries)} queries ({paraphrases} paraphrase), "
        f"{len(data.memories)} memories of {len(data.users)} teachers, top {metrics.CUTOFF}",
        "",
        "| method | " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(head),
    ]
    for method, summary in results.items():
        if summary is None:
            cells = [NOT_YET] + [""] * (len(head) - 1)
        else:
            cells = [f"{summary[g][n]:.3f}" for g in ("all", "paraphrase") for n in metrics.NAMES]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def measure_service(data: Corpus, address: str) -> dict[str, references.Rankings]:
    async with grpc.aio.insecure_channel(address) as channel:
        log(f"storing {len(data.memories)} memories of {len(data.users)} teachers")
        user_ids, ids = await load(channel, data)
        log(f"recalling {len(data.queries)} queries per mode")
        return await recall(channel, data, user_ids, ids)


async def service_rankings(data: Corpus, logs: Path, model: str) -> dict[str, references.Rankings]:
    """Runs the service on a throwaway embedded PostgreSQL, as bench/run.py does."""
    from memory_service.storage import migrate

    tmp = Path(tempfile.mkdtemp(prefix="faraday-eval-"))
    embedded = pg.Embedded.start(tmp)
    service: Server | None = None
    try:
        await migrate.upgrade(embedded.url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FARADAY_")}
        env |= {"GRPC_ENABLE_FORK_SUPPORT": "false"}
        env["FARADAY_DATABASE_URL"] = migrate.app_role_url(embedded.url)
        # The dense reference's model, so semantic rows compare like with like.
        env["FARADAY_EMBEDDING_MODEL"] = model
        command = [sys.executable, "-m", "memory_service.cli", "serve"]
        command += ["--host", "127.0.0.1", "--port", "{port}"]
        service = Server("service", command, env, logs)
        return await measure_service(data, service.address)
    finally:
        if service is not None:
            service.stop()
        embedded.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def run(results_dir: Path, model: str) -> dict[str, Any]:
    data = corpus.load()
    started = datetime.now(UTC)
    logs = results_dir / f"eval-{started:%Y%m%d-%H%M%S}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"references: BM25 and {model}")
    rankings = {"bm25": references.bm25(data), "dense": references.dense(data, load_model(model))}
    rankings |= await service_rankings(data, logs, model)
    methods = ["bm25", "dense", *MODES]
    summaries = {m: summarise(data, rankings[m]) if m in rankings else None for m in methods}
    rendered = table(summaries, data)
    results = {
        "started": started.isoformat(timespec="seconds"),
        "commit": git_describe(),
        "model": model,
        "modes": MODES,
        "not_implemented": [m for m in methods if m not in rankings],
        "summaries": summaries,
        "rankings": rankings,
        "table": rendered,
    }
    out = results_dir / f"eval-{started:%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"embedding model: {model}")
    print(rendered)
    log(f"results in {out}, service log in {logs}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--model",
        default=EMBEDDING_MODEL,
        choices=MODEL_NAMES,
        help="built-in embedding model for the service and the dense reference",
    )
    asyncio.run(run(BENCH / "results", parser.parse_args().model))


if __name__ == "__main__":
    main()
