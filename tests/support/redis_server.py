"""A real ``redis-server`` for tests: a private one per test on a free loopback port, no persistence.

``scripts/fetch-tools.sh`` installs it (Debian package ``redis-server``). ``kill`` is SIGKILL, as a
crashed or partitioned Redis looks to a client; ``start`` again reuses the same port. The
``redis_server`` fixture (registered by ``tests/conftest.py``) is the one the state and fleet tests
share: every test gets its own server, so a test may kill, pause or restart it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .polling import eventually
from .ports import free_port

__all__ = ["RedisServer", "redis_server"]


class RedisServer:
    """Start, SIGKILL and restart (same port) a redis-server living in ``workdir``; TLS optional."""

    def __init__(self, workdir: Path, *, tls: dict[str, Path] | None = None) -> None:
        self.workdir = workdir
        self.tls = tls
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        query = f"?ssl_ca_certs={self.tls['ca']}" if self.tls else ""
        return f"{scheme}://127.0.0.1:{self.port}/0{query}"

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run `make tools` (scripts/fetch-tools.sh)")
        argv = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning"]
        if self.tls is None:
            return [*argv, "--port", str(self.port)]
        return [*argv, "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls["cert"]), "--tls-key-file", str(self.tls["key"]),
                "--tls-ca-cert-file", str(self.tls["ca"]), "--tls-auth-clients", "no"]

    async def start(self, timeout: float = 10.0) -> RedisServer:  # noqa: ASYNC109 (a start-up deadline)
        """Start the process and return once it answers PING (a real wait on a real process)."""
        self._spawn()
        await eventually(self._answers, timeout=timeout, interval=0.02, retry_on=(RedisError, OSError),
                         what=f"redis-server answering on port {self.port}")
        return self

    def _spawn(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)

    async def _answers(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
        client = Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=1.0)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    def kill(self) -> None:
        """SIGKILL, as a node failure would: no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server for this test alone (fault tests kill, pause and restart it)."""
    server = await RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()
