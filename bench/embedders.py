"""Compare the embedding models: retrieval quality on the eval set, cost, load time, memory.

    .venv/bin/python bench/embedders.py [--data bench/eval/data] [--model NAME ...]

Each model runs in a fresh child process, so its load time and the memory it
adds are its own. Quality is brute-force cosine over each user's memories:
hit@1/5/10, MRR and nDCG@10 (binary relevance), over all queries and over
the paraphrase ones alone. Cost is measured on the memories' contents: one
text per call ("single"), and 64 per call ("batch").
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from memory_service.embedding import MODEL_NAMES, ModelUnavailable, load_model

METRICS = ("hit@1", "hit@5", "hit@10", "mrr", "ndcg@10")
BATCH = 64


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as lines:
        return [json.loads(line) for line in lines if line.strip()]


def scores_of(ranked: list[str], relevant: set[str]) -> dict[str, float]:
    ranks = [i for i, memory in enumerate(ranked, 1) if memory in relevant]
    first = ranks[0] if ranks else math.inf
    dcg = sum(1 / math.log2(r + 1) for r in ranks if r <= 10)
    ideal = sum(1 / math.log2(r + 1) for r in range(1, min(len(relevant), 10) + 1))
    return {
        "hit@1": float(first <= 1),
        "hit@5": float(first <= 5),
        "hit@10": float(first <= 10),
        "mrr": 1 / first,
        "ndcg@10": dcg / ideal,
    }


def per_text_ms(embed: Any, texts: list[str], per_call: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), per_call):
        embed(texts[start : start + per_call])
    return (time.perf_counter() - started) * 1000 / len(texts)


def measure(name: str, data: Path) -> dict[str, Any]:
    memories = read_jsonl(data / "memories.jsonl")
    queries = read_jsonl(data / "queries.jsonl")
    process = psutil.Process()
    rss_before = process.memory_info().rss
    started = time.perf_counter()
    model = load_model(name)
    model.embed(["warm up"])
    load_seconds = time.perf_counter() - started
    rss_added = process.memory_info().rss - rss_before

    contents = [m["content"] for m in memories]
    single_ms = per_text_ms(model.embed, contents[:200], 1)
    batch_ms = per_text_ms(model.embed, contents, BATCH)

    vectors = dict(zip((m["id"] for m in memories), model.embed(contents), strict=True))
    by_user: dict[str, list[str]] = defaultdict(list)
    for memory in memories:
        by_user[memory["user"]].append(memory["id"])
    query_vectors = model.embed([q["query"] for q in queries])
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for query, query_vector in zip(queries, query_vectors, strict=True):
        ids = sorted(by_user[query["user"]])
        similarity = np.stack([vectors[i] for i in ids]) @ query_vector
        ranked = [ids[i] for i in np.argsort(-similarity, kind="stable")]
        scores = scores_of(ranked, set(query["relevant"]))
        results["all"].append(scores)
        results[query["kind"]].append(scores)
    return {
        "model": name,
        "dimension": model.dimension,
        "load_s": load_seconds,
        "rss_mb": rss_added / 2**20,
        "single_ms": single_ms,
        "batch_ms": batch_ms,
        "quality": {
            subset: {m: sum(s[m] for s in rows) / len(rows) for m in METRICS} | {"n": len(rows)}
            for subset, rows in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/eval/data"))
    parser.add_argument("--model", action="append", choices=MODEL_NAMES, help="default: all")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model[0], args.data)))
        return

    print(f"data: {args.data}; cost: ms per text on {psutil.cpu_count()} cores")
    header = f"{'model':28} {'dim':>4} {'load s':>7} {'+RSS MB':>8} {'single':>7} {'batch':>7}"
    print(header)
    rows: list[dict[str, Any]] = []
    for name in args.model or MODEL_NAMES:
        child = subprocess.run(
            [sys.executable, __file__, "--child", "--data", str(args.data), "--model", name],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            reason = child.stderr.strip().splitlines()[-1] if child.stderr.strip() else "failed"
            print(f"{name:28} skipped: {reason}")
            continue
        row = json.loads(child.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{name:28} {row['dimension']:>4} {row['load_s']:>7.2f} {row['rss_mb']:>8.0f}"
            f" {row['single_ms']:>7.3f} {row['batch_ms']:>7.3f}"
        )
    print()
    print(f"{'model':28} {'queries':16} " + " ".join(f"{m:>7}" for m in METRICS))
    for row in rows:
        for subset, values in sorted(row["quality"].items()):
            label = f"{subset} ({values['n']})"
            print(
                f"{row['model']:28} {label:16} " + " ".join(f"{values[m]:>7.3f}" for m in METRICS)
            )


if __name__ == "__main__":
    try:
        main()
    except ModelUnavailable as exc:
        sys.exit(str(exc))
