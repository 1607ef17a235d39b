"""Hostile input on both listeners, from raw sockets and from clients: answered 4xx, never a crash.

After each attack the sidecar must still answer ``/health/live`` on both listeners and forward a
normal request. The listeners are built exactly as ``sidecar.web.server`` builds them (``SidecarRunner``
with ``runner_kwargs``), with a short header read timeout so the slowloris test stays fast.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from sidecar.web.app import create_app, runner_kwargs
from sidecar.web.server import SidecarRunner
from sidecar.web.services import Services

from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider
from ..support.raw_http import raw_http

HEAD_TIMEOUT = 0.5


@dataclass
class Listeners:
    proxy: int
    ops: int
    fake: FakeProvider

    def port(self, role: str) -> int:
        return self.proxy if role == "proxy" else self.ops


@pytest.fixture
async def listeners(fake: FakeProvider) -> AsyncIterator[Listeners]:
    config = sidecar_config(provider("p", fake.url, max_request_body=1024))
    async with Services(config).running() as services:
        runners = []
        for role in ("proxy", "ops"):
            runner = SidecarRunner(create_app(config, role=role, services=services),  # type: ignore[arg-type]
                                   header_read_timeout=HEAD_TIMEOUT, **runner_kwargs(config))
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
            runners.append(runner)
        yield Listeners(runners[0].addresses[0][1], runners[1].addresses[0][1], fake)
        for runner in runners:
            await runner.cleanup()


async def assert_healthy(ls: Listeners) -> None:
    """Both listeners answer /health/live and the proxy still forwards a normal request."""
    seen = len(ls.fake.seen)
    async with aiohttp.ClientSession() as s:
        for port in (ls.proxy, ls.ops):
            async with s.get(f"http://127.0.0.1:{port}/health/live") as resp:
                assert resp.status == 200
        async with s.get(f"http://127.0.0.1:{ls.proxy}/p/normal") as resp:
            assert resp.status == 200 and await resp.read() == b'{"ok": true}'
    assert [x.raw_path for x in ls.fake.seen[seen:]] == ["/normal"]


def status_of(data: bytes) -> int | None:
    """The status of the first response in raw bytes; None when the server just closed."""
    if not data:
        return None
    assert data.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), data[:80]
    return int(data.split(b" ", 2)[1])


ROLES = ["proxy", "ops"]
MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"\x00\x01\x02\x03\r\n\r\n",
    b"GET /p/x HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    b"G\xc3\xa9T /p/x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /p/x\x00y HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /p/x HTTP/1.1\r\nHost: x\r\nNo-Colon-Here\r\n\r\n",
    b"GET /p/x HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("data", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_request_lines_get_400(listeners: Listeners, role: str, data: bytes) -> None:
    """A malformed request line or header line is answered 400 (or the connection closed), never 5xx."""
    status = status_of(await raw_http(listeners.port(role), data))
    assert status in (None, 400)
    assert listeners.fake.seen == []
    await assert_healthy(listeners)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("head", [
    b"X-Big: " + b"a" * 100_000 + b"\r\n",
    b"".join(b"X-H%d: v\r\n" % i for i in range(1000)),
    b"".join(b"X-Fill%d: %s\r\n" % (i, b"b" * 8000) for i in range(200)),
], ids=["one-100KB-header", "1000-headers", "1.6MB-of-headers"])
async def test_oversized_headers_get_431_or_400(listeners: Listeners, role: str, head: bytes) -> None:
    """Too long a header, too many headers or too large a head: 431 or 400, nothing forwarded."""
    data = b"GET /p/x HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n"
    assert status_of(await raw_http(listeners.port(role), data)) in (None, 400, 431)
    assert listeners.fake.seen == []
    await assert_healthy(listeners)


async def test_oversized_headers_from_a_client_get_431_or_400(listeners: Listeners) -> None:
    """The same through aiohttp's client: a clean 4xx answer, not a dropped connection."""
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{listeners.proxy}/p/x", headers={"X-Big": "a" * 20_000}) as r:
            assert r.status in (400, 431)
        many = {f"X-H{i}": "v" for i in range(300)}
        async with s.get(f"http://127.0.0.1:{listeners.proxy}/p/x", headers=many) as r:
            assert r.status in (400, 431)
    assert listeners.fake.seen == []
    await assert_healthy(listeners)


@pytest.mark.parametrize("head", [
    b"X-A: a\rInjected: yes\r\n",
    b"X-A: a\nInjected: yes\r\n",
    b"X-A: a\r\n Injected: yes\r\n",  # obsolete line folding
    b"X-A: a\x00Injected: yes\r\n",
])
async def test_crlf_in_header_values_never_makes_a_header_upstream(listeners: Listeners, head: bytes) -> None:
    """A CR, LF, fold or NUL inside a header value is refused or kept inside it: no injected header."""
    data = b"GET /p/x HTTP/1.1\r\nHost: x\r\n" + head + b"Connection: close\r\n\r\n"
    assert status_of(await raw_http(listeners.proxy, data)) in (None, 200, 400)
    for seen in listeners.fake.seen:
        assert "Injected" not in seen.headers
    await assert_healthy(listeners)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("line", [
    b"GET http://evil.example/p/x HTTP/1.1",
    b"GET http://127.0.0.1/p/x HTTP/1.1",
    b"CONNECT evil.example:443 HTTP/1.1",
    b"CONNECT 127.0.0.1:22 HTTP/1.1",
    b"OPTIONS * HTTP/1.1",
])
async def test_absolute_and_authority_forms_are_refused(listeners: Listeners, role: str, line: bytes) -> None:
    """The sidecar is no open proxy: absolute-form, authority-form and CONNECT reach no provider."""
    data = line + b"\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    status = status_of(await raw_http(listeners.port(role), data))
    assert status is None or 400 <= status < 500
    assert listeners.fake.seen == []
    await assert_healthy(listeners)


async def test_connect_from_a_client_is_refused(listeners: Listeners) -> None:
    """A client's CONNECT through the proxy listener gets a 4xx and opens no tunnel."""
    url = f"http://127.0.0.1:{listeners.proxy}/p/x"
    async with aiohttp.ClientSession() as s, s.request("CONNECT", url) as r:
        assert 400 <= r.status < 500 or r.status == 200
    for seen in listeners.fake.seen:
        assert seen.method == "CONNECT" and seen.raw_path == "/x"  # forwarded as a plain request, at most
    await assert_healthy(listeners)


@pytest.mark.parametrize("target", [
    "/p/../admin", "/p/../metrics", "/p/%2e%2e/metrics", "/p/..%2f..%2fmetrics", "/p%2f..%2fmetrics",
    "//evil.example/x", "/p//evil.example/x", "/p/%2F%2Fevil.example", "/p/x%00y", "/p/x%0d%0aInjected:%20y",
])
async def test_traversal_and_encoded_slashes_stay_on_the_provider(listeners: Listeners, target: str) -> None:
    """Dot segments and encoded slashes never reach the own endpoints or another host."""
    data = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    raw = await raw_http(listeners.proxy, data)
    assert b"sidecar_requests_total" not in raw and b"# HELP" not in raw
    for seen in listeners.fake.seen:
        assert seen.headers["Host"] == f"127.0.0.1:{listeners.fake.port}"
        assert "Injected" not in seen.headers
    await assert_healthy(listeners)


SMUGGLING = [
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
    b"0\r\n\r\nGET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n"
    b"GET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 44\r\n\r\n"
    b"GET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
    b"GET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
    b"GET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    b"GET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n"
    b"abcdGET /p/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("data", SMUGGLING, ids=range(len(SMUGGLING)))
async def test_smuggling_pairs_are_refused(listeners: Listeners, role: str, data: bytes) -> None:
    """Conflicting or obfuscated framing is answered 400; no hidden second request reaches a provider."""
    status = status_of(await raw_http(listeners.port(role), data))
    assert status in (None, 400)
    assert not [s for s in listeners.fake.seen if "smuggled" in s.raw_path]
    assert listeners.fake.seen == []
    await assert_healthy(listeners)


async def test_body_over_the_limit_is_413(listeners: Listeners) -> None:
    """A declared body over max_request_body is 413 body_too_large and is not forwarded."""
    url = f"http://127.0.0.1:{listeners.proxy}/p/x"
    async with aiohttp.ClientSession() as s, s.post(url, data=b"a" * 5000) as r:
        assert r.status == 413 and r.headers["X-Sidecar-Error"] == "body_too_large"
    assert listeners.fake.seen == []
    await assert_healthy(listeners)


async def test_chunked_body_over_the_limit_never_arrives_whole(listeners: Listeners) -> None:
    """A chunked body over the limit is refused (413) or cut: the provider never gets all of it."""

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b"b" * 1000

    async with aiohttp.ClientSession() as s:
        try:
            async with s.post(f"http://127.0.0.1:{listeners.proxy}/p/x", data=chunks()) as r:
                assert r.status in (413, 502)
        except aiohttp.ClientError:
            pass  # the sidecar cut the connection mid-upload: acceptable
    assert all(seen.body_size <= 64 * 1024 for seen in listeners.fake.seen)
    await assert_healthy(listeners)


async def _trickle(port: int, stop_after: float) -> tuple[bytes, float]:
    """Send a request head one header every 50 ms; return what came back and when it ended."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    writer.write(b"GET /p/x HTTP/1.1\r\nHost: x\r\n")
    try:
        i = 0
        while time.monotonic() - t0 < stop_after and not reader.at_eof():
            writer.write(b"X-Slow-%d: v\r\n" % i)
            await writer.drain()
            i += 1
            try:
                data = await asyncio.wait_for(reader.read(), 0.05)
                return data, time.monotonic() - t0
            except TimeoutError:
                continue
        return b"", time.monotonic() - t0
    except ConnectionError:
        return b"", time.monotonic() - t0
    finally:
        writer.close()


@pytest.mark.parametrize("role", ROLES)
async def test_slowloris_is_cut_by_the_header_read_timeout(listeners: Listeners, role: str) -> None:
    """Twenty connections trickling their heads are answered 408 and closed after the header timeout."""
    results = await asyncio.gather(*(_trickle(listeners.port(role), 5.0) for _ in range(20)))
    for data, took in results:
        assert status_of(data) == 408
        assert HEAD_TIMEOUT * 0.9 <= took < HEAD_TIMEOUT + 1.5
    assert listeners.fake.seen == []
    await assert_healthy(listeners)


async def test_header_timeout_spares_slow_bodies_and_idle_keep_alive(listeners: Listeners) -> None:
    """A body slower than the header timeout, and an idle keep-alive connection, both still work."""
    reader, writer = await asyncio.open_connection("127.0.0.1", listeners.proxy)
    try:
        writer.write(b"POST /p/x HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n")
        for part in (b"ab", b"cd", b"ef"):
            await asyncio.sleep(HEAD_TIMEOUT * 0.7)  # paced upload: the point of the test
            writer.write(part)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert status_of(head) == 200
        await asyncio.wait_for(reader.readexactly(len(b'{"ok": true}')), 5)
        await asyncio.sleep(HEAD_TIMEOUT * 2)  # idle on keep-alive, longer than the head timeout
        writer.write(b"GET /p/again HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)) == 200
    finally:
        writer.close()
    assert [s.body for s in listeners.fake.seen] == [b"abcdef", b""]


async def test_thousands_of_idle_connections(listeners: Listeners) -> None:
    """2000 idle connections (1000 per listener) leave both listeners answering."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4096 + 512  # both ends of each connection live in this process
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        pytest.skip(f"ulimit -n is {hard}; 2000 connections need {need}")
    conns = []
    try:
        for port in (listeners.proxy, listeners.ops):
            conns += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(1000)))
        await assert_healthy(listeners)
    finally:
        for _, writer in conns:
            writer.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await assert_healthy(listeners)
