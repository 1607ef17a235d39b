"""The sidecar's memory while a 1 GiB response streams through it (it promises a few MiB at most).

A proxy that buffers would grow by the whole body; one that streams without back-pressure grows by
whatever the client is slower than the upstream. The client here reads as fast as it can and
discards; RSS is sampled from a thread every 20 ms and the peak over the pre-stream RSS is reported.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from dataclasses import dataclass

import aiohttp

from bench.procs import ProcessSet, free_port, tree_rss_bytes, wait_ready
from bench.runner import MiB, warm_request
from bench.targets import Env, Running, Target


@dataclass(frozen=True, slots=True)
class StreamResult:
    seconds: float
    mb_s: float
    rss_before_mib: float
    rss_peak_mib: float

    @property
    def growth_mib(self) -> float:
        return self.rss_peak_mib - self.rss_before_mib


class _PeakSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak = pid, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, tree_rss_bytes(self.pid))

    def finish(self) -> int:
        self._done.set()
        self.join()
        return self.peak


async def _download(url: str, size: int) -> None:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with (
        aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
        session.get(url) as resp,
    ):
        got = 0
        async for chunk in resp.content.iter_any():
            got += len(chunk)
    if resp.status != 200 or got != size:
        raise OSError(f"stream answered {resp.status} with {got} of {size} bytes")


def start_zeros(procs: ProcessSet, env: Env) -> Running:
    port = free_port()
    argv = [sys.executable, "-m", "bench.zeros_upstream", "--port", str(port)]
    proc = procs.spawn("zeros-upstream", argv, cpu=env.load_cpu, cwd=env.repo)
    ready = wait_ready(proc, port, "/small")
    return Running(f"http://127.0.0.1:{port}", proc, proc.pid, ready)


def stream_through(env: Env, target: Target, size: int) -> StreamResult:
    """Start `target` in front of the zeros upstream, stream `size` bytes through, stop it."""
    running = target.start(env, env.upstream.base_url)
    try:
        warm_request(running.base_url + "/small")
        before = tree_rss_bytes(running.rss_pid)
        sampler = _PeakSampler(running.rss_pid)
        sampler.start()
        started = time.monotonic()
        try:
            asyncio.run(_download(f"{running.base_url}/zeros?size={size}", size))
        finally:
            peak = max(sampler.finish(), tree_rss_bytes(running.rss_pid))
        seconds = time.monotonic() - started
    finally:
        if running.proc is not None:
            env.procs.stop(running.proc)
    return StreamResult(seconds, size / seconds / 1e6, before / MiB, peak / MiB)
