"""The lean upstream client against a real fake provider: framing, reuse, limits, failures."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from sidecar.upstream.h1pool import H1Pool, PoolTimeout

from ..support.fake_provider import FakeProvider, Reply
from ..support.polling import eventually
from ..support.timers import ManualTimers


def _pool(fake: FakeProvider, **kwargs: object) -> H1Pool:
    return H1Pool(fake.url, **kwargs)  # type: ignore[arg-type]


async def _get(pool: H1Pool, target: str = "/x", seconds: float = 5.0) -> tuple[int, bytes]:
    resp = await pool.request("GET", target, CIMultiDict(), None, seconds)
    return resp.status, await resp.read()


async def _until(what: str, done: Callable[[], bool]) -> None:
    """Poll (real time, 5 s at most) until ``done()``: for events on real sockets."""
    loop = asyncio.get_running_loop()
    end = loop.time() + 5
    while not done():
        assert loop.time() < end, f"never happened: {what}"
        await asyncio.sleep(0.005)


async def test_keep_alive_connection_is_reused(fake: FakeProvider) -> None:
    """Sequential requests share one connection once each body is read."""
    pool = _pool(fake)
    for _ in range(5):
        assert await _get(pool) == (200, b'{"ok": true}')
    assert pool.open_connections == 1 and pool.idle_connections == 1
    assert len(fake.seen) == 5
    await pool.close()
    assert pool.open_connections == 0


async def test_request_line_headers_and_host(fake: FakeProvider) -> None:
    """The target goes out as is, with the bot's headers, Host of the upstream and nothing invented."""
    pool = _pool(fake)
    headers = CIMultiDict([("X-A", "1"), ("X-A", "2"), ("Accept", "a/b")])
    resp = await pool.request("GET", "/p%2Fq/r?x=1&y=%20", headers, None, 5.0)
    await resp.read()
    seen = fake.seen[0]
    assert seen.raw_path == "/p%2Fq/r?x=1&y=%20"
    assert seen.headers.getall("X-A") == ["1", "2"]
    assert seen.headers["Host"] == f"127.0.0.1:{fake.port}"
    assert "User-Agent" not in seen.headers and "Content-Length" not in seen.headers
    await pool.close()


async def test_bytes_body_gets_its_own_content_length(fake: FakeProvider) -> None:
    """A small body is sent with a Content-Length that matches it, whatever the client said."""
    pool = _pool(fake)
    headers = CIMultiDict([("content-length", "999")])
    resp = await pool.request("POST", "/x", headers, b"hello", 5.0)
    await resp.read()
    assert fake.seen[0].body == b"hello" and fake.seen[0].headers["Content-Length"] == "5"
    resp = await pool.request("POST", "/x", CIMultiDict(), None, 5.0)
    await resp.read()
    assert fake.seen[1].headers["Content-Length"] == "0"
    await pool.close()


async def test_streamed_body_is_chunked_unless_its_length_is_known(fake: FakeProvider) -> None:
    """An async-iterable body is sent chunked, or raw with the client's Content-Length."""

    async def body() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"z" * 100_000

    pool = _pool(fake)
    resp = await pool.request("POST", "/x", CIMultiDict(), body(), 5.0)
    await resp.read()
    assert fake.seen[0].body_size == 800_000
    assert fake.seen[0].headers["Transfer-Encoding"] == "chunked"
    resp = await pool.request("PUT", "/x", CIMultiDict([("Content-Length", "800000")]), body(), 5.0)
    await resp.read()
    assert fake.seen[1].body_size == 800_000 and "Transfer-Encoding" not in fake.seen[1].headers
    assert pool.open_connections == 1  # both bodies were complete: the connection was kept
    await pool.close()


async def test_chunked_and_content_length_responses_stream(fake: FakeProvider) -> None:
    """Both response framings arrive whole; the connection is reused after each."""
    size = 3 * 1024 * 1024
    fake.then(
        Reply(stream_bytes=size, content_length=False, headers={}),
        Reply(stream_bytes=size, content_length=True, headers={}),
    )
    pool = _pool(fake)
    for expect_length in (None, size):
        resp = await pool.request("GET", "/big", CIMultiDict(), None, 5.0)
        assert resp.content_length == expect_length
        got = 0
        async for chunk in resp.content.iter_any():
            got += len(chunk)
        resp.release()
        assert got == size
    assert pool.open_connections == 1
    await pool.close()


async def test_head_answer_has_no_body_and_keeps_the_connection(fake: FakeProvider) -> None:
    """HEAD: Content-Length is reported, no body is waited for, the next GET works."""
    fake.then(Reply(body=b"x" * 1234, headers={}))
    pool = _pool(fake)
    resp = await pool.request("HEAD", "/x", CIMultiDict(), None, 5.0)
    assert resp.status == 200 and resp.content_length == 1234
    assert await resp.read() == b""
    assert await _get(pool) == (200, b'{"ok": true}')
    assert pool.open_connections == 1
    await pool.close()


async def test_reset_mid_body_is_a_payload_error(fake: FakeProvider) -> None:
    """A body cut by the upstream fails the read and the connection is not reused."""
    fake.then(Reply(stream_bytes=4 * 1024 * 1024, reset_after=1024 * 1024, headers={}))
    pool = _pool(fake)
    resp = await pool.request("GET", "/x", CIMultiDict(), None, 5.0)
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
        await resp.read()
    resp.close()
    assert pool.open_connections == 0
    assert await _get(pool) == (200, b'{"ok": true}')
    await pool.close()


async def test_reset_before_the_head_is_a_connection_error(fake: FakeProvider) -> None:
    """A connection dropped instead of answered raises a connection error, never a retry inside."""
    fake.then(Reply(reset=True))
    pool = _pool(fake)
    with pytest.raises(aiohttp.ClientConnectionError):
        await _get(pool)
    assert len(fake.seen) == 1 and pool.open_connections == 0
    await pool.close()


async def test_head_timeout_raises_and_drops_the_connection(fake: FakeProvider) -> None:
    """No head within the timeout: a TimeoutError subclass at the deadline, not before, and that
    connection is closed."""
    gate = asyncio.Event()
    fake.then(Reply(hold=gate))
    timers = ManualTimers()
    pool = _pool(fake, timers=timers)
    call = asyncio.ensure_future(_get(pool, seconds=5.0))
    await _until("the request reached the provider", lambda: len(fake.seen) == 1)
    timers.advance(4.9)
    await asyncio.sleep(0)
    assert not call.done()
    timers.advance(0.1)
    with pytest.raises(TimeoutError, match="no response head within 5s"):
        await call
    assert pool.open_connections == 0 and timers.pending == 0
    gate.set()
    await pool.close()


async def test_connection_refused_is_an_os_error() -> None:
    """Nothing listening: a ClientOSError (an OSError), classified as a connect error upstream."""
    pool = H1Pool("http://127.0.0.1:9", connect_timeout=1.0)
    with pytest.raises(aiohttp.ClientOSError):
        await pool.request("GET", "/", CIMultiDict(), None, 2.0)
    assert pool.open_connections == 0


async def test_pool_limit_queues_callers_in_order(fake: FakeProvider) -> None:
    """With limit 2, four requests use two connections, and the two that wait are sent in arrival order."""
    gates = [asyncio.Event() for _ in range(4)]
    fake.then(*(Reply(hold=gate) for gate in gates))  # the i-th request to arrive waits on gates[i]
    pool = _pool(fake, limit=2)
    calls = []
    for i in range(4):
        calls.append(asyncio.ensure_future(_get(pool, f"/{i}")))
        await asyncio.sleep(0)  # each caller queues before the next one starts

    async def seen(n: int) -> list[str]:
        await eventually(lambda: len(fake.seen), until=lambda count: count >= n,
                         what=f"{n} requests at the provider")
        return [s.raw_path for s in fake.seen]

    assert sorted(await seen(2)) == ["/0", "/1"]
    gates[0].set()
    assert (await seen(3))[2] == "/2"
    gates[1].set()
    assert (await seen(4))[3] == "/3"
    for gate in gates:
        gate.set()
    results = await asyncio.gather(*calls)
    assert [status for status, _ in results] == [200] * 4
    assert pool.open_connections == 2
    await pool.close()


async def test_waiting_for_the_pool_counts_against_the_timeout(fake: FakeProvider) -> None:
    """A caller that can't get a connection in time times out (PoolTimeout) without sending anything."""
    gate = asyncio.Event()
    fake.then(Reply(hold=gate))
    timers = ManualTimers()
    pool = _pool(fake, limit=1, timers=timers)
    slow = asyncio.ensure_future(_get(pool, seconds=60.0))
    await _until("the first request reached the provider", lambda: len(fake.seen) == 1)
    queued = asyncio.ensure_future(_get(pool, seconds=1.0))
    await _until("the second caller queued for the connection", lambda: pool.waiting == 1)
    timers.advance(1.0)
    with pytest.raises(PoolTimeout):
        await queued
    assert pool.waiting == 0
    gate.set()
    assert (await slow)[0] == 200
    assert len(fake.seen) == 1 and pool.open_connections == 1
    await pool.close()


async def test_idle_connections_expire(fake: FakeProvider) -> None:
    """An idle connection is kept until idle_timeout, closed then, and a new one opened on demand."""
    timers = ManualTimers()
    pool = _pool(fake, idle_timeout=15.0, timers=timers)
    await _get(pool)
    assert pool.idle_connections == 1
    timers.advance(14.9)
    assert pool.idle_connections == 1
    timers.advance(0.1)
    assert pool.idle_connections == 0 and pool.open_connections == 0
    assert await _get(pool) == (200, b'{"ok": true}')
    assert pool.open_connections == 1
    await pool.close()
    assert timers.pending == 0


async def test_unread_body_closes_the_connection(fake: FakeProvider) -> None:
    """Releasing an answer whose body was not read closes its connection instead of reusing it."""
    fake.then(Reply(stream_bytes=2 * 1024 * 1024, headers={}))
    pool = _pool(fake)
    resp = await pool.request("GET", "/x", CIMultiDict(), None, 5.0)
    resp.release()
    assert pool.open_connections == 0
    await pool.close()


async def test_newline_in_a_header_is_refused(fake: FakeProvider) -> None:
    """A CR or LF in a header value never reaches the wire (no header injection)."""
    pool = _pool(fake)
    with pytest.raises(ValueError):
        await pool.request("GET", "/x", CIMultiDict([("X-A", "a\r\nX-Evil: 1")]), None, 5.0)
    assert fake.seen == []
    await pool.close()


def test_host_header_and_prefix() -> None:
    """Default ports are left out of Host; a path in the upstream URL becomes the target prefix."""
    assert H1Pool("https://api.example.com/v2/")._host_line == "Host: api.example.com\r\n"
    assert H1Pool("http://h:8080")._host_line == "Host: h:8080\r\n"
    assert H1Pool("http://[::1]:81")._host_line == "Host: [::1]:81\r\n"
    assert H1Pool("https://api.example.com/v2/").prefix == "/v2"
    with pytest.raises(ValueError):
        H1Pool("ftp://x")


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI)."""
    d = tmp_path_factory.mktemp("tls")
    key, crt = str(d / "key.pem"), str(d / "cert.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return crt, key


async def _tls_ok(request: web.Request) -> web.Response:
    return web.Response(text="tls ok")


async def _tls_server(cert: tuple[str, str]) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/x", _tls_ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*cert)
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx).start()
    return runner, runner.addresses[0][1]


async def test_tls_verifies_the_certificate(cert: tuple[str, str]) -> None:
    """https: an untrusted certificate is refused (an OSError); a trusted one answers."""
    runner, port = await _tls_server(cert)
    try:
        pool = H1Pool(f"https://127.0.0.1:{port}")
        with pytest.raises(ssl.SSLCertVerificationError):
            await pool.request("GET", "/x", CIMultiDict(), None, 5.0)
        assert pool.open_connections == 0
        trusted = H1Pool(f"https://127.0.0.1:{port}", ssl_context=ssl.create_default_context(cafile=cert[0]))
        assert await _get(trusted) == (200, b"tls ok")
        await trusted.close()
    finally:
        await runner.cleanup()


def test_https_pools_share_one_verifying_context() -> None:
    """Every https provider uses one context (each loads the CA store), and it verifies hosts."""
    a, b = H1Pool("https://a.example"), H1Pool("https://b.example:8443")
    assert a._ssl is not None and a._ssl is b._ssl
    assert a._ssl.verify_mode == ssl.CERT_REQUIRED and a._ssl.check_hostname


async def test_body_delimited_by_close_is_read_to_the_end() -> None:
    """An answer with neither Content-Length nor chunking ends when the upstream closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"q" * 100_000)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        pool = H1Pool(f"http://127.0.0.1:{port}")
        assert await _get(pool) == (200, b"q" * 100_000)
        assert pool.open_connections == 0  # Connection: close is honoured
        await pool.close()
    finally:
        server.close()
        await server.wait_closed()
