"""Run the real ``python -m sidecar`` as a subprocess and find its listeners from its first log line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SidecarProcess:
    proc: asyncio.subprocess.Process
    proxy_port: int
    ops_port: int
    lines: list[dict[str, Any]] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.lines if line.get("event") == name]

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "unparsed", "text": raw.decode(errors="replace")})

    async def terminate(self, sig: int = signal.SIGTERM, wait: float = 30.0) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), wait)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 5)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()


async def start_sidecar(
    *args: str, env: dict[str, str] | None = None, startup: float = 20.0
) -> SidecarProcess:
    """Start on ``--port 0 --ops-port 0`` unless told otherwise; wait for the "listening" line."""
    argv = [sys.executable, "-m", "sidecar", *args]
    if "--port" not in args:
        argv += ["--port", "0"]
    if "--ops-port" not in args:
        argv += ["--ops-port", "0"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full_env
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    async with asyncio.timeout(startup):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                err = await proc.stderr.read() if proc.stderr else b""
                raise RuntimeError(f"sidecar exited before listening: {err.decode()[-2000:]}")
            line = json.loads(raw)
            lines.append(line)
            if line.get("event") == "listening":
                break
    sp = SidecarProcess(
        proc,
        int(line["proxy"].rsplit(":", 1)[1]),
        int(line["ops"].rsplit(":", 1)[1]),
        lines,
    )
    sp._reader = asyncio.ensure_future(sp._pump())
    return sp
