"""/status and /status/events: served on the ops listener only, self-contained, strictly headed."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar.config import RetryConfig, SidecarConfig
from sidecar.ops.status_page import STATUS_EVENTS, load_page
from sidecar.providers.registry import ProviderRegistry
from sidecar.web.app import create_app
from sidecar.web.services import Services

from ..support.browser import parse
from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.fakes import FakeClock, RecordingSleep

if TYPE_CHECKING:
    AiohttpClient = Callable[[web.Application], Awaitable[TestClient[web.Request, web.Application]]]


@dataclass
class Listeners:
    proxy: TestClient[web.Request, web.Application]
    ops: TestClient[web.Request, web.Application]
    gw: ProviderRegistry
    clock: FakeClock


@pytest.fixture
async def listeners(
    aiohttp_client: AiohttpClient, fake: FakeProvider
) -> AsyncIterator[Callable[[SidecarConfig], Awaitable[Listeners]]]:
    """Both listeners of one sidecar, sharing one set of services, as ``serve`` builds them."""
    stack = contextlib.AsyncExitStack()

    async def start(config: SidecarConfig) -> Listeners:
        clock = FakeClock()
        svc = Services(config, clock=clock, sleep=RecordingSleep(), rng=random.Random(7), environ={})
        await stack.enter_async_context(svc.running())
        common: dict[str, Any] = {"services": svc}
        proxy = await aiohttp_client(create_app(config, role="proxy", **common))
        ops = await aiohttp_client(create_app(config, role="ops", **common))
        return Listeners(proxy, ops, svc.registry, clock)

    yield start
    await stack.aclose()


def _config(fake: FakeProvider) -> SidecarConfig:
    return sidecar_config(
        provider("flaky", fake.url, retry=RetryConfig(max_attempts=1)),
        provider("steady", fake.url),
    )


def _sha256(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


async def test_status_page_headers_and_policy(listeners, fake: FakeProvider) -> None:
    """The page is HTML, never cached or sniffed; its CSP allows exactly its own inline script and style."""
    sc = await listeners(_config(fake))
    resp = await sc.ops.get("/status")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    csp = dict(d.strip().split(" ", 1) for d in resp.headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["connect-src"] == "'self'" and csp["frame-ancestors"] == "'none'"
    assert "unsafe" not in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    doc = parse(html)
    (script,), (style,) = doc.find_all("script"), doc.find_all("style")
    assert csp["script-src"] == f"'sha256-{_sha256(script.all_text())}'"
    assert csp["style-src"] == f"'sha256-{_sha256(style.all_text())}'"
    assert fake.seen == []  # serving the page sends nothing upstream


async def test_status_page_is_self_contained(listeners, fake: FakeProvider) -> None:
    """No external asset: no script or stylesheet by URL, no absolute URL anywhere, no innerHTML."""
    sc = await listeners(_config(fake))
    html = await (await sc.ops.get("/status")).text()
    doc = parse(html)
    assert all("src" not in s.attrs for s in doc.find_all("script"))
    assert [link.attrs for link in doc.find_all("link")] == [{"rel": "icon", "href": "data:,"}]
    assert not re.search(r"(?i)(https?:|wss?:)//", html), "an absolute URL"
    assert not re.search(r"""(?i)(src|href|action)\s*=\s*["']?//""", html), "a scheme-relative URL"
    assert "url(" not in html and "@import" not in html
    assert "innerHTML" not in html and "outerHTML" not in html and "insertAdjacentHTML" not in html
    assert "eval(" not in html and "document.write" not in html
    # What the script reads and calls, relative so that a path prefix (kubectl proxy) still works.
    for url in ('"health/detailed"', '"status/events"', "`admin/breakers/"):
        assert url in html


async def test_status_routes_are_not_on_the_proxy_listener(listeners, fake: FakeProvider) -> None:
    """On the proxy listener /status and /status/events are 404, not the page, and nothing goes upstream."""
    sc = await listeners(_config(fake))
    for path in ("/status", "/status/events", "/status/"):
        resp = await sc.proxy.get(path)
        assert resp.status == 404, path
        assert resp.headers["Content-Type"].startswith("application/json")
        assert (await resp.json())["error"] == "unknown_provider"
    assert fake.seen == []
    assert (await sc.ops.get("/status/events")).status == 200


async def test_events_show_a_breaker_opening_and_an_admin_reset(listeners, fake: FakeProvider) -> None:
    """Failures seen on the proxy listener and an admin reset on the ops listener appear in /status/events."""
    fake.default = Reply(status=503)
    sc = await listeners(_config(fake))
    for _ in range(3):
        assert (await sc.proxy.get("/flaky/v1/x")).status == 503
    assert (await sc.proxy.get("/flaky/v1/x")).headers["X-Sidecar-Error"] == "circuit_open"
    sc.clock.advance(4)
    assert (await sc.ops.post("/admin/breakers/flaky/reset")).status == 200
    resp = await sc.ops.get("/status/events")
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    body = await resp.json()
    assert body["capacity"] == 20 and body["last_seq"] == 2 and body["providers"]["steady"] == []
    flaky = body["providers"]["flaky"]
    assert [(e["seq"], e["from_state"], e["to_state"], e["reason"], e["host"]) for e in flaky] == [
        (1, "closed", "open", "consecutive_failures", None),
        (2, "open", "closed", "admin_reset", None),
    ]
    assert [e["age_seconds"] for e in flaky] == [4.0, 0.0]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["at"]) for e in flaky)


async def test_events_ring_is_bounded(listeners, fake: FakeProvider) -> None:
    """Thirty admin flaps keep only the newest twenty transitions of that provider."""
    sc = await listeners(_config(fake))
    for _ in range(15):
        await sc.ops.post("/admin/breakers/steady/force-open")
        await sc.ops.post("/admin/breakers/steady/reset")
    body = await (await sc.ops.get("/status/events")).json()
    steady = body["providers"]["steady"]
    assert body["last_seq"] == 30 and len(steady) == 20
    assert [e["seq"] for e in steady] == list(range(11, 31))
    assert steady[-1]["reason"] == "admin_reset" and steady[-2]["reason"] == "admin_force_open"
    assert sc.ops.app[STATUS_EVENTS].capacity == 20


async def test_download_host_transitions_name_the_host(listeners, fake: FakeProvider) -> None:
    """A download host's breaker transition is recorded under its provider with the host."""
    from ..providers.test_download import NAME
    from ..support.downloads import download_config, path_for

    sc = await listeners(download_config())
    assert (await sc.proxy.get(path_for(f"{fake.url}/file.bin"))).status == 200
    assert (await sc.ops.post(f"/admin/breakers/{NAME}/force-open")).status == 200
    entries = (await (await sc.ops.get("/status/events")).json())["providers"][NAME]
    assert [(e["to_state"], e["reason"], e["host"]) for e in entries] == [
        ("forced_open", "admin_force_open", f"127.0.0.1:{fake.port}")]


def test_page_is_built_once() -> None:
    """The page and its policy are computed once per process, not per request."""
    assert load_page() is load_page()
