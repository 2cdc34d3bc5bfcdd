"""The labelled recall data set in bench/eval/data/, and the checks it must pass.

`check()` is what tests/unit/test_eval_data.py runs and what `make eval`
runs before starting anything: the schema (other scripts read these files),
the sizes, that ids are unique and every relevant memory exists and is the
query's user's, and the property that makes a query a `paraphrase`: it shares
no stemmed content word (bench/eval/text.py) with any of its relevant
memories, while a `lexical` query shares at least one with each of them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.eval import text

DATA = Path(__file__).resolve().parent / "data"

CATEGORIES = frozenset({"preference", "class_context", "fact", "lesson_note"})
KINDS = frozenset({"paraphrase", "lexical"})
MIN_USERS, MIN_MEMORIES, MIN_QUERIES = 20, 500, 200
# Each kind is summarised on its own, so each needs enough queries to mean
# something; a fixed floor, not a share, so that one kind can grow alone.
MIN_PER_KIND = 100

# field -> (type, id pattern or None); every row has exactly these fields.
_SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "users": {"id": str, "name": str, "email": str, "subjects": list, "grade_levels": list},
    "memories": {
        "id": str,
        "user": str,
        "content": str,
        "category": str,
        "importance": (float, int),
        "tags": list,
        "age_days": int,
    },
    "queries": {"id": str, "user": str, "query": str, "relevant": list, "kind": str},
}
_ID = {
    "users": re.compile(r"u\d{2}"),
    "memories": re.compile(r"m\d{4}"),
    "queries": re.compile(r"q\d{3}"),
}
_EMAIL = re.compile(r"[a-z0-9.\-]+@school\.example\.org")


@dataclass(frozen=True)
class Memory:
    id: str
    user: str
    content: str
    category: str
    importance: float
    tags: tuple[str, ...]
    age_days: int


@dataclass(frozen=True)
class Query:
    id: str
    user: str
    query: str
    relevant: tuple[str, ...]
    kind: str


@dataclass(frozen=True)
class Corpus:
    users: list[dict[str, Any]]
    memories: list[Memory]
    queries: list[Query]

    def memories_of(self, user: str) -> list[Memory]:
        return [m for m in self.memories if m.user == user]


def read_rows(folder: Path = DATA) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]
        for name in _SCHEMA
    }


def check(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Everything wrong with the data set, one line each; empty when it is sound."""
    problems = [p for name in _SCHEMA for p in _check_schema(name, rows[name])]
    if problems:  # the checks below read the fields
        return problems
    users, memories, queries = rows["users"], rows["memories"], rows["queries"]
    for name, minimum in (
        ("users", MIN_USERS),
        ("memories", MIN_MEMORIES),
        ("queries", MIN_QUERIES),
    ):
        if len(rows[name]) < minimum:
            problems.append(f"{name}: {len(rows[name])} rows, want at least {minimum}")
    for name in _SCHEMA:
        repeated = [i for i, n in Counter(r["id"] for r in rows[name]).items() if n > 1]
        problems += [f"{name}: id {i} appears more than once" for i in repeated]
    user_ids = {u["id"] for u in users}
    owner = {m["id"]: m["user"] for m in memories}
    terms = {m["id"]: set(text.terms(m["content"])) for m in memories}
    for m in memories:
        if m["user"] not in user_ids:
            problems.append(f"{m['id']}: unknown user {m['user']}")
    for q in queries:
        where = f"{q['id']} ({q['kind']})"
        if q["user"] not in user_ids:
            problems.append(f"{where}: unknown user {q['user']}")
        if not 1 <= len(q["relevant"]) <= 3:
            problems.append(f"{where}: {len(q['relevant'])} relevant memories, want 1..3")
        asked = set(text.terms(q["query"]))
        if not asked:
            problems.append(f"{where}: no content words")
        for m in q["relevant"]:
            if owner.get(m) != q["user"]:
                problems.append(f"{where}: relevant {m} is not one of {q['user']}'s memories")
                continue
            shared = asked & terms[m]
            if q["kind"] == "paraphrase" and shared:
                problems.append(f"{where}: shares {sorted(shared)} with {m}")
            if q["kind"] == "lexical" and not shared:
                problems.append(f"{where}: shares no word with {m}")
    per_kind = Counter(q["kind"] for q in queries)
    for kind in sorted(KINDS):
        if per_kind[kind] < MIN_PER_KIND:
            problems.append(f"queries: {per_kind[kind]} {kind}, want at least {MIN_PER_KIND}")
    return problems


def _check_schema(name: str, rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    fields = _SCHEMA[name]
    for n, row in enumerate(rows, 1):
        where = f"{name}.jsonl line {n}"
        if set(row) != set(fields):
            problems.append(f"{where}: fields {sorted(row)}, want {sorted(fields)}")
            continue
        for field, kind in fields.items():
            if not isinstance(row[field], kind) or isinstance(row[field], bool):
                problems.append(f"{where}: {field} is not {kind}")
        if problems:
            continue
        if not _ID[name].fullmatch(row["id"]):
            problems.append(f"{where}: bad id {row['id']!r}")
        lists = [f for f, kind in fields.items() if kind is list]
        if any(not all(isinstance(v, str) and v for v in row[f]) for f in lists):
            problems.append(f"{where}: {', '.join(lists)} must hold non-empty strings")
        if name == "users" and not _EMAIL.fullmatch(row["email"]):
            problems.append(f"{where}: email {row['email']!r} is not @school.example.org")
        if name == "memories":
            if row["category"] not in CATEGORIES:
                problems.append(f"{where}: category {row['category']!r}")
            if not 0.0 <= row["importance"] <= 1.0:
                problems.append(f"{where}: importance {row['importance']} outside 0..1")
            if row["age_days"] < 0:
                problems.append(f"{where}: negative age_days")
        if name == "queries" and row["kind"] not in KINDS:
            problems.append(f"{where}: kind {row['kind']!r}")
    return problems


def load(folder: Path = DATA) -> Corpus:
    """The data set, checked; ValueError listing every problem if it is not sound."""
    rows = read_rows(folder)
    problems = check(rows)
    if problems:
        raise ValueError("the eval data set is not sound:\n  " + "\n  ".join(problems))
    memories = [Memory(**{**m, "tags": tuple(m["tags"])}) for m in rows["memories"]]
    queries = [Query(**{**q, "relevant": tuple(q["relevant"])}) for q in rows["queries"]]
    return Corpus(rows["users"], memories, queries)
