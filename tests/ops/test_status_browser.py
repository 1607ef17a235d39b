"""The status page in a real headless Chromium: what it renders, not just what the server sends.

The first test runs the real sidecar (a subprocess) with a provider whose fake answers 503, so its
breaker opens, and polls Chromium's rendered DOM until the page shows it. The others serve the page
from an in-process app whose JSON the test writes, to check escaping, generic rendering of
``rate_limits``/``ledger`` and the stale indicator. Chromium must be installed (``make tools``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from sidecar import __version__
from sidecar.ops.metrics import Metrics
from sidecar.ops.status_page import add_status_routes
from sidecar.policy.breaker import BreakerState, Transition
from sidecar.providers.registry import ProviderRegistry

from ..support.browser import Element, dump_dom, parse
from ..support.cdp import Cdp
from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.polling import eventually
from ..support.process import start_sidecar

pytestmark = pytest.mark.timeout(240)

DEADLINE = 90.0  # seconds to see the expected DOM: generous for a loaded 2-core machine

CONFIG = """
server: {{drain_time: 0s, shutdown_grace: 1s}}
providers:
  flaky:
    upstream: "{flaky}"
    retry: {{max_attempts: 1}}
    breaker: {{failure_threshold: 3, minimum_calls: 0, recovery_timeout: 10m}}
    health: {{method: GET, path: /health, interval: 1s, timeout: 2s}}
  steady:
    upstream: "{steady}"
    health: {{method: GET, path: /health, interval: 1s, timeout: 2s}}
"""


async def poll_dom(url: str, problems: Callable[[Element], list[str]], *, budget_ms: int = 5000) -> Element:
    """Render ``url`` until ``problems(dom)`` is empty or ``DEADLINE`` passes (then fail with them)."""
    docs: list[Element] = []

    async def problems_now() -> list[str]:
        docs.append(parse(await dump_dom(url, budget_ms=budget_ms)))
        return problems(docs[-1])

    await eventually(problems_now, until=lambda found: not found, timeout=DEADLINE, interval=0.05,
                     what="the rendered page showing what was expected (last value: what was missing)")
    return docs[-1]


def card(doc: Element, name: str) -> Element | None:
    cards = doc.find_all("article", data_provider=name)
    return cards[0] if len(cards) == 1 else None


def headings(el: Element) -> list[str]:
    return [h.all_text() for h in el.find_all("h3")]


def open_breaker_problems(doc: Element) -> list[str]:
    """What the page does not (yet) show of: flaky open with its reason and failed probe, steady fine."""
    flaky, steady = card(doc, "flaky"), card(doc, "steady")
    if flaky is None or steady is None:
        return ["no provider cards rendered"]
    found = []
    if flaky.attrs.get("data-state") != "open":
        found.append(f"flaky card state {flaky.attrs.get('data-state')!r}")
    if flaky.find("span", **{"class": "state"}).all_text() != "open":
        found.append("flaky badge does not say open")
    if not flaky.find_all("li", data_to_state="open", data_reason="consecutive_failures"):
        found.append("flaky has no closed -> open transition with its reason")
    if "100%: 3 of 3 calls failed in the last 1m" not in flaky.all_text():
        found.append("flaky failure rate not shown")
    probe = flaky.find_all("span", data_ok="false")
    if not probe or "http_503" not in probe[0].all_text():
        found.append("flaky's failed probe not shown")
    if steady.attrs.get("data-state") != "closed" or not steady.find_all("span", data_ok="true"):
        found.append("steady is not shown closed with a good probe")
    updated = doc.find("span", id="updated")
    if updated.attrs.get("data-stale") != "false":
        found.append(f"updated indicator: {updated.all_text()!r}")
    if doc.find("span", id="overall").attrs.get("data-status") != "degraded":
        found.append("overall status is not degraded")
    return found


async def test_browser_shows_an_open_breaker_of_a_running_sidecar(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """A provider answering 503 opens its breaker; Chromium's rendering shows it open, reason and probe."""
    flaky = await FakeProvider().start(aiohttp_server)
    flaky.default = Reply(status=503)
    steady = await FakeProvider().start(aiohttp_server)
    sc = await start_sidecar(CONFIG.format(flaky=flaky.url, steady=steady.url), tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"{sc.proxy}/flaky/v1/predictions") as resp:
                    assert resp.status == 503 and "X-Sidecar-Error" not in resp.headers
            async with session.get(f"{sc.ops}/health/detailed") as resp:
                assert (await resp.json())["providers"]["flaky"]["state"] == "open"
            async with session.get(f"{sc.proxy}/status") as resp:
                assert resp.status == 404  # the page is on the ops listener only
        doc = await poll_dom(f"{sc.ops}/status", open_breaker_problems)
        assert doc.find("title").all_text() == "sidecar: degraded"
        # The page reads nothing from providers: only the fake's own traffic reached it.
        assert all(s.raw_path in ("/v1/predictions", "/health") for s in flaky.seen)
        # No rate_limits or ledger in this sidecar's JSON: the page draws no such section.
        assert not {"rate limits", "rate limit", "ledger"} & set(headings(doc))
    finally:
        await sc.stop()


HOSTILE = "x\"'><img src=x onerror=\"document.title='pwned'\">"
HOSTILE_SCRIPT = "<script>document.title='pwned'</script>"


def _gateway() -> ProviderRegistry:
    """A registry for a provider with a hostile name; never started: only its breaker is used."""
    return ProviderRegistry(sidecar_config(provider(HOSTILE, "")), metrics=Metrics(__version__))


def _detailed(gw: ProviderRegistry) -> dict[str, Any]:
    """A /health/detailed answer with hostile strings everywhere, plus rate_limits and ledger keys."""
    rt = gw.providers[HOSTILE]
    return {
        "status": "degraded", "version": HOSTILE_SCRIPT, "uptime_seconds": 61,
        "providers": {HOSTILE: {
            "configured": True, "critical": True, "state": rt.breaker.state.value,
            "breaker": rt.breaker.snapshot(),
            "probe": {"ok": False, "status": 503, "latency_ms": 3.2, "checked_at": HOSTILE,
                      "error": HOSTILE_SCRIPT},
            "rate_limits": {"requests_per_minute": {"limit": 600, "used": 42},
                            "paused_until": None, HOSTILE: HOSTILE_SCRIPT},
        }},
        "checks": {"filesystem": {"ok": False, "error": HOSTILE_SCRIPT}},
        "ledger": {"backend": "sqlite", "records": {"first": 3, "replayed": 1}, HOSTILE: [HOSTILE_SCRIPT]},
    }


async def test_browser_renders_hostile_strings_as_text(aiohttp_server: Any) -> None:
    """Names, errors, hosts and keys with markup render as text; rate_limits and ledger render generically."""
    gw = _gateway()
    app = web.Application()
    log = add_status_routes(app, gw, clock=gw.clock, wall=time.time)
    gw.providers[HOSTILE].breaker.force_open()
    log.record(Transition(HOSTILE, BreakerState.CLOSED, BreakerState.OPEN, "failure_rate", gw.clock()),
               HOSTILE)

    async def detailed(request: web.Request) -> web.Response:
        return web.json_response(_detailed(gw))

    app.router.add_get("/health/detailed", detailed)
    server = await aiohttp_server(app)

    def problems(doc: Element) -> list[str]:
        return [] if card(doc, HOSTILE) is not None else ["the hostile provider's card is missing"]

    doc = await poll_dom(str(server.make_url("/status")), problems)
    assert doc.find_all("img") == [] and len(doc.find_all("script")) == 1
    assert not [e for e in doc.find_all() if any(a.startswith("on") for a in e.attrs)]
    assert doc.find("title").all_text() == "sidecar: degraded"
    hostile = card(doc, HOSTILE)
    assert hostile is not None and hostile.find("h2").all_text() == HOSTILE
    assert hostile.attrs["data-state"] == "forced_open"
    text = hostile.all_text()
    assert HOSTILE_SCRIPT in text and f"at {HOSTILE}" in text  # not a time: shown as it came
    assert [li.find("span", **{"class": "tag"}).all_text()
            for li in hostile.find_all("li", data_reason="failure_rate")] == [HOSTILE]
    assert "rate limits" in headings(hostile)
    rows = {th.all_text(): th for th in hostile.find_all("th")}
    assert {"requests_per_minute", "limit", "used", "paused_until", HOSTILE} <= set(rows)
    extras = doc.find("section", id="extras")
    assert headings(extras) == ["ledger"]
    keys = {th.all_text() for th in extras.find_all("th")}
    assert {"backend", "records", "first", "replayed", HOSTILE} <= keys
    assert HOSTILE_SCRIPT in extras.all_text()
    check = doc.find("span", data_check="filesystem")
    assert check.attrs["data-ok"] == "false" and HOSTILE_SCRIPT in check.all_text()
    assert HOSTILE_SCRIPT in doc.find("span", id="meta").all_text()


async def test_browser_marks_the_page_stale_when_a_refresh_fails(aiohttp_server: Any) -> None:
    """After one good answer /health/detailed fails: the page keeps the last data and says it is stale."""
    gw = _gateway()
    app = web.Application()
    add_status_routes(app, gw, clock=gw.clock, wall=time.time)
    calls: list[int] = []

    async def detailed(request: web.Request) -> web.Response:
        calls.append(1)
        if len(calls) == 1:
            return web.json_response(_detailed(gw))
        return web.Response(status=500, text="<html>proxy error</html>", content_type="text/html")

    app.router.add_get("/health/detailed", detailed)
    server = await aiohttp_server(app)

    def problems(doc: Element) -> list[str]:
        updated = doc.find("span", id="updated")
        if updated.attrs.get("data-stale") != "true" or "stale: last update" not in updated.all_text():
            calls.clear()  # the next page load starts with one good answer again
            return [f"updated indicator: {updated.all_text()!r}"]
        return []

    doc = await poll_dom(str(server.make_url("/status")), problems, budget_ms=8000)
    assert "HTTP 500" in doc.find("span", id="updated").all_text()
    assert card(doc, HOSTILE) is not None  # the last good data is still shown
    assert len(calls) >= 2


TOKEN = "status-page-T0KEN"
FLAKY = 'document.querySelector(\'article[data-provider="flaky"]\')'


async def test_browser_buttons_call_admin_with_the_pasted_token(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """Reset without a token shows the admin 401; with the pasted token it resets; force-open asks first."""
    flaky = await FakeProvider().start(aiohttp_server)
    flaky.default = Reply(status=503)
    steady = await FakeProvider().start(aiohttp_server)
    sc = await start_sidecar(CONFIG.format(flaky=flaky.url, steady=steady.url), tmp_path,
                             env={"SIDECAR_ADMIN_TOKEN": TOKEN})
    browser = await Cdp.launch()
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                await (await session.get(f"{sc.proxy}/flaky/v1/predictions")).read()

            async def state() -> str:
                async with session.get(f"{sc.ops}/health/detailed") as resp:
                    return str((await resp.json())["providers"]["flaky"]["state"])

            assert await state() == "open"
            await browser.send("Page.navigate", url=f"{sc.ops}/status")
            await browser.until(f"{FLAKY}?.dataset.state", lambda v: v == "open")

            async def click(action: str) -> None:
                await browser.evaluate(f"{FLAKY}.querySelector('button[data-action=\"{action}\"]').click()")

            result = "document.getElementById('action-result').textContent"
            await click("reset")
            shown = await browser.until(result, lambda v: "HTTP" in v)
            assert "flaky reset: HTTP 401 unauthorized" in shown and "paste the admin token" in shown
            assert await state() == "open"

            await browser.evaluate("document.getElementById('token').focus()")
            await browser.send("Input.insertText", text=TOKEN)  # typed, as a user would paste it
            assert await browser.evaluate("sessionStorage.getItem('sidecar.adminToken')") == TOKEN
            await browser.evaluate("window.beforeReload = true")
            await browser.send("Page.reload")
            await browser.until("!window.beforeReload && document.readyState", lambda v: v == "complete")
            assert await browser.evaluate("document.getElementById('token').value") == TOKEN
            await browser.until(f"{FLAKY}?.dataset.state", lambda v: v == "open")
            assert await browser.evaluate("localStorage.length + document.cookie.length") == 0

            await click("reset")
            assert await browser.until(result, lambda v: "now" in v) == "flaky reset: now closed"
            await browser.until(f"{FLAKY}.dataset.state", lambda v: v == "closed")
            assert await state() == "closed"
            await click("force-open")
            assert browser.dialogs == ["force-open the breaker of flaky?"]
            await browser.until(f"{FLAKY}.dataset.state", lambda v: v == "forced_open")
            assert await state() == "forced_open"
            actions = [(e["action"], e["state"]) for e in sc.events("admin_action")]
            assert actions == [("reset", "closed"), ("force-open", "forced_open")]

            await browser.evaluate("document.getElementById('forget').click()")
            assert await browser.evaluate("sessionStorage.getItem('sidecar.adminToken')") is None
            assert await browser.evaluate("document.getElementById('token').value") == ""
    finally:
        await browser.close()
        await sc.stop()


async def test_browser_says_when_only_the_transitions_failed(aiohttp_server: Any) -> None:
    """/status/events failing while /health/detailed answers: the page is drawn and names what failed."""
    gw = _gateway()

    @web.middleware
    async def events_down(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/status/events":
            return web.Response(status=502, text="bad gateway")
        return await handler(request)

    app = web.Application(middlewares=[events_down])
    add_status_routes(app, gw, clock=gw.clock, wall=time.time)

    async def detailed(request: web.Request) -> web.Response:
        return web.json_response(_detailed(gw))

    app.router.add_get("/health/detailed", detailed)
    server = await aiohttp_server(app)

    def problems(doc: Element) -> list[str]:
        updated = doc.find("span", id="updated")
        return [] if updated.attrs.get("data-stale") == "partial" else [updated.all_text()]

    doc = await poll_dom(str(server.make_url("/status")), problems)
    assert "transitions not updated: status/events: HTTP 502" in doc.find("span", id="updated").all_text()
    hostile = card(doc, HOSTILE)
    assert hostile is not None and "unavailable: status/events: HTTP 502" in hostile.all_text()
