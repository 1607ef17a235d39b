"""A fault-injecting provider: a real aiohttp server on 127.0.0.1 whose failures are scripted.

Each request takes the next scripted ``Fault`` if there is one, else one drawn from ``mix`` (a
ratio per fault kind, seeded), plus an optional latency. Every request is recorded with its
``X-Request-Id`` and ``Idempotency-Key`` so tests can count how often the same request arrived.

Kinds: ``ok``, ``status`` (e.g. 503), ``rate_limit`` (429 + ``Retry-After``), ``reset`` (the
connection is dropped before any byte of a response), ``reset_mid_body`` (headers and part of the
body, then dropped), ``stall`` (headers, then nothing until the client gives up), ``short_body``
(fewer bytes than ``Content-Length``, then closed), ``trickle`` (the whole body, slowly).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, replace

from aiohttp import web

from sidecar.web.catch_all import add_catch_all

KINDS = (
    "ok", "status", "rate_limit", "reset", "reset_mid_body", "stall", "short_body", "trickle",
)
OK_BODY = b'{"ok": true}'


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str = "ok"
    status: int = 503  # for "status"
    retry_after: str = "1"  # for "rate_limit"
    delay: float = 0.0  # seconds before anything is sent
    body_size: int = 4096  # for the body faults
    chunk_delay: float = 0.05  # for "trickle": pause between 256-byte chunks
    path: str | None = None  # scripted: only a request whose path starts with this takes it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class Seen:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    request_id: str | None
    idempotency_key: str | None
    authorization: str | None
    fault: str


@dataclass(frozen=True)
class FaultMix:
    """Faults drawn by ratio (the rest is ``ok``) and a latency added to a share of requests."""

    entries: tuple[tuple[float, Fault], ...] = ()
    latency_ratio: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)  # uniform range, seconds

    def draw(self, rng: random.Random) -> Fault:
        x = rng.random()
        fault = Fault()
        for ratio, candidate in self.entries:
            if x < ratio:
                fault = candidate
                break
            x -= ratio
        if self.latency_ratio and rng.random() < self.latency_ratio:
            fault = replace(fault, delay=fault.delay + rng.uniform(*self.latency))
        return fault


def mix(latency_ratio: float = 0.0, latency: tuple[float, float] = (0.0, 0.0),
        **ratios: float | tuple[float, Fault]) -> FaultMix:
    """``mix(status=0.1, reset=0.02)``; a ``(ratio, Fault(...))`` pair sets the fault's details."""
    entries = tuple(
        spec if isinstance(spec, tuple) else (float(spec), Fault(kind=name))
        for name, spec in ratios.items()
    )
    return FaultMix(entries, latency_ratio, latency)


class FaultProvider:
    """The server; ``script`` overrides ``mix`` request by request, ``seen`` records everything."""

    def __init__(self, faults: FaultMix | None = None, *, seed: int = 7) -> None:
        self.mix = faults or FaultMix()
        self.script: list[Fault] = []
        self.seen: list[Seen] = []
        self.counts: Counter[str] = Counter()
        self.inflight = 0
        self.port = 0
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def then(self, *faults: Fault) -> FaultProvider:
        self.script.extend(faults)
        return self

    def by_request_id(self) -> Counter[str]:
        return Counter(s.request_id for s in self.seen if s.request_id is not None)

    def seen_between(self, start: float, end: float) -> int:
        return sum(1 for s in self.seen if start <= s.at < end)

    async def start(self, port: int = 0) -> FaultProvider:
        app = web.Application()
        add_catch_all(app.router, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, keepalive_timeout=30)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port, backlog=1024).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _scripted(self, path: str) -> Fault | None:
        for i, fault in enumerate(self.script):
            if fault.path is None or path.startswith(fault.path):
                return self.script.pop(i)
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._scripted(request.raw_path) or self.mix.draw(self._rng)
        h = request.headers
        self.seen.append(Seen(time.monotonic(), request.method, request.raw_path, h.get("X-Request-Id"),
                              h.get("Idempotency-Key"), h.get("Authorization"), fault.kind))
        self.counts[fault.kind] += 1
        self.inflight += 1
        try:
            await request.read()
            if fault.delay:
                await asyncio.sleep(fault.delay)
            return await _ANSWER[fault.kind](request, fault)
        finally:
            self.inflight -= 1


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


async def _ok(request: web.Request, fault: Fault) -> web.StreamResponse:
    return web.Response(body=OK_BODY, content_type="application/json")


async def _status(request: web.Request, fault: Fault) -> web.StreamResponse:
    body = b'{"fault": "status %d"}' % fault.status
    return web.Response(status=fault.status, body=body, content_type="application/json")


async def _rate_limit(request: web.Request, fault: Fault) -> web.StreamResponse:
    return web.Response(status=429, body=b'{"fault": "rate_limit"}', content_type="application/json",
                        headers={"Retry-After": fault.retry_after})


async def _reset(request: web.Request, fault: Fault) -> web.StreamResponse:
    _abort(request)
    return web.Response()


async def _headers_then(request: web.Request, fault: Fault, length: int) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    resp.content_length = length
    await resp.prepare(request)
    return resp


async def _reset_mid_body(request: web.Request, fault: Fault) -> web.StreamResponse:
    resp = await _headers_then(request, fault, fault.body_size)
    await resp.write(b"x" * (fault.body_size // 2))
    await resp.drain()
    _abort(request)
    return resp


async def _stall(request: web.Request, fault: Fault) -> web.StreamResponse:
    resp = await _headers_then(request, fault, fault.body_size)
    await asyncio.Event().wait()  # until the client gives up and the server cancels us
    return resp


async def _short_body(request: web.Request, fault: Fault) -> web.StreamResponse:
    resp = await _headers_then(request, fault, fault.body_size)
    await resp.write(b"x" * (fault.body_size // 2))
    await resp.drain()
    # Close cleanly (FIN, not RST): the body simply ends short of its Content-Length.
    if request.transport is not None:
        request.transport.close()
    return resp


async def _trickle(request: web.Request, fault: Fault) -> web.StreamResponse:
    resp = await _headers_then(request, fault, fault.body_size)
    for start in range(0, fault.body_size, 256):
        await resp.write(b"x" * min(256, fault.body_size - start))
        await asyncio.sleep(fault.chunk_delay)
    await resp.write_eof()
    return resp


_ANSWER = {
    "ok": _ok, "status": _status, "rate_limit": _rate_limit, "reset": _reset,
    "reset_mid_body": _reset_mid_body, "stall": _stall, "short_body": _short_body, "trickle": _trickle,
}
