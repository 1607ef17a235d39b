"""A real ``redis-server`` for tests: a private one on a free loopback port, no persistence."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class RedisServer:
    """Start, SIGKILL and restart (same port) a redis-server living in ``directory``."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: run scripts/fetch-tools.sh (make tools)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, deadline: float = 10.0) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(self.directory),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline
        while not await self._answers():
            if self.process.returncode is not None or loop.time() > give_up:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            await asyncio.sleep(0.01)

    async def kill(self) -> None:
        """SIGKILL, as a node failure would: no goodbye to the clients."""
        if self.process is not None:
            self.process.kill()
            await self.process.wait()
            self.process = None

    async def _answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return await asyncio.wait_for(reader.readline(), 1.0) == b"+PONG\r\n"
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            await writer.wait_closed()
