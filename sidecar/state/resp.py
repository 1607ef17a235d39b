"""A lean Redis client: one pipelined connection, hiredis's parser, the few commands the sidecar sends.

Why not redis-py's asyncio client: a command there costs about 350 Python calls (a pool checkout
under a lock, a stream read under ``wait_for``, observability hooks), some 170 µs of CPU on the
benchmark machine, on every paid request with a Redis ledger and on every rate-limited one. Here a
command is packed by hiredis, written into the connection's transport, and answered through a FIFO
of futures fed by ``hiredis.Reader`` (the C parser redis-py uses too). Every caller shares the one
connection, so concurrent requests are pipelined without asking.

It does: ``redis://`` and ``rediss://`` URLs (``config.redis_address``), AUTH, SELECT and CLIENT
SETNAME on connect, ``Script`` (EVALSHA, and EVAL when the server answers NOSCRIPT), a connect
timeout, and a read timeout: when replies are owed and none has come for ``read_timeout`` seconds
(a hung or vanished server) the connection is dropped, failing every command waiting on it with
``RespTimeout``. A dropped connection is made again by the next command. Nothing is retried: a
script whose reply was lost may have run, and only the caller knows whether running it twice is
harmless. A client made with ``push`` may SUBSCRIBE: each published message's data goes to
``push``, and ``on_lost`` hears when the connection (and so the subscription) ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, cast

import hiredis

from ..config.redis_address import RedisAddress, parse_redis_url

__all__ = [
    "ReplyError", "RespClient", "RespConnectionError", "RespError", "RespTimeout", "Script", "tls_context",
]

Arg = object  # str, bytes, int or float: what hiredis.pack_command takes
_pack = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)  # its stub types a 1-tuple


class RespError(Exception):
    """Any failure of a command."""


class ReplyError(RespError):
    """The server answered with an error (``NOSCRIPT``, ``LOADING``, ``READONLY``, ``WRONGTYPE`` ...)."""


class RespConnectionError(RespError, ConnectionError):
    """No connection, or it was lost before the reply came."""


class RespTimeout(RespConnectionError, TimeoutError):
    """No reply within the read timeout, or no connection within the connect timeout."""


class _Connection(asyncio.Protocol):
    """One socket: commands go out in order, replies come back in the same order."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, read_timeout: float,
        push: Callable[[bytes], None] | None = None, on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.loop = loop
        self.read_timeout = read_timeout
        self.push = push  # a subscribed connection's published messages go here, not to a waiter
        self.on_lost = on_lost
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: RespConnectionError | None = None
        self.progress = 0.0  # when a reply last came, or a command was sent to an idle connection
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False
        self._out: list[bytes] = []  # commands packed this turn of the loop, written together

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's classes

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.lost is not None or self.transport is None:
            raise self.lost or RespConnectionError("not connected")
        waiter = self.loop.create_future()
        if not self.waiters:
            self.progress = self.loop.time()
            if self._timer is None:
                self._timer = self.loop.call_at(self.progress + self.read_timeout, self._check)
        self.waiters.append(waiter)
        if not self._out:  # the first command of this turn of the loop: flush them all after it
            self.loop.call_soon(self._flush)
        self._out.append(packed)
        return waiter

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and self.lost is None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # one syscall

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self.progress = self.loop.time()
        waiters = self.waiters
        while (reply := self.reader.gets()) is not False:
            if self.push is not None and type(reply) is list and reply[0] == b"message":
                self.push(reply[2])
                continue
            if not waiters:  # a reply nobody asked for: the stream can't be trusted any more
                self._drop(RespConnectionError("unexpected reply from the server"))
                return
            waiter = waiters.popleft()
            if waiter.done():  # its caller gave up (cancelled): the reply is dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(ReplyError(str(reply)))
            else:
                waiter.set_result(reply)

    def eof_received(self) -> bool:
        # The server went away: close the transport, and let a command sent before connection_lost
        # runs make a new connection rather than fail on this one.
        self.lost = self.lost or RespConnectionError("connection closed by the server")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timed_out:
            error: RespConnectionError = RespTimeout(f"no reply within {self.read_timeout}s")
        else:
            why = f"connection lost: {exc}" if exc else "connection closed by the server"
            error = RespConnectionError(why)
        self.lost = self.lost or error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self.lost)
        if self.on_lost is not None:
            self.on_lost()

    def close(self) -> None:
        self._drop(RespConnectionError("client closed"))

    def _check(self) -> None:
        self._timer = None
        if not self.waiters or self.lost is not None:
            return
        due = self.progress + self.read_timeout
        if self.loop.time() >= due:
            self._timed_out = True
            self._drop(RespTimeout(f"no reply within {self.read_timeout}s"))
        else:
            self._timer = self.loop.call_at(due, self._check)

    def _drop(self, error: RespConnectionError) -> None:
        self.lost = self.lost or error
        if self.transport is not None:
            self.transport.abort()  # connection_lost fails the waiters


class RespClient:
    """A client for one Redis; connects on first use. ``aclose`` ends it."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        read_timeout: float,
        name: str | None = None,
        push: Callable[[bytes], None] | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.address = parse_redis_url(url)
        self._push = push
        self._on_lost = on_lost
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.name = name
        self._ssl: ssl.SSLContext | None = None  # made at the first TLS connect (it reads files)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False

    def register_script(self, source: str) -> Script:
        return Script(self, source)

    async def execute(self, *args: Arg) -> Any:
        """Send one command, return its reply (bytes, int, None, or a list of them)."""
        connection = self._connection
        if connection is None or connection.lost is not None:
            connection = await self._connect()
        return await connection.send(_pack(args))

    async def ping(self) -> bool:
        return bool(await self.execute("PING") == b"PONG")

    async def hget(self, key: str, field: str) -> bytes | None:
        reply: bytes | None = await self.execute("HGET", key, field)
        return reply

    async def hgetall(self, key: str) -> dict[bytes | str, bytes | str | None]:
        flat = await self.execute("HGETALL", key)
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def zcard(self, key: str) -> int:
        return int(await self.execute("ZCARD", key))

    async def zrange(self, key: str, start: int, stop: int) -> list[bytes]:
        reply: list[bytes] = await self.execute("ZRANGE", key, start, stop)
        return reply

    async def zrevrange(self, key: str, start: int, stop: int) -> list[bytes]:
        reply: list[bytes] = await self.execute("ZREVRANGE", key, start, stop)
        return reply

    def disconnect(self) -> None:
        """Drop the connection (commands waiting on it fail); the next command connects again."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def aclose(self) -> None:
        self._closed = True
        self.disconnect()

    async def _connect(self) -> _Connection:
        if self._closed:
            raise RespConnectionError("client closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, done: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not done.cancelled() and done.exception() is None:
            connection = done.result()
            if self._closed:  # aclose() came while connecting: keep nothing open, send nothing
                connection.close()
            else:
                self._connection = connection

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        a = self.address
        connection: _Connection | None = None
        try:
            if a.tls and self._ssl is None:
                self._ssl = tls_context(a)
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop, self.read_timeout, self._push, self._on_lost),
                    a.host, a.port, ssl=self._ssl,
                    server_hostname=a.host if self._ssl is not None else None,
                )
                hello: list[Sequence[Arg]] = []
                if a.password is not None:
                    hello.append(("AUTH", a.username, a.password) if a.username else ("AUTH", a.password))
                if a.db:
                    hello.append(("SELECT", a.db))
                replies = await asyncio.gather(
                    *(connection.send(_pack(tuple(c))) for c in hello), return_exceptions=True
                )
                failed = next((r for r in replies if isinstance(r, BaseException)), None)
                if failed is not None:
                    raise failed
            if self.name:  # a label for CLIENT LIST: its reply is not waited for
                connection.send(_pack(("CLIENT", "SETNAME", self.name))).add_done_callback(_ignore)
        except BaseException as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, TimeoutError):
                raise RespTimeout(
                    f"no connection to {a.host}:{a.port} within {self.connect_timeout}s"
                ) from None
            if isinstance(exc, OSError):  # ssl.SSLError, and a connection lost in the handshake
                raise RespConnectionError(f"can't connect to {a.host}:{a.port}: {exc}") from exc
            raise  # the server's refusal (a ReplyError: AUTH, SELECT), or a cancellation
        return connection


class Script:
    """A Lua script run by its SHA-1; sent whole once a server says it doesn't know it."""

    def __init__(self, client: RespClient, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()) -> Any:
        try:
            return await self.client.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.client.execute("EVAL", self.source, len(keys), *keys, *args)


def _ignore(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()


def tls_context(a: RedisAddress) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=a.ca_certs, capath=a.ca_path)
    if a.certfile:
        context.load_cert_chain(a.certfile, a.keyfile, a.key_password)
    context.check_hostname = a.check_hostname and a.cert_reqs != "none"
    context.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL}.get(
        a.cert_reqs, ssl.CERT_REQUIRED
    )
    return context
