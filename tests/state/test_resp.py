"""The lean Redis client: against a real redis-server, and against a socket the test answers by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from sidecar.config.redis_address import parse_redis_url
from sidecar.state.resp import ReplyError, RespClient, RespConnectionError, RespTimeout
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[RespClient]:
    c = RespClient(redis_server.url, connect_timeout=1.0, read_timeout=1.0, name="resp-test")
    yield c
    await c.aclose()


class HandServer:
    """A TCP server whose replies the test writes itself; it keeps every byte it was sent."""

    def __init__(self) -> None:
        self.received = b""
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> HandServer:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        while chunk := await reader.read(65536):
            self.received += chunk

    async def reply(self, data: bytes) -> None:
        self.writers[-1].write(data)
        await self.writers[-1].drain()

    async def close(self) -> None:
        for w in self.writers:
            w.close()
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def hand() -> AsyncIterator[HandServer]:
    server = await HandServer().start()
    yield server
    await server.close()


async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(
    client: RespClient, redis_server: RedisServer
) -> None:
    """500 commands at once: each gets the reply to its own command, over a single connection."""
    replies = await asyncio.gather(*(client.execute("ECHO", f"n{i}") for i in range(500)))
    assert replies == [f"n{i}".encode() for i in range(500)]
    raw = aioredis.Redis.from_url(redis_server.url)
    clients = [c for c in await raw.client_list() if c.get("name") == "resp-test"]
    await raw.aclose()
    assert len(clients) == 1


async def test_the_typed_commands_read_what_redis_holds(client: RespClient) -> None:
    await client.execute("HSET", "h", "a", "1", "b", "2")
    await client.execute("ZADD", "z", 1, "one", 2, "two", 3, "three")
    assert await client.ping()
    assert await client.hget("h", "a") == b"1" and await client.hget("h", "none") is None
    assert await client.hgetall("h") == {b"a": b"1", b"b": b"2"}
    assert await client.zcard("z") == 3
    assert await client.zrange("z", 0, 1) == [b"one", b"two"]
    assert await client.zrevrange("z", 0, 1) == [b"three", b"two"]


async def test_an_error_reply_is_raised_and_the_connection_goes_on(client: RespClient) -> None:
    await client.execute("SET", "s", "text")
    with pytest.raises(ReplyError, match="WRONGTYPE"):
        await client.execute("HGET", "s", "f")
    assert await client.execute("GET", "s") == b"text"


async def test_a_script_the_server_forgot_is_sent_whole(client: RespClient) -> None:
    """EVALSHA first; after SCRIPT FLUSH the server answers NOSCRIPT and the script goes as EVAL."""
    script = client.register_script("return {KEYS[1], ARGV[1], 7}")
    assert await script(["k"], ["v"]) == [b"k", b"v", 7]
    await client.execute("SCRIPT", "FLUSH")
    assert await script(keys=["k2"], args=["v2"]) == [b"k2", b"v2", 7]
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]


async def test_password_database_and_name_are_set_on_connect(redis_server: RedisServer) -> None:
    """AUTH with the URL's password, SELECT its database; a wrong password fails the command."""
    admin = aioredis.Redis.from_url(redis_server.url)
    await admin.config_set("requirepass", "s3cret")
    base = f"redis://:s3cret@127.0.0.1:{redis_server.port}"
    on_3 = RespClient(f"{base}/3", connect_timeout=1, read_timeout=1, name="db-three")
    await on_3.execute("SET", "where", "three")
    wrong = RespClient(f"redis://:nope@127.0.0.1:{redis_server.port}/0", connect_timeout=1,
                       read_timeout=1)
    try:
        with pytest.raises(ReplyError, match=r"WRONGPASS|invalid"):
            await wrong.ping()
        look = aioredis.Redis.from_url(f"{base}/3")
        assert await look.get("where") == b"three"
        await look.aclose()
        assert await on_3.execute("CLIENT", "GETNAME") == b"db-three"
    finally:
        await admin.config_set("requirepass", "")
        await admin.aclose()
        await on_3.aclose()
        await wrong.aclose()


async def test_a_server_that_stops_answering_fails_every_waiter_at_the_read_timeout(
    hand: HandServer,
) -> None:
    """Replies owed and none for read_timeout: the connection is dropped, each waiter gets RespTimeout,
    and the next command connects again."""
    c = RespClient(hand.url, connect_timeout=1, read_timeout=0.2)
    waiters = [asyncio.ensure_future(c.execute("GET", f"k{i}")) for i in range(3)]
    await eventually(lambda: hand.received.count(b"GET") == 3, what="three commands sent")
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RespTimeout) for r in results), results
    again = asyncio.ensure_future(c.execute("PING"))
    await eventually(lambda: len(hand.writers) == 2, what="a second connection")
    await eventually(lambda: hand.received.endswith(b"PING\r\n"), what="the ping sent")
    await hand.reply(b"+PONG\r\n")
    assert await again == b"PONG"
    await c.aclose()


async def test_a_slow_reply_within_the_read_timeout_is_not_cut(hand: HandServer) -> None:
    """Replies that keep coming, each before read_timeout, keep the connection: progress, not age."""
    c = RespClient(hand.url, connect_timeout=1, read_timeout=2.0)
    waiters = [asyncio.ensure_future(c.execute("INCR", "n")) for _ in range(5)]
    await eventually(lambda: hand.received.count(b"INCR") == 5, what="five commands sent")
    for i in range(5):
        await asyncio.sleep(0.5)  # five replies 0.5 s apart: 2.5 s in all, over the read timeout
        await hand.reply(f":{i + 1}\r\n".encode())
    assert await asyncio.gather(*waiters) == [1, 2, 3, 4, 5]
    await c.aclose()


async def test_a_cancelled_command_does_not_shift_the_replies(hand: HandServer) -> None:
    """The caller of the first command gives up; its reply, when it comes, is not given to the second."""
    c = RespClient(hand.url, connect_timeout=1, read_timeout=5)
    first = asyncio.ensure_future(c.execute("GET", "a"))
    second = asyncio.ensure_future(c.execute("GET", "b"))
    await eventually(lambda: hand.received.count(b"GET") == 2, what="two commands sent")
    first.cancel()
    await hand.reply(b"$1\r\nA\r\n$1\r\nB\r\n")
    assert await second == b"B"
    with pytest.raises(asyncio.CancelledError):
        await first
    await c.aclose()


async def test_a_lost_connection_fails_its_waiters_and_the_next_command_reconnects(
    client: RespClient, redis_server: RedisServer
) -> None:
    assert await client.ping()
    redis_server.kill()
    with pytest.raises(RespConnectionError):
        await client.ping()
    await redis_server.start()
    assert await eventually(client.ping, retry_on=(RespConnectionError,), what="ping after restart")


async def test_nothing_listening_is_a_connection_error(hand: HandServer) -> None:
    url = hand.url
    await hand.close()
    c = RespClient(url, connect_timeout=1, read_timeout=1)
    with pytest.raises(RespConnectionError, match="can't connect"):
        await c.ping()
    await c.aclose()
    with pytest.raises(RespConnectionError, match="closed"):
        await c.ping()


@pytest.mark.parametrize(("url", "problem"), [
    ("http://r:6379/0", "redis:// or rediss://"),
    ("redis://r:6379/x", "database"),
    ("redis://r:99999/0", "valid URL"),
    ("rediss://r/0?ssl_ca_cert=/ca.pem", "unknown query argument 'ssl_ca_cert'"),
    ("rediss://r/0?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
])
def test_a_bad_url_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_redis_url(url)


def test_a_url_gives_every_part_of_the_address() -> None:
    a = parse_redis_url("rediss://bot:p%40ss@redis.internal:6380/4?ssl_cert_reqs=none&ssl_check_hostname=false")
    assert (a.host, a.port, a.db, a.username, a.password, a.tls) == (
        "redis.internal", 6380, 4, "bot", "p@ss", True)
    assert (a.cert_reqs, a.check_hostname) == ("none", False)
    assert parse_redis_url("redis://r").port == 6379
    assert "p@ss" not in repr(a)


async def test_a_connection_made_while_the_client_closes_is_not_kept() -> None:
    """aclose() while a connect is under way (here: waiting for AUTH's reply): the connection that
    comes up afterwards is closed at once and the command that asked for it fails; nothing more is
    sent on it (before, it was kept as the client's connection, open for good after aclose)."""
    received = bytearray()
    eof = asyncio.Event()
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while chunk := await reader.read(65536):
            received.extend(chunk)
        eof.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    c = RespClient(f"redis://:pw@127.0.0.1:{port}/0", connect_timeout=5, read_timeout=2)
    try:
        pending = asyncio.ensure_future(c.execute("GET", "k"))
        await eventually(lambda: b"AUTH" in received, what="AUTH sent")
        await c.aclose()
        writers[0].write(b"+OK\r\n")  # the connect completes after the close
        await writers[0].drain()
        with pytest.raises(RespConnectionError, match="closed"):
            await pending
        await asyncio.wait_for(eof.wait(), 5)  # the socket is not left open
        assert b"GET" not in received
    finally:
        for w in writers:
            w.close()
        server.close()
        await server.wait_closed()
