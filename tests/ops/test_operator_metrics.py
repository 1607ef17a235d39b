"""The metrics operators' panels need: who answered (source), every breaker edge from 0, the
breaker's failure rate against its threshold, the connection pool, bulkhead refusals, and the
ledger's error series from 0."""

from __future__ import annotations

import asyncio

from sidecar.config import BreakerConfig, DownloadConfig, RetryConfig
from sidecar.ops.metrics import Metrics
from sidecar.policy.breaker import LEGAL_TRANSITIONS
from sidecar.state import OperationEvent
from sidecar.web.app import SERVICES

from ..support.configs import QUIET, provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.fakes import FakeClock
from ..support.polling import eventually
from .test_metrics import samples, scrape, value

NO_RETRY = RetryConfig(max_attempts=1)


async def test_source_tells_the_sidecars_503_from_the_providers(
        fake: FakeProvider, sidecar, clock: FakeClock) -> None:
    """A provider's 503 is source=provider; the sidecar's circuit_open 503 is source=sidecar."""
    cfg = provider("p", fake.url, retry=NO_RETRY, failure_statuses=frozenset({503}),
                   breaker=BreakerConfig(failure_threshold=1, minimum_calls=0))
    client = await sidecar(sidecar_config(cfg), clock=clock)
    fake.then(Reply(status=503))
    first = await client.get("/p/x")
    assert first.status == 503 and "X-Sidecar-Error" not in first.headers
    second = await client.get("/p/x")
    assert second.status == 503 and second.headers["X-Sidecar-Error"] == "circuit_open"
    t = samples(await scrape(client))
    for source in ("provider", "sidecar"):
        assert value(t, "sidecar_requests_total", provider="p", operation="other", code="503",
                     source=source) == 1, source


async def test_a_fresh_sidecar_exports_every_breaker_edge_at_zero(fake: FakeProvider, sidecar) -> None:
    """Before any traffic, each legal (from_state, to_state) of each provider is a 0 series."""
    client = await sidecar(sidecar_config(
        provider("p", fake.url), provider("d", "", kind="download", download=DownloadConfig())))
    t = samples(await scrape(client))
    edges = {(a.value, b.value) for a, b in LEGAL_TRANSITIONS}
    assert ("closed", "open") in edges and ("half_open", "open") in edges
    for name in ("p", "d"):
        for frm, to in edges:
            assert value(t, "sidecar_breaker_transitions_total", provider=name, from_state=frm,
                         to_state=to) == 0, (name, frm, to)


async def test_failure_rate_and_its_threshold(fake: FakeProvider, sidecar, clock: FakeClock) -> None:
    """After one failure in four calls the rate is 0.25, beside the configured 0.6 and 10 calls."""
    breaker = BreakerConfig(failure_threshold=10, failure_rate_threshold=0.6, minimum_calls=10)
    client = await sidecar(sidecar_config(provider("p", fake.url, retry=NO_RETRY, breaker=breaker)),
                           clock=clock)
    t = samples(await scrape(client))
    assert value(t, "sidecar_breaker_failure_rate", provider="p") == 0
    fake.then(Reply(status=500), Reply(), Reply(), Reply())
    for _ in range(4):
        await (await client.get("/p/x")).read()
    t = samples(await scrape(client))
    assert value(t, "sidecar_breaker_failure_rate", provider="p") == 0.25
    assert value(t, "sidecar_breaker_window_calls", provider="p") == 4
    assert value(t, "sidecar_breaker_failure_rate_threshold", provider="p") == 0.6
    assert value(t, "sidecar_breaker_minimum_calls", provider="p") == 10
    clock.advance(breaker.monitoring_period + 1)
    t = samples(await scrape(client))
    assert value(t, "sidecar_breaker_failure_rate", provider="p") == 0  # the window moved on


async def test_pool_gauges_follow_a_held_request(fake: FakeProvider, sidecar) -> None:
    """A request held at the provider is one connection in use; once answered it is idle."""
    release = asyncio.Event()
    fake.then(Reply(hold=release))
    client = await sidecar(sidecar_config(provider("p", fake.url, max_concurrent=4, health=QUIET)))
    t = samples(await scrape(client))
    assert value(t, "sidecar_upstream_connections", provider="p", state="in_use") == 0
    assert value(t, "sidecar_upstream_connection_limit", provider="p") == 4
    held = asyncio.ensure_future(client.get("/p/slow"))
    await eventually(lambda: fake.inflight, what="the request at the provider")
    t = samples(await scrape(client))
    assert value(t, "sidecar_upstream_connections", provider="p", state="in_use") == 1
    assert value(t, "sidecar_upstream_connections", provider="p", state="idle") == 0
    assert value(t, "sidecar_upstream_connection_waiters", provider="p") == 0
    release.set()
    await (await held).read()
    t = samples(await scrape(client))
    assert value(t, "sidecar_upstream_connections", provider="p", state="in_use") == 0
    assert value(t, "sidecar_upstream_connections", provider="p", state="idle") == 1


async def test_pool_waiters_count_callers_beyond_the_limit(fake: FakeProvider, sidecar) -> None:
    """With a pool of one connection and two requests, the second waits and is counted."""
    release = asyncio.Event()
    fake.then(Reply(hold=release), Reply())
    client = await sidecar(sidecar_config(provider("p", fake.url, health=QUIET)))
    rt = client.app[SERVICES].registry.providers["p"]
    rt.pool.limit = 1  # the bulkhead would refuse the second request before the pool sees it
    first = asyncio.ensure_future(client.get("/p/one"))
    await eventually(lambda: fake.inflight, what="the first request at the provider")
    second = asyncio.ensure_future(client.get("/p/two"))

    async def waiters() -> float | None:
        return value(samples(await scrape(client)), "sidecar_upstream_connection_waiters",
                     provider="p")

    await eventually(waiters, until=lambda n: n == 1, what="one caller waiting")
    release.set()
    assert (await first).status == 200 and (await second).status == 200
    assert await waiters() == 0


async def test_bulkhead_refusals_are_counted(fake: FakeProvider, sidecar) -> None:
    """A provider_overloaded answer adds 1 to sidecar_bulkhead_rejected_total, which starts at 0."""
    release = asyncio.Event()
    fake.then(Reply(hold=release))
    client = await sidecar(sidecar_config(provider("p", fake.url, max_concurrent=1)))
    assert value(samples(await scrape(client)), "sidecar_bulkhead_rejected_total", provider="p") == 0
    held = asyncio.ensure_future(client.get("/p/slow"))
    await eventually(lambda: fake.inflight, what="the first request at the provider")
    refused = await client.get("/p/fast")
    assert refused.headers["X-Sidecar-Error"] == "provider_overloaded"
    release.set()
    await (await held).read()
    t = samples(await scrape(client))
    assert value(t, "sidecar_bulkhead_rejected_total", provider="p") == 1
    assert value(t, "sidecar_requests_total", provider="p", operation="other", code="503",
                 source="sidecar") == 1



def test_a_ledger_operation_exports_its_error_series_at_zero() -> None:
    """After a successful claim the claim's error counter exists at 0; a failed one adds 1."""
    metrics = Metrics("test")
    jobs = metrics.jobs(["p"])
    jobs.on_operation(OperationEvent(backend="sqlite", op="claim", duration=0.001, error=None))
    t = samples(metrics.render().decode())
    assert value(t, "sidecar_ledger_errors_total", backend="sqlite", op="claim") == 0
    jobs.on_operation(OperationEvent(backend="sqlite", op="claim", duration=0.001,
                                     error="OperationalError"))
    t = samples(metrics.render().decode())
    assert value(t, "sidecar_ledger_errors_total", backend="sqlite", op="claim") == 1
    assert value(t, "sidecar_idempotency_total", provider="p", result="unknown") == 0
