"""/metrics negotiates like a Prometheus exporter: the text format by default, OpenMetrics when asked,
gzip when accepted, and promtool accepts the text."""

from __future__ import annotations

import asyncio
import gzip
import shutil

import aiohttp
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from ..support.configs import QUIET, provider, sidecar_config
from ..support.fake_provider import FakeProvider

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


async def get_raw(client, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """GET /metrics without the client decompressing: status, headers and the bytes as sent."""
    async with aiohttp.ClientSession(auto_decompress=False) as session, session.get(
            client.make_url("/metrics"), headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_text_format_by_default(fake: FakeProvider, sidecar) -> None:
    """Without an Accept header the page is Prometheus text 0.0.4, uncompressed."""
    client = await sidecar(sidecar_config(provider("p", fake.url, health=QUIET)))
    status, headers, body = await get_raw(client, {"Accept-Encoding": "identity"})
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "Content-Encoding" not in headers
    assert b"# TYPE sidecar_requests_total counter" in body and not body.endswith(b"# EOF\n")


async def test_openmetrics_when_the_scraper_asks(fake: FakeProvider, sidecar) -> None:
    """Accept: application/openmetrics-text gets OpenMetrics 1.0.0 that its parser reads."""
    client = await sidecar(sidecar_config(provider("p", fake.url, health=QUIET)))
    status, headers, body = await get_raw(client, {
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "Accept-Encoding": "identity"})
    assert status == 200 and headers["Content-Type"].startswith(OPENMETRICS)
    text = body.decode()
    assert text.endswith("# EOF\n")
    names = {family.name for family in parse_openmetrics(text)}
    assert {"sidecar_requests", "sidecar_breaker_transitions", "sidecar_breaker_failure_rate"} <= names


async def test_gzip_when_accepted(fake: FakeProvider, sidecar) -> None:
    """Accept-Encoding: gzip gets a gzip body that decompresses to the text page."""
    client = await sidecar(sidecar_config(provider("p", fake.url, health=QUIET)))
    status, headers, body = await get_raw(client, {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    plain = gzip.decompress(body)
    assert b"# TYPE sidecar_breaker_state gauge" in plain
    assert len(body) < len(plain)


async def test_promtool_accepts_the_text_page(fake: FakeProvider, sidecar) -> None:
    """`promtool check metrics` finds nothing to fix in the page as served (new gauges included)."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not on PATH: `make test` installs it"
    client = await sidecar(sidecar_config(provider("p", fake.url, health=QUIET)))
    _, _, body = await get_raw(client, {"Accept-Encoding": "identity"})
    assert b"sidecar_upstream_connections" in body
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(body), 60)
    assert proc.returncode == 0, out + err
