"""/admin: access rules (token or loopback), breaker listing and the reset/force-open/disable actions."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from structlog.testing import capture_logs

from sidecar.ops.admin import AdminHandlers, is_loopback, token_matches
from sidecar.ops.metrics import Metrics
from sidecar.providers.registry import ProviderRegistry
from sidecar.web.app import SERVICES

from ..conftest import provider, raw_http, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..upstream.test_attempts import metric

TOKEN = "admin-T0KEN-xyz"


class _Transport:
    """Just enough of a transport for the guard: a local socket address."""

    def __init__(self, sockname: object) -> None:
        self._sockname = sockname

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self._sockname if name == "sockname" else default

    def is_closing(self) -> bool:
        return False


@pytest.mark.parametrize(
    ("sockname", "expected"),
    [
        (("127.0.0.1", 9901), True),
        (("127.8.9.10", 9901), True),
        (("::1", 9901, 0, 0), True),
        (("::ffff:127.0.0.1", 9901, 0, 0), True),
        (("fe80::1%eth0", 9901, 0, 2), False),
        (("10.0.0.5", 9901), False),
        (("0.0.0.0", 9901), False),
        (("::", 9901, 0, 0), False),
        (("::ffff:10.1.2.3", 9901, 0, 0), False),
        (("localhost", 9901), False),
        ("/run/sidecar.sock", False),
        (None, False),
        ((), False),
    ],
)
def test_is_loopback(sockname: object, expected: bool) -> None:
    """Only IPv4/IPv6 loopback addresses (mapped ones too) count as loopback."""
    assert is_loopback(sockname) is expected


def test_token_matches() -> None:
    """Only "Bearer <token>" with the exact token is accepted."""
    assert token_matches(f"Bearer {TOKEN}", TOKEN)
    assert token_matches(f"bearer {TOKEN}", TOKEN)
    for header in (None, "", TOKEN, f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", f"Bearer {TOKEN[:-1]}"):
        assert not token_matches(header, TOKEN), header


async def test_admin_without_token_is_forbidden_off_loopback() -> None:
    """Without SIDECAR_ADMIN_TOKEN a request that arrived on a non-loopback address gets 403 forbidden."""
    registry = ProviderRegistry(sidecar_config(provider("p", "http://127.0.0.1:1")), metrics=Metrics("t"))
    admin = AdminHandlers(registry, environ={})
    app = web.Application()
    admin.add_routes(app)
    for sockname, status in ((("10.0.0.5", 9901), 403), (("127.0.0.1", 9901), 200)):
        req = make_mocked_request("GET", "/admin/breakers", app=app, transport=_Transport(sockname))
        match = await app.router.resolve(req)
        resp = await match.handler(req)
        assert resp.status == status, sockname
        if status == 403:
            assert resp.headers["X-Sidecar-Error"] == "forbidden"


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
    from ..providers.test_download import download_config, path_for

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
