"""A lean HTTP/1.1 client for one upstream origin: a pool of keep-alive connections.

aiohttp's ``ClientSession`` is generic (cookie jar, tracing, middlewares, redirects, proxies, auth,
per-request ``ClientRequest``/``ClientResponse`` and timer objects); under load it was about 45% of
the sidecar's CPU. The proxy needs much less: one origin per provider, the bot's headers as they
are, the body as bytes or a stream. So this writes each request head (and a small body) in one
``transport.write`` and reads responses with aiohttp's own ``ResponseHandler`` protocol, which
brings its C parser, flow control, ``sock_read`` timeout, payload errors and exception types, so
errors classify exactly as they did through ``ClientSession``.

Behaviour, stated:

- No silent re-send: a request that fails on a reused keep-alive connection is an error for the
  attempt loop to count and retry (aiohttp's ``_retry_connection`` off, as before).
- ``limit`` open connections at most (in use plus idle); callers beyond it wait in FIFO order.
- Idle connections are reused newest first and closed after ``idle_timeout`` unused.
- Every deadline (the wait for a connection, the connect, the response head, idle expiry) runs
  on ``timers``: the event loop unless one is injected (tests move a fake clock instead of sleeping).
- DNS goes through the loop (``getaddrinfo``) inside the connect timeout; TLS verifies the
  certificate and host name with the default context.
- Small bodies go out with ``Content-Length``; streamed ones keep the client's ``Content-Length``
  or are sent chunked, from a writer task, so an upstream that answers early is still read.
- A header name or value carrying CR or LF is refused (``ValueError``) rather than written.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ssl as _ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import StreamReader
from multidict import CIMultiDict, CIMultiDictProxy, istr
from yarl import URL

from ..errors import ErrorCode, RequestBodyError
from .aiohttp_client_compat import (
    InvalidResponse,
    UpstreamProtocol,
    drain,
    new_protocol,
    parser_ready,
    prepare_response,
    shared_verified_context,
)

__all__ = ["ConnectFailed", "H1Pool", "H1Response", "PoolTimeout", "Timers"]

Body = bytes | AsyncIterable[bytes] | None

_CONTENT_LENGTH = istr("Content-Length")
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT", "DELETE"})
_CRLF = "\r\n"


class ConnectFailed(aiohttp.ClientOSError):
    """The connection could not be opened (refused, unreachable, DNS): nothing was written."""


class PoolTimeout(aiohttp.ServerTimeoutError):
    """No pooled connection became free in time: local saturation, nothing reached the provider."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Timers(Protocol):
    """A clock and the timers that run on it: an asyncio event loop is one."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> Cancellable: ...


class _Upload:
    """Where a streamed body's writer is waiting: on the client (its fault) or on the upstream."""

    __slots__ = ("on_client",)

    def __init__(self) -> None:
        self.on_client = False


class _Conn:
    """One pooled connection: its protocol and when it was last handed back."""

    __slots__ = ("idle_since", "proto", "reads_head")

    def __init__(self, proto: UpstreamProtocol) -> None:
        self.proto = proto
        self.idle_since = 0.0
        self.reads_head = False  # the parser was set up for a HEAD (no body) answer


class H1Response:
    """The upstream's answer: the subset of ``aiohttp.ClientResponse`` that the proxy uses."""

    __slots__ = ("_conn", "_pool", "_writer", "content", "content_length", "headers", "reason", "status")

    def __init__(
        self,
        pool: H1Pool,
        conn: _Conn,
        status: int,
        reason: str,
        headers: CIMultiDictProxy[str],
        content: StreamReader,
        writer: asyncio.Task[None] | None,
    ) -> None:
        self._pool = pool
        self._conn: _Conn | None = conn
        self._writer = writer
        self.status = status
        self.reason = reason
        self.headers = headers
        self.content = content
        length = headers.get(_CONTENT_LENGTH)
        self.content_length = int(length) if length is not None and length.isdigit() else None

    async def read(self) -> bytes:
        """The whole body (the proxy reads only small ones whole); the connection goes back."""
        body = await self.content.read()
        self.release()
        return body

    def release(self) -> None:
        """Done with the answer: keep the connection if its body was read to the end, else close."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        writer = self._writer
        if writer is not None and not writer.done():
            writer.cancel()  # the upstream answered before taking the whole body
            self._pool._discard(conn)
            return
        self._pool._put(conn)

    def close(self) -> None:
        """Drop the connection whatever its state (a broken or abandoned body)."""
        conn = self._conn
        if conn is None:
            return
        self._conn = None
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
        self._pool._discard(conn)


class H1Pool:
    """Keep-alive HTTP/1.1 connections to one origin (``scheme://host[:port][/prefix]``)."""

    def __init__(
        self,
        origin: str,
        *,
        limit: int = 256,
        connect_timeout: float = 5.0,
        read_timeout: float | None = None,
        idle_timeout: float = 15.0,
        read_bufsize: int = 64 * 1024,
        ssl_context: _ssl.SSLContext | None = None,
        timers: Timers | None = None,
    ) -> None:
        url = URL(origin)
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"not an http(s) URL: {origin!r}")
        self.host = url.raw_host
        self.prefix = url.raw_path.rstrip("/")  # a path in the upstream URL prefixes every target
        self.port = url.port or (443 if url.scheme == "https" else 80)
        default_port = self.port == (443 if url.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self._host_line = f"Host: {host if default_port else f'{host}:{self.port}'}\r\n"
        self._ssl: _ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = ssl_context or _verified_context()
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.read_bufsize = read_bufsize
        self._idle: list[_Conn] = []
        self._open = 0  # connections in use, idle or being opened
        self._waiters: collections.deque[asyncio.Future[_Conn | None]] = collections.deque()
        self._sweeper: Cancellable | None = None
        self._closed = False
        self._timers = timers  # None: the running loop

    def _clock(self) -> Timers:
        return self._timers or asyncio.get_running_loop()

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """Callers queued for a connection (the pool is at its limit)."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def request(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: Body,
        timeout: float,  # noqa: ASYNC109
        *,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> H1Response:
        """Send one request and wait (at most ``timeout`` s in all) for the response head.

        ``target`` is the origin-form request target (path and query), sent as is. A route's own
        ``connect_timeout`` and body ``read_timeout`` override the pool's.
        """
        loop = asyncio.get_running_loop()
        timers = self._timers or loop
        deadline = timers.time() + timeout
        conn = self._take_idle(timers)
        if conn is None:
            connect = self.connect_timeout if connect_timeout is None else connect_timeout
            try:
                async with _expires_at(timers, deadline):
                    conn = await self._acquire(loop, timers, connect)
            except TimeoutError:
                detail = f"no connection to {self.host}:{self.port} in time"
                raise PoolTimeout(detail) from None
        proto = conn.proto
        proto.read_timeout = None  # the head is bounded by the deadline timer below
        head = method == "HEAD"
        if conn.reads_head is not head or not parser_ready(proto):
            prepare_response(proto, head=head, read_bufsize=self.read_bufsize)
            conn.reads_head = head
        writer: asyncio.Task[None] | None = None
        upload: _Upload | None = None
        try:
            transport = proto.transport
            if transport is None:
                raise aiohttp.ServerDisconnectedError()
            if body is None or isinstance(body, bytes):
                transport.write(self._head(method, target, headers, body))
            else:
                upload = _Upload()
                writer = loop.create_task(
                    self._write_stream(proto, method, target, headers, body, upload)
                )
            # One timer for the whole wait for the head; cheaper than asyncio.timeout's machinery.
            timer = timers.call_at(deadline, _head_timed_out, proto, timeout, upload)
            try:
                while True:
                    message, payload = await proto.read()
                    if not 100 <= message.code < 200 or message.code == 101:
                        break
            finally:
                timer.cancel()
        except InvalidResponse as exc:
            # A malformed status line or header: the provider's fault, as a client error type.
            if writer is not None and not writer.done():
                writer.cancel()
            self._discard(conn)
            raise aiohttp.ClientPayloadError(
                f"invalid response from upstream: {str(exc.message)[:120]}"
            ) from None
        except BaseException:
            if writer is not None and not writer.done():
                writer.cancel()
            self._discard(conn)
            raise
        read_timeout = self.read_timeout if read_timeout is None else read_timeout
        if not payload.is_eof() and read_timeout:
            # sock_read for the body only: a small answer usually arrives whole with its head,
            # and then no per-request timer is armed at all.
            proto.read_timeout = read_timeout
            proto.start_timeout()
        return H1Response(self, conn, message.code, message.reason, message.headers, payload, writer)

    def _head(
        self,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: bytes | None,
        streamed: bool = False,
    ) -> bytes:
        if body is not None and _CONTENT_LENGTH in headers:  # case-insensitive lookup
            headers = headers.copy()
            del headers[_CONTENT_LENGTH]  # replaced by the length of the body actually sent
        lines = [method, " ", target, " HTTP/1.1\r\n", self._host_line]
        newlines = 3  # request line, Host, the blank line
        for name, value in headers.items():
            lines += (name, ": ", value, _CRLF)
            newlines += 1
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n")
            newlines += 1
        elif not streamed and method not in _NO_BODY_METHODS and _CONTENT_LENGTH not in headers:
            lines.append("Content-Length: 0\r\n")
            newlines += 1
        lines.append(_CRLF)
        text = "".join(lines)
        # Every line ends in CRLF: any other CR or LF came from a name or value (header injection).
        if text.count("\n") != newlines or text.count("\r") != newlines:
            _check_headers(method, target, headers)
            raise ValueError("newline in the request host")
        data = text.encode("utf-8", "surrogateescape")
        return data + body if body else data

    async def _write_stream(
        self,
        proto: UpstreamProtocol,
        method: str,
        target: str,
        headers: CIMultiDict[str],
        body: AsyncIterable[bytes],
        upload: _Upload,
    ) -> None:
        """Send a streamed body (chunked unless the client declared its length), with back-pressure.

        A failure of the body itself (the client's side) surfaces as ``RequestBodyError``; a failure
        writing to the upstream as a connection error, as aiohttp's writer does.
        """
        chunked = _CONTENT_LENGTH not in headers
        framed = headers
        if chunked:
            framed = headers.copy()
            framed["Transfer-Encoding"] = "chunked"
        try:
            transport = proto.transport
            if transport is None:
                raise aiohttp.ServerDisconnectedError()
            transport.write(self._head(method, target, framed, None, streamed=True))
            async for chunk in _from_client(body, upload):
                if not chunk:
                    continue
                if proto.transport is None:
                    raise aiohttp.ServerDisconnectedError()
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                await drain(proto)
            if chunked:
                transport.write(b"0\r\n\r\n")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Surface it to whoever waits on the response, as aiohttp's writer does.
            err = aiohttp.ClientOSError(*exc.args) if isinstance(exc, OSError) else exc
            if not isinstance(err, aiohttp.ClientError | RequestBodyError):
                err = aiohttp.ClientConnectionError(f"request body failed: {type(exc).__name__}")
                err.__cause__ = exc
            proto.set_exception(err)
            if proto.transport is not None:
                proto.transport.abort()

    # -- the pool ------------------------------------------------------------------------------

    def _take_idle(self, timers: Timers) -> _Conn | None:
        idle = self._idle
        now = timers.time()
        while idle:
            conn = idle.pop()
            proto = conn.proto
            if proto.is_connected() and not proto.should_close and now - conn.idle_since < self.idle_timeout:
                return conn
            self._discard(conn)
        return None

    async def _acquire(
        self, loop: asyncio.AbstractEventLoop, timers: Timers, connect_timeout: float
    ) -> _Conn:
        """A new connection under the limit, else wait in FIFO order: for a connection handed over,
        or for a freed slot that ``_wake`` reserves for the first waiter (no newcomer can take it)."""
        if self._closed:
            raise aiohttp.ClientConnectionError("connection pool is closed")
        if self._open < self.limit:
            self._open += 1
            return await self._connect_reserved(loop, timers, connect_timeout)
        waiter: asyncio.Future[_Conn | None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            handed = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                conn = waiter.result()  # handed a connection or a slot just as we gave up
                if conn is not None:
                    self._put(conn)
                else:
                    self._open -= 1
                    self._wake()
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        if handed is not None:
            return handed
        return await self._connect_reserved(loop, timers, connect_timeout)

    async def _connect_reserved(
        self, loop: asyncio.AbstractEventLoop, timers: Timers, limit_s: float
    ) -> _Conn:
        """Open a connection in a slot already counted in ``_open``; give it back on failure."""
        try:
            return await self._connect(loop, timers, limit_s)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _connect(
        self, loop: asyncio.AbstractEventLoop, timers: Timers, limit_s: float
    ) -> _Conn:
        try:
            async with _expires_at(timers, timers.time() + limit_s):
                _, proto = await loop.create_connection(
                    lambda: new_protocol(loop),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise aiohttp.ConnectionTimeoutError(
                f"Connection timeout to host {self.host}:{self.port}"
            ) from None
        except _ssl.SSLError:
            raise
        except OSError as exc:
            detail = f"Cannot connect to host {self.host}:{self.port}: {exc}"
            raise ConnectFailed(exc.errno, detail) from exc
        assert isinstance(proto, UpstreamProtocol)
        return _Conn(proto)

    def _put(self, conn: _Conn) -> None:
        """A connection whose answer is done: reuse it, or close it if it can't be reused."""
        proto = conn.proto
        if self._closed or not proto.is_connected() or proto.should_close:
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        timers = self._clock()
        conn.idle_since = timers.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = timers.call_at(conn.idle_since + self.idle_timeout, self._sweep)

    def _discard(self, conn: _Conn) -> None:
        conn.proto.close()
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        """A slot freed: reserve it for the first waiter, who opens a connection of its own."""
        if self._closed or self._open >= self.limit:
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._open += 1
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout``; re-arm while any remain."""
        self._sweeper = None
        if not self._idle:
            return
        timers = self._clock()
        now = timers.time()
        keep = []
        for conn in self._idle:
            if now - conn.idle_since >= self.idle_timeout or not conn.proto.is_connected():
                self._discard(conn)
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            self._sweeper = timers.call_at(keep[0].idle_since + self.idle_timeout, self._sweep)

    async def close(self) -> None:
        """Close idle connections now; connections in use close when their answers are released."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(aiohttp.ClientConnectionError("connection pool is closed"))


@functools.cache
def _verified_context() -> _ssl.SSLContext:
    """One verifying context for every pool: each new one loads the whole CA store (~0.5 MiB).

    aiohttp already made one at import (``create_default_context()`` plus ALPN http/1.1), so that
    one is shared when it is there and verifies; otherwise a default context is made once.
    """
    return shared_verified_context() or _ssl.create_default_context()


@contextlib.asynccontextmanager
async def _expires_at(timers: Timers, when: float) -> AsyncIterator[None]:
    """``asyncio.timeout_at`` on ``timers``' clock: the block raises TimeoutError at ``when``."""
    async with asyncio.timeout(None) as scope:
        # A deadline in the past makes asyncio's own timeout fire at the next loop iteration.
        handle = timers.call_at(when, scope.reschedule, 0.0)
        try:
            yield
        finally:
            handle.cancel()


def _head_timed_out(proto: UpstreamProtocol, timeout: float, upload: _Upload | None) -> None:
    if upload is not None and upload.on_client:
        # The upstream is waiting for the rest of the client's body: the client stalled.
        detail = f"request body not received within {timeout:.3g}s"
        proto.set_exception(RequestBodyError(ErrorCode.REQUEST_TIMEOUT, detail))
        return
    proto.set_exception(aiohttp.ServerTimeoutError(f"no response head within {timeout:.3g}s"))


async def _from_client(body: AsyncIterable[bytes], upload: _Upload) -> AsyncIterator[bytes]:
    """The client's body chunks; its own failures become ``RequestBodyError`` (not the upstream's)."""
    chunks = body.__aiter__()
    while True:
        upload.on_client = True
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except RequestBodyError:
            raise
        except Exception as exc:
            detail = f"request body failed: {type(exc).__name__}"
            raise RequestBodyError(ErrorCode.BAD_REQUEST, detail) from exc
        finally:
            upload.on_client = False
        yield chunk


def _check_headers(method: str, target: str, headers: CIMultiDict[str]) -> None:
    for text in (method, target, *headers.keys(), *headers.values()):
        if "\r" in text or "\n" in text:
            raise ValueError(f"newline in request line or header: {text[:40]!r}")
