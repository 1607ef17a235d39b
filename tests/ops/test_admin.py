"""/admin: access rules (token, or a listener bound to loopback), breaker listing and actions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from sidecar.config import SidecarConfig
from sidecar.ops.admin import is_loopback_binding, token_matches
from sidecar.web.app import SERVICES, Role, create_app, runner_kwargs

from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply, has_ipv6_loopback
from ..support.metric_samples import metric
from ..support.process import start_sidecar
from ..support.raw_http import raw_http

TOKEN = "admin-T0KEN-xyz"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LocalHost.", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.5", False),
        ("::ffff:10.1.2.3", False),
        ("fe80::1%eth0", False),
        ("sidecar.example", False),
        ("localhost.example", False),
    ],
)
def test_is_loopback_binding(host: str, expected: bool) -> None:
    """Only loopback literals (mapped ones too) and "localhost" are a loopback-only binding."""
    assert is_loopback_binding(host) is expected


def test_token_matches() -> None:
    """Only "Bearer <token>" with the exact token is accepted."""
    assert token_matches(f"Bearer {TOKEN}", TOKEN)
    assert token_matches(f"bearer {TOKEN}", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", f"Bearer {TOKEN[:-1]}"):
        assert not token_matches(header, TOKEN), header


async def listen_bound(
    config: SidecarConfig, role: Role, environ: dict[str, str]
) -> tuple[web.AppRunner, int]:
    """One listener as ``serve`` starts it: bound to the host its role has in ``config``."""
    host = config.server.host if role == "proxy" else config.server.ops_host
    runner = web.AppRunner(create_app(config, role=role, environ=environ), **runner_kwargs(config))
    await runner.setup()
    await web.TCPSite(runner, host, 0).start()
    return runner, runner.addresses[0][1]


async def admin_get(
    client_host: str, port: int, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """GET /admin/breakers from ``client_host`` (a loopback address): (status, JSON body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    host = f"[{client_host}]" if ":" in client_host else client_host
    url = f"http://{host}:{port}/admin/breakers"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def admin_status(client_host: str, port: int, token: str | None = None) -> int:
    """The status of GET /admin/breakers from ``client_host``."""
    return (await admin_get(client_host, port, token))[0]


@pytest.mark.parametrize("role", ["proxy", "ops"])
@pytest.mark.parametrize(
    ("bind", "client", "expected"),
    [("0.0.0.0", "127.0.0.1", 403), ("127.0.0.1", "127.0.0.1", 200), ("::", "::1", 403),
     ("::1", "::1", 200)],
)
async def test_admin_without_token_depends_on_the_bound_address(
    role: Role, bind: str, client: str, expected: int
) -> None:
    """Without a token, a listener bound to a wildcard is 403 even for a client on loopback."""
    if ":" in bind and not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    key = "host" if role == "proxy" else "ops_host"
    config = sidecar_config(provider("p", "http://127.0.0.1:1"), **{key: bind})
    runner, port = await listen_bound(config, role, {})
    try:
        assert await admin_status(client, port) == expected
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("role", ["proxy", "ops"])
@pytest.mark.parametrize("bind", ["0.0.0.0", "127.0.0.1"])
async def test_admin_token_is_required_whatever_the_binding(role: Role, bind: str) -> None:
    """With a token, both listeners want the bearer on any binding: 401 without it, 200 with it."""
    key = "host" if role == "proxy" else "ops_host"
    config = sidecar_config(provider("p", "http://127.0.0.1:1"), **{key: bind})
    runner, port = await listen_bound(config, role, {"SIDECAR_ADMIN_TOKEN": TOKEN})
    try:
        assert await admin_status("127.0.0.1", port) == 401
        assert await admin_status("127.0.0.1", port, "wrong") == 401
        assert await admin_status("127.0.0.1", port, TOKEN) == 200
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("proxy_host", "ops_host"), [("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "0.0.0.0")])
async def test_admin_access_in_the_real_process(tmp_path: Path, proxy_host: str, ops_host: str) -> None:
    """`sidecar --host/--ops-host`: /admin is 403 on the listener bound to 0.0.0.0, 200 on loopback."""
    sc = await start_sidecar(
        "server: {drain_time: 0s, shutdown_grace: 1s}\n", tmp_path,
        args=("--host", proxy_host, "--ops-host", ops_host),
    )
    try:
        for host, port in ((proxy_host, sc.proxy_port), (ops_host, sc.ops_port)):
            body = await admin_get("127.0.0.1", port)
            if host == "0.0.0.0":
                assert body[0] == 403 and body[1]["error"] == "forbidden", host
                assert "0.0.0.0" in body[1]["detail"]
            else:
                assert body[0] == 200 and body[1] == {"breakers": {}}, host
    finally:
        assert await sc.stop() == 0


async def test_admin_token_in_the_real_process(tmp_path: Path) -> None:
    """With SIDECAR_ADMIN_TOKEN set, the real process wants the bearer on both listeners."""
    sc = await start_sidecar(
        "server: {drain_time: 0s, shutdown_grace: 1s}\n", tmp_path,
        env={"SIDECAR_ADMIN_TOKEN": TOKEN}, args=("--host", "0.0.0.0", "--ops-host", "127.0.0.1"),
    )
    try:
        for port in (sc.proxy_port, sc.ops_port):
            assert await admin_status("127.0.0.1", port) == 401
            assert await admin_status("127.0.0.1", port, TOKEN) == 200
    finally:
        assert await sc.stop() == 0


async def test_admin_on_loopback_without_token(fake: FakeProvider, sidecar) -> None:
    """On 127.0.0.1 with no token configured, /admin/breakers lists every breaker."""
    client = await sidecar(
        sidecar_config(provider("a", fake.url), provider("b", fake.url)), environ={}
    )
    resp = await client.get("/admin/breakers")
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"breakers"} and set(body["breakers"]) == {"a", "b"}
    assert body["breakers"]["a"]["state"] == "closed"


@pytest.mark.parametrize(
    "headers,allowed",
    [
        ({}, True),  # curl, kubectl exec: no browser headers
        ({"Host": "localhost:8080"}, True),  # a port-forward
        ({"Origin": "http://127.0.0.1:9901", "Sec-Fetch-Site": "same-origin"}, True),  # status page
        ({"Origin": "http://[::1]:9901"}, True),
        ({"Origin": "https://evil.example"}, False),  # a page on another site: CSRF
        ({"Origin": "null"}, False),  # a sandboxed frame
        ({"Sec-Fetch-Site": "cross-site"}, False),
        ({"Host": "evil.example:8080"}, False),  # DNS rebinding: the page's own name, now 127.0.0.1
        ({"Host": "127.0.0.1.evil.example"}, False),
    ],
)
async def test_admin_without_token_refuses_other_sites_browsers(
    fake: FakeProvider, sidecar, headers: dict[str, str], allowed: bool
) -> None:
    """With no token, a browser request from another site (CSRF) or to a rebound name is 403, and the
    breaker is untouched; tools and same-origin pages still work."""
    client = await sidecar(sidecar_config(provider("p", fake.url)), environ={})
    resp = await client.post("/admin/breakers/p/force-open", headers=headers)
    state = client.app[SERVICES].registry.providers["p"].breaker.snapshot()["state"]
    if allowed:
        assert resp.status == 200 and state == "forced_open"
    else:
        assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
        assert state == "closed"


async def test_admin_token_required_accepted_rejected(fake: FakeProvider, sidecar) -> None:
    """With SIDECAR_ADMIN_TOKEN set: no header 401, wrong token 401, the right one 200."""
    client = await sidecar(
        sidecar_config(provider("p", fake.url)), environ={"SIDECAR_ADMIN_TOKEN": TOKEN}
    )
    resp = await client.get("/admin/breakers")
    assert resp.status == 401 and (await resp.json())["error"] == "unauthorized"
    assert resp.headers["X-Sidecar-Error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.post("/admin/breakers/p/reset", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    assert client.app[SERVICES].registry.providers["p"].breaker.snapshot()["state"] == "closed"
    resp = await client.get("/admin/breakers", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status == 200
    assert TOKEN not in await resp.text()


async def test_non_ascii_authorization_is_401_not_500(fake: FakeProvider, sidecar) -> None:
    """Undecodable Authorization bytes are a wrong token (401); a UTF-8 token sent as UTF-8 matches."""
    client = await sidecar(
        sidecar_config(provider("p", fake.url)), environ={"SIDECAR_ADMIN_TOKEN": "tök-1"}
    )
    head = b"GET /admin/breakers HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
    for token, status in ((b"\xff\xfe", b"401"), ("tök-1".encode(), b"200")):
        answer = await raw_http(client.port, head + token + b"\r\n\r\n")
        assert answer.split(b" ", 2)[1] == status, answer[:200]
    assert not token_matches("Bearer \udcff\udcfe", TOKEN)


async def test_admin_token_is_read_once(fake: FakeProvider, sidecar, monkeypatch) -> None:
    """Setting SIDECAR_ADMIN_TOKEN after the app was created changes nothing."""
    monkeypatch.delenv("SIDECAR_ADMIN_TOKEN", raising=False)
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    monkeypatch.setenv("SIDECAR_ADMIN_TOKEN", TOKEN)
    assert (await client.get("/admin/breakers")).status == 200


async def test_unknown_provider_and_action(fake: FakeProvider, sidecar) -> None:
    """An unknown provider is 404 unknown_provider, an unknown action 400 bad_request."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    resp = await client.post("/admin/breakers/nope/reset")
    assert resp.status == 404
    body = await resp.json()
    assert body["error"] == "unknown_provider" and body["known_providers"] == ["p"]
    resp = await client.post("/admin/breakers/p/explode")
    assert resp.status == 400 and (await resp.json())["error"] == "bad_request"
    assert resp.headers["X-Sidecar-Error"] == "bad_request"


async def test_force_open_then_reset(fake: FakeProvider, sidecar) -> None:
    """force-open answers 503 circuit_open without Retry-After and sends nothing; reset closes it again."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    with capture_logs() as logs:
        resp = await client.post("/admin/breakers/p/force-open")
    assert resp.status == 200
    body = await resp.json()
    assert body["state"] == "forced_open" and body["provider"] == "p"
    resp = await client.get("/p/x")
    assert resp.status == 503 and resp.headers["X-Sidecar-Error"] == "circuit_open"
    assert "Retry-After" not in resp.headers
    assert fake.seen == []
    assert metric(client, "sidecar_breaker_state", provider="p", state="forced_open") == 1
    assert (await (await client.post("/admin/breakers/p/reset")).json())["state"] == "closed"
    assert (await client.get("/p/x")).status == 200
    assert len(fake.seen) == 1
    action = [e for e in logs if e["event"] == "admin_action"]
    assert action == [{
        "event": "admin_action", "log_level": "warning", "component": "admin", "provider": "p",
        "action": "force-open", "from_state": "closed", "state": "forced_open", "remote": "127.0.0.1",
    }]


async def test_reset_closes_an_open_breaker(fake: FakeProvider, sidecar) -> None:
    """reset after the breaker opened on failures closes it with fresh counters."""
    fake.then(*[Reply(status=500)] * 3)
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    await (await client.get("/p/x")).read()
    assert (await client.get("/p/x")).status == 503
    body = await (await client.post("/admin/breakers/p/reset")).json()
    assert body["state"] == "closed" and body["consecutive_failures"] == 0 and body["window_calls"] == 0
    assert (await client.get("/p/x")).status == 200


async def test_disable_lets_calls_through_but_records_them(fake: FakeProvider, sidecar) -> None:
    """A disabled breaker never opens: ten failing requests all reach the provider and are counted."""
    fake.default = Reply(status=500)
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    assert (await (await client.post("/admin/breakers/p/disable")).json())["state"] == "disabled"
    for _ in range(10):
        assert (await client.get("/p/x")).status == 500
    assert len(fake.seen) == 30  # three attempts each, none short-circuited
    snap = (await (await client.get("/admin/breakers")).json())["breakers"]["p"]
    assert snap["state"] == "disabled" and snap["total_failures"] == 30 and snap["total_rejected"] == 0
    assert metric(client, "sidecar_short_circuited_total", provider="p") == 0


async def test_admin_acts_on_every_download_host(fake: FakeProvider, sidecar) -> None:
    """force-open and reset on file-download reach its per-host breakers, and health reports them."""
    from ..support.downloads import download_config, path_for

    client = await sidecar(download_config())
    url = path_for(f"{fake.url}/file.bin")
    assert (await client.get(url)).status == 200
    body = await (await client.post("/admin/breakers/file-download/force-open")).json()
    assert body["state"] == "forced_open"
    resp = await client.get(url)
    assert resp.status == 503 and resp.headers["X-Sidecar-Error"] == "circuit_open"
    assert len(fake.seen) == 1
    listed = await (await client.get("/admin/breakers")).json()
    assert listed["breakers"]["file-download"]["state"] == "forced_open"
    detailed = await (await client.get("/health/detailed")).json()
    assert detailed["providers"]["file-download"]["state"] == "forced_open"
    assert metric(client, "sidecar_breaker_state", provider="file-download", state="forced_open") == 1
    assert (await (await client.post("/admin/breakers/file-download/reset")).json())["state"] == "closed"
    assert (await client.get(url)).status == 200
