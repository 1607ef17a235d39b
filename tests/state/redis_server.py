"""A real ``redis-server`` on 127.0.0.1 for the tests: no persistence, its own tmp dir, killable.

``scripts/fetch-tools.sh`` installs it (Debian package ``redis-server``). ``kill`` is SIGKILL, as a
crashed or partitioned Redis looks to a client; ``start`` again reuses the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
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

    def start(self, deadline: float = 10.0) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "redis.log").open("ab")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {(self.workdir / 'redis.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)  # the server process is starting: a real wait on a real process
        raise RuntimeError(f"redis-server not listening on {self.port} within {deadline}s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
