"""One lifecycle for what both listeners share: Services.running(), entered by create_app or serve."""

from __future__ import annotations

import asyncio
import random

import pytest

from sidecar.providers.runtime import ProxyRuntime
from sidecar.web.app import SERVICES, create_app
from sidecar.web.services import Services

from ..support.configs import QUIET, provider, sidecar_config
from ..support.fake_provider import FakeProvider
from ..support.polling import eventually
from ..support.sidecar_listener import start_listener


def proxy_runtime(svc: Services, name: str) -> ProxyRuntime:
    rt = svc.registry.providers[name]
    assert isinstance(rt, ProxyRuntime)
    return rt


async def test_running_opens_the_pools_then_probes_and_closes_both(fake: FakeProvider) -> None:
    """Inside running() the pool is open and the probe loop runs on the injected sleep and rng;
    after it the pool is closed and the loop probes no more."""
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        if len(waits) > 1:
            await asyncio.Event().wait()  # after one probe, park the loop

    svc = Services(sidecar_config(provider("p", fake.url, health=QUIET)), sleep=sleep,
                   rng=random.Random(1))
    rt = proxy_runtime(svc, "p")
    async with svc.running():
        assert rt.pool.prefix == ""
        await eventually(lambda: len(waits) == 2)
        result = svc.probes.result("p")
        assert result is not None and result.ok
    with pytest.raises(RuntimeError, match="not open"):
        _ = rt.pool
    assert waits == [random.Random(1).uniform(0, QUIET.interval), QUIET.interval]
    assert [s.raw_path for s in fake.seen] == ["/probe"]


async def test_running_closes_the_pools_when_the_body_fails(fake: FakeProvider) -> None:
    """An error inside running() still closes what was opened."""
    svc = Services(sidecar_config(provider("p", fake.url)))
    rt = proxy_runtime(svc, "p")
    with pytest.raises(ZeroDivisionError):
        async with svc.running():
            _ = rt.pool
            _ = 1 / 0
    with pytest.raises(RuntimeError, match="not open"):
        _ = rt.pool


async def test_an_app_without_services_runs_its_own_for_its_lifetime(fake: FakeProvider) -> None:
    """create_app builds Services and enters running() through cleanup_ctx: open while it serves."""
    config = sidecar_config(provider("p", fake.url))
    client = await start_listener(create_app(config, environ={}), config)
    rt = proxy_runtime(client.app[SERVICES], "p")
    assert rt.pool.prefix == ""
    await client.close()
    with pytest.raises(RuntimeError, match="not open"):
        _ = rt.pool


async def test_apps_given_services_leave_their_lifetime_to_the_caller(fake: FakeProvider) -> None:
    """Two listeners sharing Services (as serve runs them) neither open nor close them."""
    config = sidecar_config(provider("p", fake.url))
    svc = Services(config, environ={})
    rt = proxy_runtime(svc, "p")
    clients = [await start_listener(create_app(config, role=role, services=svc), config)
               for role in ("proxy", "ops")]
    with pytest.raises(RuntimeError, match="not open"):
        _ = rt.pool
    async with svc.running():
        resp = await clients[0].get("/p/x")
        assert resp.status == 200
    for client in clients:
        await client.close()
