"""A real aiohttp server on 127.0.0.1 (or [::1]) standing in for a provider; the test scripts its answers.

Each request takes the next scripted ``Reply`` (or the default), and every request is recorded
(method, raw target, headers, body size and digest) so tests can assert what the provider saw.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer

from sidecar.web.catch_all import add_catch_all


@dataclass
class Reply:
    status: int = 200
    body: bytes = b'{"ok": true}'
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    delay: float = 0.0  # seconds before the headers
    hold: asyncio.Event | None = None  # wait for the test to set it before answering
    before: Callable[[], None] | None = None  # run on arrival (e.g. move a fake clock)
    reset: bool = False  # drop the connection instead of answering
    stream_bytes: int = 0  # > 0: stream this many bytes (chunked unless content_length)
    content_length: bool = True
    reset_after: int | None = None  # with stream_bytes: drop the connection after this many bytes


@dataclass
class Seen:
    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body_size: int
    body_sha256: str
    body: bytes


def has_ipv6_loopback() -> bool:
    """True when this machine can listen on [::1] (some CI containers have no IPv6 at all)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


class FakeProvider:
    """A scripted provider: ``then(Reply(...))`` queues answers, ``seen`` lists what arrived."""

    def __init__(self, keep_bodies_up_to: int = 1 << 20, host: str = "127.0.0.1") -> None:
        self.host = host
        self.script: deque[Reply] = deque()
        self.default = Reply()
        self.seen: list[Seen] = []
        self._keep = keep_bodies_up_to
        self.port = 0
        self.inflight = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def then(self, *replies: Reply) -> FakeProvider:
        self.script.extend(replies)
        return self

    def app(self) -> web.Application:
        """The fake as an aiohttp app; every path, "%0a" ones included, reaches one handler."""
        app = web.Application()
        add_catch_all(app.router, self._handle)  # also matches "%0a" paths
        return app

    async def start(self, serve: AiohttpServer) -> FakeProvider:
        """Serve on a free port with pytest-aiohttp's ``aiohttp_server`` (which closes it at teardown)."""
        server = await serve(self.app(), host=self.host, auto_decompress=False, access_log=None,
                             shutdown_timeout=0.5)
        self.port = server.port
        return self

    async def _record(self, request: web.Request) -> None:
        digest = hashlib.sha256()
        size = 0
        kept = bytearray()
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
            if len(kept) < self._keep:
                kept += chunk[: self._keep - len(kept)]
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                CIMultiDict(request.headers),
                size,
                digest.hexdigest(),
                bytes(kept),
            )
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.inflight += 1
        try:
            reply = self.script.popleft() if self.script else self.default
            await self._record(request)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.hold is not None:
                await reply.hold.wait()
            if reply.before is not None:
                reply.before()
            if reply.reset:
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            if reply.stream_bytes:
                return await self._stream(request, reply)
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        finally:
            self.inflight -= 1

    async def _stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        resp = web.StreamResponse(status=reply.status, headers=reply.headers)
        if reply.content_length:
            resp.content_length = reply.stream_bytes
        await resp.prepare(request)
        chunk = b"x" * (256 * 1024)
        sent = 0
        while sent < reply.stream_bytes:
            n = min(len(chunk), reply.stream_bytes - sent)
            if reply.reset_after is not None and sent + n > reply.reset_after:
                assert request.transport is not None
                request.transport.abort()
                return resp
            await resp.write(chunk[:n])
            sent += n
        await resp.write_eof()
        return resp
