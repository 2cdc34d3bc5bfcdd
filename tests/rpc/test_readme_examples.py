"""Every example in README.md and clients/python/README.md runs, as written,
against a real server (tests/readme_examples.py says how, and what it fills in)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from memory_service.server import start
from tests.rpc.conftest import TEST_SETTINGS

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests" / "readme_examples.py"


@pytest.mark.parametrize("document", ["README.md", "clients/python/README.md"])
async def test_readme_examples_run(document: str, app_url: str, tmp_path: Path) -> None:
    # As `make run` serves: no authentication, on loopback, with its model.
    running = await start(
        TEST_SETTINGS.with_overrides(embedding_model="wordllama-l2-supercat-256"), app_url
    )
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(RUNNER),
            str(ROOT / document),
            f"127.0.0.1:{running.port}",
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), timeout=240)
    finally:
        await running.stop(0.5)
    text = output.decode()
    print(text)
    assert process.returncode == 0, text
    not_run = [line for line in text.splitlines() if " not run: " in line]
    # Kept tiny on purpose: every other block must run.
    assert len(not_run) <= 2, not_run
