"""`memory-service import FILE.jsonl`: stream a file through ImportMemories, with a summary.

A client of a running server (any server: it talks gRPC through the typed
client, not to the database), so it needs the server's address and a
service token with the `memories:import` scope.

The file holds one ImportItem per line in protobuf's JSON mapping, e.g.

    {"importId": "lms-42", "memory": {"userId": "6f1c...", "content": "...",
     "category": "fact", "createTime": "2024-03-01T09:30:00Z"}}

(field names in lowerCamelCase or as in the .proto; blank lines are
skipped). A line that is not JSON, or not an ImportItem (an unknown field, a
wrong type), is not sent: it is reported with its line number in the
summary, as the server's rejections are, and counts as rejected.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

# Exit statuses (also in `import --help`).
EXIT_OK = 0
EXIT_REJECTED = 1  # the import ran, but some lines or items were rejected
EXIT_USAGE = 2  # argparse's own
EXIT_FAILED = 3  # the stream failed (unreachable, unauthenticated, ...): re-run it

DESCRIPTION = """\
Import memories with their original times from a JSON Lines file through a
running server's ImportMemories RPC (scope memories:import). One ImportItem a
line, in protobuf JSON: {"import_id": "...", "memory": {"user_id": "...",
"content": "...", "category": "...", "create_time": "2024-03-01T09:30:00Z"}}.
Lines that do not parse are reported with their number and not sent. Safe to
re-run: items imported before (same user and import_id) are ALREADY_DONE and
change nothing. Progress goes to stderr, the summary to stdout."""

EPILOG = f"""\
exit status: {EXIT_OK} everything was imported (created, deduplicated or already
done); {EXIT_REJECTED} the import ran but some lines or items were rejected (listed in
the summary); {EXIT_USAGE} bad arguments; {EXIT_FAILED} the import failed (server unreachable,
credentials refused, stream broken): what committed stays, run it again."""

_POLICIES = {
    "exact": "DEDUP_POLICY_EXACT",
    "none": "DEDUP_POLICY_NONE",
    "semantic": "DEDUP_POLICY_SEMANTIC",
}


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "import",
        help="import memories from a JSON Lines file through a running server",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", type=Path, help="the JSON Lines file (one ImportItem a line)")
    parser.add_argument(
        "--address",
        default=os.environ.get("FARADAY_ADDRESS", "127.0.0.1:50051"),
        help="the server, host:port (env FARADAY_ADDRESS; default 127.0.0.1:50051)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="service token with the memories:import scope (env FARADAY_TOKEN; none: a"
        " server without auth)",
    )
    parser.add_argument(
        "--tls-ca-file",
        type=Path,
        default=None,
        help="PEM CA certificate to verify the server with: TLS on (default: plaintext)",
    )
    parser.add_argument(
        "--dedup",
        choices=sorted(_POLICIES),
        default="exact",
        help="dedup policy for every item (DedupPolicy; default exact)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="items per stream message, 1..1000; each is committed on its own (default 1000)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


@dataclass
class _Lines:
    """The file's items, and what was learnt reading it."""

    path: Path
    line_of_index: list[int] = field(default_factory=list)  # stream index -> line number
    bad: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)

    def items(self) -> Iterator[Any]:
        from faraday.memory.v1 import memory_service_pb2
        from google.protobuf import json_format

        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                item = memory_service_pb2.ImportItem()
                try:
                    json_format.Parse(line, item)
                except json_format.ParseError as exc:
                    self.bad.append((number, _short(str(exc))))
                    continue
                self.line_of_index.append(number)
                yield item


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


async def _import(args: argparse.Namespace, out: TextIO) -> int:
    import grpc
    from faraday.memory.v1 import memory_service_pb2
    from faraday_memory_client import MemoryClient

    token = args.token or os.environ.get("FARADAY_TOKEN") or None
    credentials = None
    if args.tls_ca_file is not None:
        credentials = grpc.ssl_channel_credentials(args.tls_ca_file.read_bytes())
    lines = _Lines(args.file)
    total = _count_lines(args.file)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit=" items", desc=f"importing {args.file.name}", file=sys.stderr)

    async def items() -> AsyncIterator[Any]:
        for item in lines.items():
            yield item
            await asyncio.sleep(0)  # let the channel send while the file is read

    started = time.monotonic()
    try:
        async with MemoryClient(
            args.address,
            credentials=credentials,
            metadata_provider=(lambda: [("authorization", f"Bearer {token}")]) if token else None,
        ) as client:
            response = await client.import_memories(
                items(),
                dedup_policy=getattr(memory_service_pb2, _POLICIES[args.dedup]),
                chunk_size=args.batch_size,
                on_sent=bar.update if bar is not None else None,
            )
    except grpc.aio.AioRpcError as error:
        if bar is not None:
            bar.close()
        print(
            f"import failed: {error.code().name}: {error.details()}\n"
            "what committed before the failure stays; run the same command again to finish",
            file=out,
        )
        return EXIT_FAILED
    elapsed = time.monotonic() - started
    if bar is not None:
        bar.update(len(lines.bad))
        bar.close()
    _summary(out, args.file, response, lines, elapsed)
    return EXIT_REJECTED if response.rejected or lines.bad else EXIT_OK


def _summary(out: TextIO, path: Path, response: Any, lines: _Lines, elapsed: float) -> None:
    from faraday.memory.v1 import memory_service_pb2

    rate = response.received / elapsed if elapsed > 0 else 0.0
    print(
        f"{path}: {response.received + len(lines.bad)} lines, {response.received} items sent"
        f" in {elapsed:.1f} s ({rate:,.0f} items/s)\n"
        f"  created       {response.created}\n"
        f"  deduplicated  {response.deduplicated}\n"
        f"  already done  {response.already_done}\n"
        f"  rejected      {response.rejected + len(lines.bad)}"
        + (f" ({len(lines.bad)} lines not sent: not an ImportItem)" if lines.bad else ""),
        file=out,
    )
    problems: list[tuple[int, str]] = [(n, f"not sent: {why}") for n, why in lines.bad]
    for result in response.results:
        if result.outcome != memory_service_pb2.STORE_OUTCOME_REJECTED:
            continue
        line = lines.line_of_index[result.index] if result.index < len(lines.line_of_index) else 0
        error = result.error
        fields = "; ".join(f"{v.field}: {v.description}" for v in error.field_violations)
        why = fields or f"{error.reason or error.code}: {error.message}"
        problems.append((line, f"import_id {result.import_id!r}: {why}"))
    if problems:
        print("rejected:", file=out)
        for line, why in sorted(problems):
            print(f"  line {line}: {why}", file=out)
    if response.results_omitted:
        print(
            f"  ({response.results_omitted} more results not returned by the server;"
            " the counts above are complete)",
            file=out,
        )


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.batch_size <= 1000:
        print("error: --batch-size must be 1..1000", file=sys.stderr)
        return EXIT_USAGE
    if not args.file.is_file():
        print(f"error: {args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(_import(args, sys.stdout))
