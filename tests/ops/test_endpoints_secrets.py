"""No API key ever shows up in /metrics, /health/detailed or /admin output."""

from __future__ import annotations

from sidecar.web.app import SERVICES

from ..support.configs import QUIET, SECRET, keyed, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.fakes import FakeClock


async def test_key_never_appears_in_own_endpoints(fake: FakeProvider, sidecar, clock: FakeClock) -> None:
    """After traffic, failed and good probes, an open breaker and admin actions, no output holds the key."""
    client = await sidecar(sidecar_config(keyed("p", fake.url, health=QUIET)), clock=clock)
    svc = client.app[SERVICES]
    rt = svc.registry.providers["p"]
    fake.then(Reply(status=401, body=SECRET.encode()))  # even a provider echoing the key back
    await svc.probes.run_once(rt)
    fake.then(*[Reply(status=500, body=SECRET.encode())] * 3)
    await (await client.get("/p/x")).read()
    await svc.probes.run_once(rt)
    assert fake.seen[0].headers["Authorization"] == f"Bearer {SECRET}"  # the key was really in play
    outputs = []
    for method, path in (
        ("GET", "/metrics"), ("GET", "/health/detailed"), ("GET", "/health"), ("GET", "/health/ready"),
        ("GET", "/admin/breakers"), ("POST", "/admin/breakers/p/force-open"),
        ("POST", "/admin/breakers/p/disable"), ("POST", "/admin/breakers/p/reset"),
    ):
        resp = await client.request(method, path)
        assert resp.status in (200, 503), path
        outputs.append((path, await resp.text(), str(resp.headers)))
    for path, body, headers in outputs:
        for fragment in (SECRET, SECRET[3:15]):
            assert fragment not in body and fragment not in headers, path
