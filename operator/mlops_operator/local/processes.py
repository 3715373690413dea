"""Child processes that never outlive us: own process groups, terminate-then-kill, a registry."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mlops_command(args: Sequence[str]) -> list[str]:
    """``mlops-operator ARGS`` with this very interpreter, so a virtualenv needs no activation."""
    return [sys.executable, "-m", "mlops_operator.cli", *args]


@dataclass
class Process:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc.returncode is None


class ProcessGroup:
    """Every process the local runner starts, so that stopping leaves none behind."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._all: dict[int, Process] = {}

    async def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Process:
        log_path = self.log_dir / f"{name}.log"
        log = open(log_path, "ab")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group: we signal the whole group
            )
        finally:
            log.close()
        p = Process(name, proc, log_path)
        self._all[proc.pid] = p
        return p

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._all.values() if p.running]

    async def stop(self, p: Process, grace: float = 5.0) -> int | None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL."""
        if p.running:
            _signal_group(p.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(p.proc.wait(), grace)
            except asyncio.TimeoutError:
                _signal_group(p.pid, signal.SIGKILL)
                await p.proc.wait()
        self._all.pop(p.pid, None)
        return p.proc.returncode

    def forget(self, p: Process) -> None:
        """A process that exited by itself and was waited for."""
        self._all.pop(p.pid, None)

    async def stop_all(self, grace: float = 5.0) -> None:
        await asyncio.gather(*(self.stop(p, grace) for p in list(self._all.values())), return_exceptions=True)

    def kill_all_now(self) -> None:
        """Last resort at interpreter exit: no waiting, no event loop."""
        for p in list(self._all.values()):
            if p.running:
                _signal_group(p.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
