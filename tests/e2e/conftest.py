"""End-to-end tests: real processes, real HTTP on 127.0.0.1, nothing mocked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def processes_mentioning(text: str) -> list[int]:
    """PIDs of live processes whose command line contains ``text`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().split(")")[-1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def step_until(manager, what: str, check, timeout: float = 240.0):  # type: ignore[no-untyped-def]
    """Step a LocalManager until ``check()`` is truthy (bounded); the failure names what never happened."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        await manager.step()
        if value := await asyncio.to_thread(check):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f}s: {what}; errors: {manager.errors}")
