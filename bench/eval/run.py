"""Recall quality through the real gRPC API (`make eval`): bench/eval/README.md.

    .venv/bin/python -m bench.eval.run

Checks the labelled data (bench/eval/data/), starts a throwaway embedded
PostgreSQL and `memory-service serve` as the benchmark does (bench/pg.py,
bench/run.py's Server), registers the teachers and stores their memories
through AdminService and MemoryService, then asks RecallMemories every query
in each mode, for the deepest list the API gives (RECALL_MAX_LIMIT). Fuses
the service's own lexical and semantic rankings in Python
(bench/eval/fusion.py), scores every method's first 10, prints one Markdown
table next to two references computed in Python (bench/eval/references.py)
and writes bench/results/eval-<UTC timestamp>.json.
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
from typing import Any, NamedTuple

import grpc
from faraday.memory.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    memory_pb2,
    memory_service_pb2,
    memory_service_pb2_grpc,
    registry_pb2,
)

from bench.eval import corpus, fusion, metrics, references
from bench.eval.corpus import Corpus
from memory_service.domain.ranking import DEFAULT_WEIGHTS
from memory_service.domain.validation import RECALL_MAX_LIMIT
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
# without weights (importance 1, relevance 1, semantic 4: the stored
# importance counts next to both text signals). `semantic` is the
# embeddings alone, `hybrid` both text signals.
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
# Other fusion rules, computed in Python from the service's `lexical` and
# `semantic` rankings (fused() below): would the service rank better with
# another rule than its weighted sum?
FUSED = ("rrf60", "rrf10", "minmax", "sum")
LABELS = {
    "bm25": "BM25 reference (rank_bm25)",
    "dense": "dense reference (the service's model, brute-force cosine)",
    "lexical": "service lexical (relevance only)",
    "default": "service, default weights",
    "semantic": "service semantic",
    "hybrid": "service hybrid (1 x relevance + 4 x cosine)",
    "rrf60": "RRF of service lexical + semantic (k=60), Python",
    "rrf10": "RRF of service lexical + semantic (k=10), Python",
    "minmax": "min-max normalised service lexical + semantic, 1:1, Python",
    "sum": "1 x relevance + 4 x cosine of service lexical + semantic, Python (check: = hybrid)",
}
# Every mode is asked for the deepest list the API gives, so the fused rows
# see each signal's whole ranking of a teacher's ~30 memories; the metrics
# still look at the first metrics.CUTOFF.
DEPTH = RECALL_MAX_LIMIT
CALL_TIMEOUT_SECONDS = 10.0


class Hit(NamedTuple):
    """One recalled memory: its data set id and the score parts fusion needs."""

    memory: str
    relevance: float  # relevance_weight * BM25 relevance (0..1)
    semantic: float  # semantic_weight * cosine (below 0 counted as 0)


Answers = dict[str, list[Hit]]  # query id -> the service's answer, best first


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
) -> dict[str, Answers]:
    memories = memory_service_pb2_grpc.MemoryServiceStub(channel)
    answers: dict[str, Answers] = {}
    for mode, fields in MODES.items():
        answers[mode] = {}
        weights = memory_service_pb2.RecallWeights()
        for field, value in fields.items():
            setattr(weights, field, value)
        for query in data.queries:
            answer = await memories.RecallMemories(
                memory_service_pb2.RecallMemoriesRequest(
                    user_id=user_ids[query.user],
                    query=query.query,
                    limit=DEPTH,
                    weights=weights,
                ),
                timeout=CALL_TIMEOUT_SECONDS,
            )
            answers[mode][query.id] = [
                Hit(ids[s.memory.id], s.relevance_score, s.semantic_score) for s in answer.memories
            ]
    return answers


def fused(answers: dict[str, Answers]) -> dict[str, references.Rankings]:
    """The FUSED rows: other rules applied to the service's lexical and semantic rankings.

    The lexical ranking is the memories the `lexical` mode scored above 0 (the
    BM25 matches: that mode then lists the rest by storage order, which is no
    evidence); the semantic one the memories the `semantic` mode scored above
    0 (every memory whose cosine is positive). `sum` is the service's own
    rule, recomputed here: it should reproduce the `hybrid` row, which shows
    that the other rows differ by their rule, not by their inputs.
    """
    rankings: dict[str, references.Rankings] = {method: {} for method in FUSED}
    for query, lexical_answer in answers["lexical"].items():
        lexical = {h.memory: h.relevance for h in lexical_answer if h.relevance > 0}
        semantic = {h.memory: h.semantic for h in answers["semantic"][query] if h.semantic > 0}
        both = [lexical, semantic]
        rankings["rrf60"][query] = fusion.rrf([list(lexical), list(semantic)], k=60)
        rankings["rrf10"][query] = fusion.rrf([list(lexical), list(semantic)], k=10)
        rankings["minmax"][query] = fusion.weighted_sum(both, [1.0, 1.0], normalise=True)
        rankings["sum"][query] = fusion.weighted_sum(
            both, [DEFAULT_WEIGHTS.relevance, DEFAULT_WEIGHTS.semantic], normalise=False
        )
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


def table(results: dict[str, dict[str, dict[str, float]]], data: Corpus) -> str:
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
        cells = [f"{summary[g][n]:.3f}" for g in ("all", "paraphrase") for n in metrics.NAMES]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


async def measure_service(data: Corpus, address: str) -> dict[str, Answers]:
    async with grpc.aio.insecure_channel(address) as channel:
        log(f"storing {len(data.memories)} memories of {len(data.users)} teachers")
        user_ids, ids = await load(channel, data)
        log(f"recalling {len(data.queries)} queries per mode")
        return await recall(channel, data, user_ids, ids)


async def service_answers(data: Corpus, logs: Path, model: str) -> dict[str, Answers]:
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
    answers = await service_answers(data, logs, model)
    rankings |= {
        mode: {q: [h.memory for h in a] for q, a in answers[mode].items()} for mode in answers
    }
    rankings |= fused(answers)
    same = sum(
        rankings["sum"][q][: metrics.CUTOFF] == rankings["hybrid"][q][: metrics.CUTOFF]
        for q in rankings["hybrid"]
    )
    log(f"Python's weighted sum has the service hybrid's top 10 on {same} of {len(data.queries)}")
    summaries = {m: summarise(data, rankings[m]) for m in rankings}
    rendered = table(summaries, data)
    results = {
        "started": started.isoformat(timespec="seconds"),
        "commit": git_describe(),
        "model": model,
        "modes": MODES,
        "depth": DEPTH,
        "summaries": summaries,
        # Every method's whole ranking (the service's: as deep as it answered).
        "rankings": rankings,
        # The service's score parts, parallel to its rankings: [relevance, semantic].
        "scores": {
            mode: {q: [[h.relevance, h.semantic] for h in a] for q, a in answers[mode].items()}
            for mode in answers
        },
        "hybrid_equals_sum_top10": same,
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
