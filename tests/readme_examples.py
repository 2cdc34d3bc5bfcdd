"""Run every fenced example of a README against a running server, in order.

    python tests/readme_examples.py README.md 127.0.0.1:PORT

tests/test_readme_examples.py runs this in a fresh working directory for
README.md and clients/python/README.md. Blocks run as written, in one
namespace per document, with three allowances:

* the address `localhost:50051` / `127.0.0.1:50051` (what `make run` serves)
  becomes the test server's;
* in grpcurl commands, the placeholders `<id>` and `<memory_id>` become the
  user id and memory id of the latest UpsertUser and StoreMemory responses;
* the names a fragment says it assumes are given: `client` (a MemoryClient),
  `USER` (a registered user's id; more with the `user` marker), `row_id`,
  `tokens`, `admin_token`, and the environment variables of GIVEN_ENV.

An HTML comment right before a block steers it (markers, one per comment):
``<!-- readme-test: skip REASON -->`` (keep these few),
``<!-- readme-test: file NAME -->`` (the block is a file the commands use),
``<!-- readme-test: user ID -->`` (a user the block names is registered first),
``<!-- readme-test: then CODE -->`` (Python awaited after the block, e.g. a
call of the function it defines) and ``<!-- readme-test: expect TEXT -->``
(the block's output must contain TEXT). Python blocks may use top-level
``await``; sh blocks run line by line (``\\`` continues), in bash; grpcurl,
not installed here, is played by a small client of the server's reflection
service with the same arguments and JSON output.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = re.compile(
    r"(?P<markers>(?:<!-- readme-test: [^\n]*? -->\n)*)```(?P<lang>[\w-]*)\n(?P<body>.*?)^```",
    re.MULTILINE | re.DOTALL,
)
_MARKER = re.compile(r"<!-- readme-test: (\w+) ?(.*?) -->")
_ADDRESSES = ("localhost:50051", "127.0.0.1:50051")
GIVEN_ENV = {"IMPORT_TOKEN": "not-checked-by-a-server-without-auth"}


@dataclass
class Block:
    line: int
    lang: str
    body: str
    markers: list[tuple[str, str]] = field(default_factory=list)

    def marker(self, name: str) -> list[str]:
        return [value for key, value in self.markers if key == name]


def blocks(text: str) -> list[Block]:
    found = []
    for match in _BLOCK.finditer(text):
        markers = _MARKER.findall(match["markers"])
        line = text.count("\n", 0, match.start("body"))
        found.append(Block(line, match["lang"], match["body"], markers))
    return found


class Tokens:
    async def current(self) -> str:
        return "a-token"


@dataclass
class Ids:
    user: str = ""
    memory: str = ""


def _grpcurl(argv: list[str], address: str, ids: Ids) -> str:
    """grpcurl's -plaintext [-d JSON] ADDRESS (list | describe NAME | METHOD)."""
    import grpc
    from google.protobuf import descriptor_pool, json_format, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    args = argv[1:]
    data = None
    assert args.pop(0) == "-plaintext", argv
    if args[0] == "-d":
        data = args[1].replace("<id>", ids.user).replace("<memory_id>", ids.memory)
        args = args[2:]
    target, command, *rest = args
    assert target == address, argv
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        if command == "list":
            return "\n".join(database.get_services()) + "\n"
        if command == "describe":
            symbol = rest[0]
            service, _, method = symbol.rpartition(".")
            found = pool.FindServiceByName(service).methods_by_name[method]
            return f"{found.full_name} is a method:\n{found.input_type.full_name}\n"
        service, _, method_name = command.partition("/")
        method = pool.FindServiceByName(service).methods_by_name[method_name]
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(data or "{}", request_type())
        call = channel.unary_unary(
            f"/{command}",
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        response = call(request, timeout=30)
    if method_name == "UpsertUser":
        ids.user = response.id
    if method_name == "StoreMemory":
        ids.memory = str(response.id)
    return json_format.MessageToJson(response, indent=2) + "\n"


def _commands(body: str) -> list[str]:
    commands: list[str] = []
    pending = ""
    for raw in body.splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line and not pending:
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        # An open quote continues too (a JSON argument over two lines).
        try:
            shlex.split(pending)
        except ValueError:
            pending += "\n"
            continue
        commands.append(pending)
        pending = ""
    assert not pending, pending
    return commands


def _run_sh(block: Block, address: str, ids: Ids, env: dict[str, str]) -> str:
    output = []
    for command in _commands(block.body):
        argv = shlex.split(command)
        if argv[0] == "grpcurl":
            output.append(_grpcurl(argv, address, ids))
            continue
        done = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, check=False
        )
        output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            raise AssertionError(f"`{command}` exited {done.returncode}:\n{output[-1]}")
    return "".join(output)


def _run_python(block: Block, namespace: dict[str, Any], loop: asyncio.AbstractEventLoop) -> str:
    code = compile(
        block.body, f"block at line {block.line}", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    )
    captured = io.StringIO()
    # An asyncio.run() of an earlier block unset the current loop; a client
    # made at a fragment's top level, as in a module, binds to this one.
    asyncio.set_event_loop(loop)
    with contextlib.redirect_stdout(captured):
        if code.co_flags & inspect.CO_COROUTINE:
            loop.run_until_complete(eval(code, namespace))
        else:
            exec(code, namespace)  # may asyncio.run() itself: no loop runs now
        for then in block.marker("then"):
            loop.run_until_complete(eval(then, namespace))
    return captured.getvalue()


async def _given(address: str, registered: list[str]) -> dict[str, Any]:
    import grpc
    from faraday_memory_client import AdminClient, MemoryClient

    async with AdminClient(address) as admin:
        user = await admin.upsert_user(email="readme-fragments@school.example.org", name="Grace")
        for index, user_id in enumerate(registered):
            email = f"readme-{index}@school.example.org"
            await admin.upsert_user(id=user_id, email=email, name="Ada")
    return {
        "client": MemoryClient(address),
        "USER": user.id,
        "row_id": 1042,
        "tokens": Tokens(),
        "admin_token": "an-admin-token",
        "grpc": grpc,
    }


def run(document: Path, address: str) -> int:
    text = document.read_text()
    for default in _ADDRESSES:
        text = text.replace(default, address)
    env = {**os.environ, **GIVEN_ENV}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    found = blocks(text)
    for block in found:
        for name in block.marker("file"):
            Path(name).write_text(block.body)
    loop = asyncio.new_event_loop()
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    registered = [user for block in found for user in block.marker("user")]
    namespace.update(loop.run_until_complete(_given(address, registered)))
    ids = Ids()
    ran = 0
    for block in found:
        if block.marker("file"):
            continue  # written above
        if block.marker("skip"):
            print(f"{document}:{block.line}: {block.lang} not run: {block.markers}")
            continue
        if block.lang == "python":
            output = _run_python(block, namespace, loop)
        elif block.lang == "sh":
            output = _run_sh(block, address, ids, env)
        elif block.lang == "json":
            for line in block.body.splitlines():
                json.loads(line)
            output = ""
        elif block.lang == "":  # a diagram or a layout, not code
            continue
        else:
            raise AssertionError(f"{document}:{block.line}: no way to run a {block.lang} block")
        for expected in block.marker("expect"):
            assert expected in output, f"{document}:{block.line}: {expected!r} not in\n{output}"
        print(f"{document}:{block.line}: {block.lang} ran")
        ran += 1
    loop.run_until_complete(namespace["client"].close())
    loop.close()
    print(f"{ran} blocks ran")
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), sys.argv[2]))
