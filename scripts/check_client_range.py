"""Install the client at both ends of its dependency range and smoke-test each.

clients/python/pyproject.toml states the range of grpcio, grpcio-status,
protobuf and googleapis-common-protos the generated code supports. For each
end this script makes a fresh venv in a temporary directory:

* oldest: every dependency pinned to its floor (the `>=` of pyproject.toml);
* newest: whatever pip resolves today, plus mypy, types-protobuf and
  grpc-stubs, to type-check a caller against the installed wheel (the
  py.typed markers of `faraday` and `faraday_memory_client`).

It then imports the client, builds and round-trips messages, and calls a
real server: the one at --target, else a `memory-service serve` it starts
with its own interpreter (the embedded PostgreSQL in a temporary data directory).

    .venv/bin/python scripts/check_client_range.py [--target HOST:PORT]

Needs the package index, and takes about a minute (two venvs, one server
start), so CI does not run it on every change: run it when the generator
(TOOLS in the Makefile) or the client's dependencies change.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "clients" / "python"

SMOKE = r"""
import asyncio, sys
import google.protobuf, grpc
from faraday_memory_client import (
    AdminClient, AioRpcError, Memory, MemoryClient, StatusCode, field_violations,
)
from faraday.memory.v1 import memory_service_pb2

print(f"  protobuf {google.protobuf.__version__}, grpcio {grpc.__version__}")
request = memory_service_pb2.StoreMemoryRequest(memory=Memory(content="x", tags=["a"]))
assert memory_service_pb2.StoreMemoryRequest.FromString(request.SerializeToString()) == request
target = sys.argv[1] if len(sys.argv) > 1 else ""


async def main() -> None:
    async with AdminClient(target) as admin, MemoryClient(target) as client:
        user = await admin.upsert_user(email="range-check@school.example.org", name="Range")
        stored = await client.store_memory(
            user_id=user.id, content="Prefers visual fraction models", category="preference"
        )
        assert (await client.get_memory(stored.id)).content == stored.content
        found = await client.recall(user.id, "fraction models", limit=3)
        assert any(s.memory.id == stored.id for s in found), found
        try:
            await client.store_memory(user_id=user.id, content="", category="fact")
        except AioRpcError as error:
            assert error.code() == StatusCode.INVALID_ARGUMENT
            assert [v.field for v in field_violations(error)] == ["memory.content"]
        else:
            raise AssertionError("an empty memory was stored")
    print(f"  called {target}: store, get, recall, an INVALID_ARGUMENT decoded")


if target:
    asyncio.run(main())
"""

TYPED = """
from faraday.memory.v1 import memory_pb2
from faraday_memory_client import MemoryClient, ScoredMemory


async def best(client: MemoryClient, user: str) -> str:
    found: list[ScoredMemory] = list(await client.recall(user, "fractions"))
    memory: memory_pb2.Memory = found[0].memory
    return memory.content


def wrong(memory: memory_pb2.Memory) -> int:
    return memory.content  # mypy must see str here, not Any
"""


def _floors() -> list[str]:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    pins = []
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,]+)(,.*)?", requirement.replace(" ", ""))
        if match is None:
            raise SystemExit(f"no floor in {requirement!r}")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


# The venvs must see only what they installed, not this checkout.
_ISOLATED = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def _run(*args: str | Path) -> None:
    subprocess.run([str(a) for a in args], check=True, env=_ISOLATED)


def _install(where: Path, pins: list[str], extra: list[str]) -> Path:
    venv.create(where, with_pip=True)
    python = where / "bin" / "python"
    constraints = where / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    _run(python, "-m", "pip", "install", "--quiet", "-c", constraints, CLIENT, *extra)
    return python


def _start_server() -> tuple[subprocess.Popen[bytes], str, tempfile.TemporaryDirectory[str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.TemporaryDirectory(prefix="faraday-range-")
    # The embedded PostgreSQL's data directory must not exist yet.
    env_data_dir = str(Path(data.name) / "pgdata")
    env = {**os.environ, "FARADAY_PORT": str(port), "FARADAY_DATA_DIR": env_data_dir}
    env.pop("FARADAY_DATABASE_URL", None)
    command = [sys.executable, "-m", "memory_service.cli", "serve"]
    log = Path(data.name) / "server.log"
    with log.open("wb") as out:  # its start-up chatter, shown only if it fails
        server = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)
    target = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server, target, data
        if server.poll() is not None:
            raise SystemExit(f"memory-service serve exited:\n{log.read_text()[-4000:]}")
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("memory-service serve did not listen within 120 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", help="a running server (default: start one from .venv)")
    args = parser.parse_args()
    server = data = None
    target = args.target
    if target is None:
        server, target, data = _start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="faraday-client-range-") as tmp:
            for end, pins, extra in (
                ("oldest", _floors(), []),
                ("newest", [], ["mypy", "types-protobuf", "grpc-stubs"]),
            ):
                print(f"{end}: pip install clients/python {' '.join(pins + extra)}", flush=True)
                python = _install(Path(tmp) / end, pins, extra)
                _run(python, "-W", "error", "-c", SMOKE, target)
                if extra:
                    snippet = Path(tmp) / "typed_caller.py"
                    snippet.write_text(TYPED)
                    checked = subprocess.run(
                        [str(python), "-m", "mypy", "--strict", str(snippet)],
                        capture_output=True,
                        text=True,
                        cwd=tmp,
                        env=_ISOLATED,
                    )
                    expected = 'Incompatible return value type (got "str", expected "int")'
                    if expected not in checked.stdout or checked.stdout.count("error:") != 1:
                        print(checked.stdout, checked.stderr)
                        raise SystemExit("mypy does not see the client's message types")
                    print("  mypy --strict sees the installed client's types (1 planted error)")
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
        if data is not None:
            data.cleanup()
    print("client dependency range: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
