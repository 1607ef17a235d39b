"""Child processes: pinned, logged to files, in their own process group, always stopped.

Every server runs in a new session so that one `killpg` reaches its workers too, and so that
Ctrl-C in the terminal reaches only the harness, which then stops them all from
`ProcessSet.__exit__`.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


class StartError(RuntimeError):
    """A target did not become ready; the message says why (with its log tail)."""


@dataclass(slots=True)
class Proc:
    """One started server: its Popen, its log file and when it was started (monotonic)."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    stop_grace: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 6) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class ProcessSet:
    """Starts processes and guarantees they are all gone when the `with` block ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[Proc] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cpu: int | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_grace: float = 3.0,
    ) -> Proc:
        """Start `argv` pinned to `cpu` (taskset execs, so the pid is the server's own)."""
        full = ["taskset", "-c", str(cpu), *argv] if cpu is not None else list(argv)
        log_path = self.workdir / f"{name}.log"
        with log_path.open("ab") as log:
            started = time.monotonic()
            popen = subprocess.Popen(
                full,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path, started, stop_grace)
        self._procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        """SIGTERM the group, SIGKILL what is left after the grace period."""
        if proc in self._procs:
            self._procs.remove(proc)
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=proc.stop_grace)
        # Also when the leader is gone: a forked worker may still hold the group.
        _signal_group(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def pin(proxy_cpu: int, load_cpu: int) -> tuple[int | None, int | None]:
    """Keep this process on the load core and say which cores the servers get; (None, None): unpinned.

    Pinning only when both cores exist and differ: on one core it would only add contention.
    """
    available = os.sched_getaffinity(0)
    if {proxy_cpu, load_cpu} <= available and proxy_cpu != load_cpu:
        os.sched_setaffinity(0, {load_cpu})  # the harness itself stays off the proxy's core
        return proxy_cpu, load_cpu
    print("bench: cores not available, running unpinned (figures are not comparable)", file=sys.stderr)
    return None, None


def free_port() -> int:
    """A loopback port free right now (the kernel picks it; the window for a race is tiny)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """GET http://127.0.0.1:port/path and return the status, or None if nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_ready(proc: Proc, port: int, path: str, deadline: float = 20.0) -> float:
    """Poll until `path` answers 200; return seconds since the process was started.

    Fails fast when the process exits, so a sidecar that can't import yet costs milliseconds.
    """
    while True:
        if http_status(port, path, timeout=0.5) == 200:
            return time.monotonic() - proc.started_at
        if not proc.alive():
            raise StartError(f"exited with {proc.popen.returncode}: {proc.log_tail()}")
        if time.monotonic() - proc.started_at > deadline:
            raise StartError(f"not ready on :{port}{path} after {deadline:.0f}s: {proc.log_tail()}")
        time.sleep(0.005)


def tree_rss_bytes(pid: int) -> int:
    """VmRSS summed over `pid` and its descendants (nginx and haproxy may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += _vm_rss(current)
        todo.extend(children.get(current, []))
    return total


def _vm_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
