"""Background health probes: what fails, where results show, and that breakers never see them."""

from __future__ import annotations

import asyncio
import dataclasses
import random

import pytest

from sidecar.config import AuthHeader
from sidecar.ops.metrics import Metrics
from sidecar.ops.probes import classify_status, is_probed
from sidecar.providers.registry import ProviderRegistry
from sidecar.web.app import SERVICES
from sidecar.web.services import Services

from ..support.configs import QUIET, SECRET, keyed, provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.metric_samples import metric
from ..support.polling import eventually
from ..support.ports import free_port


async def start(sidecar, *providers):
    client = await sidecar(sidecar_config(*providers))
    svc = client.app[SERVICES]
    return client, svc.registry, svc.probes


def test_classify_status() -> None:
    """401/403 are auth_failed, >= 500 fail with the status, anything else (4xx, 3xx) is up."""
    assert classify_status(401) == classify_status(403) == "auth_failed"
    assert classify_status(500) == "http_500" and classify_status(599) == "http_599"
    assert [classify_status(s) for s in (200, 204, 301, 400, 404, 429)] == [None] * 6


def test_only_configured_providers_with_health_and_keys_are_probed() -> None:
    """No health block, a missing key, no upstream or a download provider: not probed."""
    registry = ProviderRegistry(sidecar_config(
        keyed("ok", "http://127.0.0.1:1", health=QUIET),
        provider("nohealth", "http://127.0.0.1:1"),
        provider("nokey", "http://127.0.0.1:1", health=QUIET,
                 auth=(AuthHeader(header="X-Key", env="UNSET_KEY", value=None),)),
        provider("unconfigured", "", health=QUIET),
        provider("dl", "", kind="download", health=QUIET),
    ), metrics=Metrics("t"))
    assert [n for n, rt in registry.providers.items() if is_probed(rt)] == ["ok"]


async def test_successful_probe_is_recorded_with_auth(fake: FakeProvider, sidecar) -> None:
    """A 200 probe sends the configured method/path with the key and records ok, status and up=1."""
    client, registry, runner = await start(sidecar, keyed("p", fake.url, health=QUIET))
    result = await runner.run_once(registry.providers["p"])
    assert result.ok and result.status == 200 and result.error is None
    assert result.checked_at.endswith("Z") and "T" in result.checked_at
    assert [(s.method, s.raw_path) for s in fake.seen] == [("GET", "/probe")]
    assert fake.seen[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert runner.result("p") == result
    assert metric(client, "sidecar_probe_up", provider="p") == 1


async def test_probe_path_with_query_is_sent_as_configured(fake: FakeProvider, sidecar) -> None:
    """A health path with a query string (synclabs' /v2/generations?limit=1) reaches the provider intact."""
    hc = dataclasses.replace(QUIET, path="/v2/generations?limit=1", method="HEAD")
    _, registry, runner = await start(sidecar, provider("p", fake.url, health=hc))
    await runner.run_once(registry.providers["p"])
    assert [(s.method, s.raw_path) for s in fake.seen] == [("HEAD", "/v2/generations?limit=1")]


@pytest.mark.parametrize(
    ("reply", "error", "status"),
    [
        (Reply(status=500), "http_500", 500),
        (Reply(status=503), "http_503", 503),
        (Reply(status=401), "auth_failed", 401),
        (Reply(status=403), "auth_failed", 403),
        (Reply(hold=asyncio.Event()), "timeout", None),  # never released: no answer comes at all
        (Reply(reset=True), "connect_error", None),
    ],
)
async def test_failing_probes_never_touch_the_breaker(
    fake: FakeProvider, sidecar, reply: Reply, error: str, status: int | None
) -> None:
    """Five failing probes (over failure_threshold) are reported; the breaker stays closed, no calls."""
    fake.default = reply
    hc = dataclasses.replace(QUIET, timeout=0.2)
    client, registry, runner = await start(sidecar, keyed("p", fake.url, health=hc))
    rt = registry.providers["p"]
    for _ in range(5):
        result = await runner.run_once(rt)
    assert not result.ok and result.status == status
    assert result.error is not None and result.error.startswith(error)
    snap = rt.breaker.snapshot()
    assert snap["state"] == "closed"
    assert snap["total_calls"] == snap["total_rejected"] == snap["consecutive_failures"] == 0
    assert metric(client, "sidecar_probe_up", provider="p") == 0
    assert metric(client, "sidecar_upstream_attempts_total", provider="p", result="failure") == 0
    detailed = await (await client.get("/health/detailed")).json()
    assert detailed["providers"]["p"]["probe"]["error"] == result.error
    assert detailed["status"] == "degraded"


async def test_connection_refused_fails_the_probe(sidecar) -> None:
    """A provider with nothing listening fails with connect_error, breaker untouched."""
    dead = provider("p", f"http://127.0.0.1:{free_port()}", health=QUIET)
    _, registry, runner = await start(sidecar, dead)
    result = await runner.run_once(registry.providers["p"])
    assert not result.ok and result.status is None
    assert result.error is not None and result.error.startswith("connect_error: ")
    assert registry.providers["p"].breaker.snapshot()["total_calls"] == 0


async def test_open_breaker_does_not_stop_probes(fake: FakeProvider, sidecar) -> None:
    """A forced-open breaker short-circuits requests, but the probe still reaches the provider."""
    client, registry, runner = await start(sidecar, provider("p", fake.url, health=QUIET))
    rt = registry.providers["p"]
    rt.breaker.force_open()
    assert (await client.get("/p/x")).status == 503
    assert (await runner.run_once(rt)).ok
    assert [s.raw_path for s in fake.seen] == ["/probe"]
    assert rt.breaker.state.value == "forced_open"


async def test_probe_recovery_is_reflected(fake: FakeProvider, sidecar) -> None:
    """A failed probe followed by a good one turns /health/detailed and sidecar_probe_up back to up."""
    fake.then(Reply(status=502))
    client, registry, runner = await start(sidecar, provider("p", fake.url, health=QUIET))
    rt = registry.providers["p"]
    await runner.run_once(rt)
    assert metric(client, "sidecar_probe_up", provider="p") == 0
    await runner.run_once(rt)
    assert metric(client, "sidecar_probe_up", provider="p") == 1
    body = await (await client.get("/health/detailed")).json()
    assert body["status"] == "healthy" and body["providers"]["p"]["probe"]["ok"] is True


async def test_background_loop_probes_every_interval(fake: FakeProvider, sidecar) -> None:
    """With a short interval the runner probes on its own, repeatedly, and /health/detailed shows it."""
    fast = dataclasses.replace(QUIET, interval=0.05)
    client, _, _ = await start(sidecar, provider("p", fake.url, health=fast))
    await eventually(lambda: len(fake.seen) >= 3)
    body = await (await client.get("/health/detailed")).json()
    assert body["providers"]["p"]["probe"]["ok"] is True


async def test_first_probe_is_jittered_then_periodic(fake: FakeProvider) -> None:
    """The first wait is rng.uniform(0, interval) from the injected rng, then each wait is the interval."""
    delays: list[float] = []
    parked = asyncio.Event()

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) >= 3:
            parked.set()
            await asyncio.Event().wait()  # park the loop for good after two probes

    hc = dataclasses.replace(QUIET, interval=30.0)
    runner = Services(sidecar_config(provider("p", fake.url, health=hc)), sleep=sleep,
                      rng=random.Random(42)).probes
    runner.start()
    try:
        await asyncio.wait_for(parked.wait(), 5.0)
    finally:
        await runner.close()
    assert delays == [random.Random(42).uniform(0, 30.0), 30.0, 30.0]
    assert len(fake.seen) == 2


async def test_the_apps_injected_sleep_and_rng_reach_the_probe_loop(
    fake: FakeProvider, sidecar, sleep
) -> None:
    """The probe loop's first wait goes through create_app's sleep, drawn from its rng (seed 7)."""
    await start(sidecar, provider("p", fake.url, health=QUIET))
    await eventually(lambda: bool(sleep.delays))
    assert sleep.delays == [random.Random(7).uniform(0, QUIET.interval)]
    assert fake.seen == []  # an hour's wait parks the loop: nothing was probed


async def test_unprobed_provider_has_null_probe_and_no_probe_metrics(fake: FakeProvider, sidecar) -> None:
    """Without a health block the provider shows "probe": null and has no sidecar_probe_* series."""
    client, registry, runner = await start(
        sidecar, provider("p", fake.url), keyed("q", fake.url, health=QUIET))
    await runner.run_once(registry.providers["q"])
    body = await (await client.get("/health/detailed")).json()
    assert body["providers"]["p"]["probe"] is None
    text = client.app[SERVICES].metrics.render().decode()
    assert 'sidecar_probe_up{provider="q"}' in text
    assert 'provider="p"' not in "".join(
        line for line in text.splitlines() if line.startswith("sidecar_probe_")
    )
