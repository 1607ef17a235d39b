"""Forwarding through real fake providers on loopback: what the client gets, what the provider sees."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging

import aiohttp
import pytest

from sidecar.config import Timeouts
from sidecar.web.app import SERVICES

from ..support.configs import SECRET, keyed, provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.metric_samples import metric
from ..support.polling import eventually
from ..support.raw_http import raw_get, raw_http


async def test_get_is_forwarded_with_path_query_and_headers(fake: FakeProvider, sidecar) -> None:
    """Path and query pass unchanged, the response comes back whole with attempts and request id."""
    fake.then(Reply(status=201, body=b'{"id": "p1"}', headers={"X-Up": "1"}))
    client = await sidecar(sidecar_config(provider("replicate", fake.url)))
    resp = await client.get("/replicate/v1/predictions/p1?x=1&y=a%20b", headers={"X-Mine": "a"})
    assert resp.status == 201
    assert await resp.read() == b'{"id": "p1"}'
    assert resp.headers["X-Up"] == "1"
    assert resp.headers["X-Sidecar-Attempts"] == "1"
    seen = fake.seen[0]
    assert seen.raw_path == "/v1/predictions/p1?x=1&y=a%20b"
    assert seen.headers["X-Mine"] == "a"
    assert seen.headers["X-Request-Id"] == resp.headers["X-Request-Id"]
    assert seen.headers["Host"] == f"127.0.0.1:{fake.port}"


async def test_upstream_path_prefix_is_kept(fake: FakeProvider, sidecar) -> None:
    """An upstream with a path keeps it as a prefix; a bare provider goes to the upstream root."""
    client = await sidecar(sidecar_config(provider("sb", fake.url + "/api/v2/")))
    await (await client.get("/sb/x")).read()
    await (await client.get("/sb")).read()
    assert [s.raw_path for s in fake.seen] == ["/api/v2/x", "/api/v2/"]


async def test_client_request_id_is_kept(fake: FakeProvider, sidecar) -> None:
    """A request id the client sent is forwarded and returned unchanged."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get("/p/x", headers={"X-Request-Id": "abc-1"})
    assert resp.headers["X-Request-Id"] == "abc-1"
    assert fake.seen[0].headers["X-Request-Id"] == "abc-1"


async def test_auth_is_injected_only_when_absent(fake: FakeProvider, sidecar) -> None:
    """The provider key is added when the client sent none, and never replaces the client's."""
    client = await sidecar(sidecar_config(keyed("p", fake.url)))
    await (await client.get("/p/a")).read()
    await (await client.get("/p/b", headers={"Authorization": "Bearer mine"})).read()
    assert fake.seen[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert fake.seen[1].headers.getall("Authorization") == ["Bearer mine"]


async def test_hop_by_hop_headers_are_dropped_both_ways(fake: FakeProvider, sidecar) -> None:
    """Connection-named and hop-by-hop headers never cross; the sidecar's operation header stays."""
    fake.then(Reply(headers={"Keep-Alive": "timeout=5", "X-Kept": "y", "Proxy-Authenticate": "x"}))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get(
        "/p/x",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "TE": "trailers",
            "X-Sidecar-Operation": "my_op",
            "Proxy-Authorization": "Basic x",
        },
    )
    await resp.read()
    seen = fake.seen[0].headers
    for name in ("X-Secret-Hop", "TE", "X-Sidecar-Operation", "Proxy-Authorization"):
        assert name not in seen
    assert "Keep-Alive" not in resp.headers and "Proxy-Authenticate" not in resp.headers
    assert resp.headers["X-Kept"] == "y"


async def test_no_headers_are_invented(fake: FakeProvider, sidecar) -> None:
    """The upstream sees no User-Agent, Accept or X-Forwarded-* the bot did not send."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    await (
        await client.get("/p/x", skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"))
    ).read()
    seen = fake.seen[0].headers
    assert "User-Agent" not in seen and "Accept" not in seen
    assert not [h for h in seen if h.lower().startswith("x-forwarded")]


async def test_content_encoding_passes_untouched(fake: FakeProvider, sidecar) -> None:
    """Gzip bodies are neither decompressed on the way up nor on the way down."""
    packed = gzip.compress(b"hello" * 1000)
    fake.then(Reply(body=packed, headers={"Content-Encoding": "gzip"}))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    async with aiohttp.ClientSession(auto_decompress=False) as raw:
        resp = await raw.post(
            client.make_url("/p/x"), data=packed, headers={"Content-Encoding": "gzip"}
        )
        assert await resp.read() == packed
    assert fake.seen[0].body == packed
    assert fake.seen[0].headers["Content-Encoding"] == "gzip"
    assert resp.headers["Content-Encoding"] == "gzip"


async def test_redirects_are_returned_not_followed(fake: FakeProvider, sidecar) -> None:
    """A 302 from an ordinary provider goes back to the client as is."""
    fake.then(Reply(status=302, body=b"", headers={"Location": "https://elsewhere.example/x"}))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get("/p/x", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "https://elsewhere.example/x"
    assert len(fake.seen) == 1


async def test_head_keeps_content_length(fake: FakeProvider, sidecar) -> None:
    """A HEAD answer keeps the upstream's Content-Length and has no body."""
    fake.then(Reply(body=b"x" * 1234, headers={}))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.head("/p/x")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "1234"


async def test_unknown_provider_lists_known_ones(sidecar, fake: FakeProvider) -> None:
    """An unknown first segment is a JSON 404 naming the providers that exist."""
    client = await sidecar(sidecar_config(provider("replicate", fake.url)))
    resp = await client.get("/nope/x")
    assert resp.status == 404
    assert resp.headers["X-Sidecar-Error"] == "unknown_provider"
    assert resp.headers["X-Sidecar-Attempts"] == "0"
    body = await resp.json()
    assert body["error"] == "unknown_provider"
    assert body["known_providers"] == ["replicate"]


async def test_odd_paths_get_json_and_never_change_the_host(fake: FakeProvider, sidecar) -> None:
    """Traversal, double slashes, encoded slashes and newlines stay inside the provider or get JSON."""
    client = await sidecar(sidecar_config(provider("replicate", fake.url)))
    for target, status in (
        ("/replicate/../admin/breakers", 200),
        ("/replicate/%2e%2e/%2Fevil", 200),
        ("/replicate/a%0ab", 200),
        ("//evil.example/x", 404),
        ("/%0a", 404),
        ("/health%2Flive", 404),
        ("/admin%2F..%2Freplicate", 404),
    ):
        got, body = await raw_get(client.port, target)
        assert got == status, target
        if status == 404:
            assert json.loads(body)["error"] in ("unknown_provider", "not_found"), target
    assert [s.raw_path for s in fake.seen] == ["/../admin/breakers", "/%2e%2e/%2Fevil", "/a%0ab"]


async def test_absolute_form_target_is_refused(fake: FakeProvider, sidecar) -> None:
    """A request target naming another host is a 400, never a forward to that host."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    data = await raw_http(
        client.port,
        b"GET http://evil.example/p/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 400")
    assert b"bad_request" in data
    assert fake.seen == []


async def test_unconfigured_provider(sidecar) -> None:
    """A provider with an empty upstream answers 503 provider_unconfigured."""
    client = await sidecar(sidecar_config(provider("supabase", "")))
    resp = await client.get("/supabase/rest/v1/users")
    assert resp.status == 503
    assert (await resp.json())["error"] == "provider_unconfigured"


async def test_request_body_over_limit_is_413(fake: FakeProvider, sidecar) -> None:
    """A declared or streamed body over max_request_body is refused with 413."""
    client = await sidecar(sidecar_config(provider("p", fake.url, max_request_body=1000)))
    resp = await client.post("/p/x", data=b"x" * 1001)
    assert resp.status == 413
    assert resp.headers["X-Sidecar-Error"] == "body_too_large"

    async def chunks():
        for _ in range(20):
            yield b"y" * 100_000

    resp = await client.post("/p/x", data=chunks())
    assert resp.status == 413


async def test_big_bodies_stream_both_ways(fake: FakeProvider, sidecar) -> None:
    """A 256 MiB response and a 64 MiB upload pass through intact."""
    size = 256 * 1024 * 1024
    fake.then(Reply(stream_bytes=size, content_length=False, headers={}))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get("/p/big")
    got = 0
    async for chunk in resp.content.iter_any():
        got += len(chunk)
    assert resp.status == 200 and got == size

    upload = 64 * 1024 * 1024

    async def body():
        block = b"z" * (1 << 20)
        for _ in range(upload >> 20):
            yield block

    resp = await client.post("/p/up", data=body())
    assert resp.status == 200
    assert fake.seen[-1].body_size == upload


async def test_mid_body_reset_is_visible_to_the_client(fake: FakeProvider, sidecar) -> None:
    """A response cut by the upstream is cut for the client too, never completed."""
    fake.then(Reply(stream_bytes=4 * 1024 * 1024, reset_after=1024 * 1024, headers={}))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.get("/p/x")
    assert resp.status == 200
    try:
        await resp.read()
    except aiohttp.ClientPayloadError:
        return
    raise AssertionError("a truncated body was delivered as complete")


async def test_bulkhead_refuses_over_max_concurrent(fake: FakeProvider, sidecar) -> None:
    """With max_concurrent 1 and one request in flight, the next is 503 provider_overloaded."""
    release = asyncio.Event()
    fake.then(Reply(hold=release))
    client = await sidecar(sidecar_config(provider("p", fake.url, max_concurrent=1)))
    slow = asyncio.ensure_future(client.get("/p/slow"))
    await eventually(lambda: fake.inflight, what="the first request at the provider")
    resp = await client.get("/p/fast")
    assert resp.status == 503
    body = await resp.json()
    assert body["error"] == "provider_overloaded"
    assert "Retry-After" not in resp.headers
    release.set()
    assert (await slow).status == 200


async def test_sidecar_error_body_shape(sidecar) -> None:
    """A connection refused after retries is 502 upstream_unreachable with the JSON error shape."""
    client = await sidecar(sidecar_config(provider("p", "http://127.0.0.1:9")))
    resp = await client.get("/p/x")
    assert resp.status == 502
    body = json.loads(await resp.text())
    assert set(body) == {"error", "provider", "detail"}
    assert body["error"] == "upstream_unreachable" and body["provider"] == "p"
    assert resp.headers["X-Sidecar-Error"] == "upstream_unreachable"
    assert resp.headers["X-Sidecar-Attempts"] == "3"


async def test_lower_case_hop_by_hop_and_host_never_cross(fake: FakeProvider, sidecar) -> None:
    """Header names are case-insensitive: "host", "connection", "te" from a client are dropped too."""
    fake.then(Reply(headers={"keep-alive": "timeout=5", "x-kept": "y"}))
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    data = await raw_http(
        client.port,
        b"GET /p/x HTTP/1.1\r\nhost: evil.example\r\nconnection: close, x-hop\r\nx-hop: 1\r\n"
        b"te: trailers\r\nx-sidecar-operation: op\r\n\r\n",
    )
    head = data.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 200") and b"keep-alive:" not in head and b"x-kept: y" in head
    seen = fake.seen[0].headers
    assert seen.getall("Host") == [f"127.0.0.1:{fake.port}"]
    for name in ("x-hop", "te", "x-sidecar-operation"):
        assert name not in seen


async def test_trickled_body_gets_408(fake: FakeProvider, sidecar) -> None:
    """A retryable body that never completes is answered 408 after the total timeout, sending nothing."""
    p = provider("p", fake.url, timeouts=Timeouts(connect=1.0, attempt=1.0, total=0.3))
    client = await sidecar(sidecar_config(p))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"PUT /p/x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        # The answer comes at once; aiohttp then lingers a while reading the rest before closing.
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408")
    assert b"X-Sidecar-Error: request_timeout" in head
    assert fake.seen == []


async def test_stalled_small_response_body_is_504(sidecar) -> None:
    """A small response whose body stalls after the headers is an upstream timeout, not unreachable."""
    stall = await Stalling().start()
    try:
        p = provider("p", f"http://127.0.0.1:{stall.port}",
                     timeouts=Timeouts(connect=1.0, attempt=0.3, total=2.0))
        client = await sidecar(sidecar_config(p))
        resp = await client.get("/p/x")
        assert resp.status == 504
        assert (await resp.json())["error"] == "upstream_timeout"
    finally:
        await stall.close()


class Stalling:
    """Answers every request with headers promising 100 bytes, sends 10, then goes quiet."""

    def __init__(self) -> None:
        self.port = 0
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Stalling:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
            await self._release.wait()
        finally:
            writer.close()

    async def close(self) -> None:
        self._release.set()
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # every connection closed before the test's loop ends
            writer.close()
            await writer.wait_closed()


async def test_small_chunked_body_over_limit_is_413(fake: FakeProvider, sidecar) -> None:
    """A chunked body below the buffering threshold but over max_request_body is refused, never sent."""
    client = await sidecar(sidecar_config(provider("p", fake.url, max_request_body=10_000)))

    async def chunks():
        for _ in range(5):
            yield b"x" * 10_000

    for method in ("POST", "PUT"):  # streamed once, and kept for a retry
        resp = await client.request(method, "/p/upload", data=chunks())
        assert resp.status == 413
        assert resp.headers["X-Sidecar-Error"] == "body_too_large"
    assert fake.seen == []


async def test_client_gone_mid_body_is_a_client_error(
    fake: FakeProvider, sidecar, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that disconnects while its small body is read is counted 400, with no traceback."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    _, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(b"POST /p/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + b"x" * 1000)
    await writer.drain()
    # Wait until the handler is reading the body, then vanish.
    runtime = client.app[SERVICES].registry.providers["p"]
    await eventually(lambda: runtime.inflight, what="the upload in flight")
    writer.transport.abort()
    requests = "sidecar_requests_total"
    await eventually(lambda: metric(client, requests, provider="p"), what="the request counted")
    assert metric(client, requests, provider="p", code="400") == 1
    assert metric(client, requests, provider="p", code="500") == 0
    assert fake.seen == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
