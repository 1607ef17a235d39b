"""/metrics after real traffic: contract names and labels, counters that match the traffic, promtool."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.config import DownloadConfig, RouteConfig
from sidecar.ops.metrics import BREAKER_STATES
from sidecar.policy.breaker import Outcome, Permit
from sidecar.providers.runtime import DownloadRuntime
from sidecar.web.app import SERVICES
from sidecar.web.services import Services

from ..support.configs import QUIET, provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.fakes import FakeClock

# The metric contract: family name (as the parser reports it) -> (type, label names of its samples).
CONTRACT = {
    "sidecar_requests": ("counter", {"provider", "operation", "code", "source"}),
    "sidecar_request_duration_seconds": ("histogram", {"provider", "operation"}),
    "sidecar_upstream_attempts": ("counter", {"provider", "result"}),
    "sidecar_upstream_attempt_duration_seconds": ("histogram", {"provider"}),
    "sidecar_retries": ("counter", {"provider"}),
    "sidecar_retry_budget_exhausted": ("counter", {"provider"}),
    "sidecar_breaker_state": ("gauge", {"provider", "state"}),
    "sidecar_breaker_transitions": ("counter", {"provider", "from_state", "to_state"}),
    "sidecar_short_circuited": ("counter", {"provider"}),
    "sidecar_inflight_requests": ("gauge", {"provider"}),
    "sidecar_probe_up": ("gauge", {"provider"}),
    "sidecar_probe_duration_seconds": ("gauge", {"provider"}),
    "sidecar_build_info": ("gauge", {"version"}),
}
PROCESS = ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds",
           "process_start_time_seconds")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(table, name: str, **labels: str) -> float | None:
    return table.get((name, frozenset(labels.items())))


async def scrape(client) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return await resp.text()


async def traffic(client, fake: FakeProvider, clock: FakeClock) -> None:
    """200, 404, a retried 503, then 500s that open the breaker, a short-circuit, and recovery."""
    fake.then(Reply(status=200), Reply(status=404), Reply(status=503), Reply(status=200))
    assert (await client.get("/p/v1/things/1")).status == 200  # named route get_thing
    assert (await client.get("/p/other")).status == 404
    assert (await client.get("/p/other")).status == 200  # after one retry
    fake.then(*[Reply(status=500)] * 3)
    assert (await client.get("/p/other")).status == 500  # three failures: open
    assert (await client.get("/p/other")).status == 503  # short-circuited
    clock.advance(10.0)
    assert (await client.get("/p/other")).status == 200  # trial 1 (half_open)
    assert (await client.get("/p/other")).status == 200  # trial 2: closed
    assert (await client.get("/nope/x")).status == 404


async def test_metrics_after_traffic_match_what_happened(
    fake: FakeProvider, sidecar, clock: FakeClock
) -> None:
    """Requests by code, retries, short-circuits and every transition are counted as the test caused them."""
    routes = (RouteConfig(name="get_thing", method="GET", path="/v1/things/{id}"),)
    client = await sidecar(sidecar_config(provider("p", fake.url, routes=routes, health=QUIET),
                                          provider("q", fake.url)), clock=clock)
    svc = client.app[SERVICES]
    await traffic(client, fake, clock)
    await svc.probes.run_once(svc.registry.providers["p"])
    t = samples(await scrape(client))
    req = "sidecar_requests_total"
    def requests(source: str, **labels: str) -> float | None:
        return value(t, req, source=source, **labels)

    assert requests("provider", provider="p", operation="get_thing", code="200") == 1
    assert requests("provider", provider="p", operation="other", code="200") == 3
    assert requests("provider", provider="p", operation="other", code="404") == 1
    assert requests("provider", provider="p", operation="other", code="500") == 1
    # the 503 is the sidecar's circuit_open; the provider's own 503 was retried over
    assert requests("sidecar", provider="p", operation="other", code="503") == 1
    assert requests("provider", provider="p", operation="other", code="503") is None
    assert requests("sidecar", provider="unknown", operation="other", code="404") == 1
    assert value(t, "sidecar_request_duration_seconds_count", provider="p", operation="other") == 6
    assert value(t, "sidecar_retries_total", provider="p") == 3  # one after the 503, two in the 500s
    assert value(t, "sidecar_short_circuited_total", provider="p") == 1
    assert value(t, "sidecar_upstream_attempts_total", provider="p", result="success") == 5  # 404 counts
    assert value(t, "sidecar_upstream_attempts_total", provider="p", result="failure") == 4
    assert value(t, "sidecar_upstream_attempt_duration_seconds_count", provider="p") == 9
    for frm, to in (("closed", "open"), ("open", "half_open"), ("half_open", "closed")):
        assert value(t, "sidecar_breaker_transitions_total", provider="p", from_state=frm, to_state=to) == 1
    assert value(t, "sidecar_probe_up", provider="p") == 1
    assert value(t, "sidecar_inflight_requests", provider="p") == 0
    assert value(t, "sidecar_retry_budget_exhausted_total", provider="p") == 0


async def test_every_contract_metric_has_its_type_and_labels(
    fake: FakeProvider, sidecar, clock: FakeClock
) -> None:
    """Each metric family of the contract exists with its type and exact label set, plus the process
    metrics."""
    client = await sidecar(sidecar_config(provider("p", fake.url, health=QUIET)), clock=clock)
    svc = client.app[SERVICES]
    await traffic(client, fake, clock)
    await svc.probes.run_once(svc.registry.providers["p"])
    families = {f.name: f for f in text_string_to_metric_families(await scrape(client))}
    for name, (kind, labels) in CONTRACT.items():
        fam = families.get(name)
        assert fam is not None, name
        assert fam.type == kind, name
        assert fam.samples, name
        for s in fam.samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    for name in PROCESS:
        assert name in families and families[name].samples, name


async def test_breaker_state_has_every_state_with_exactly_one_set(
    fake: FakeProvider, sidecar, clock: FakeClock
) -> None:
    """For every provider all five states are exported and exactly one is 1, through each transition."""
    client = await sidecar(sidecar_config(provider("p", fake.url), provider("q", fake.url)), clock=clock)
    svc = client.app[SERVICES]

    async def check(expected_p: str) -> None:
        t = samples(await scrape(client))
        for prov in ("p", "q"):
            states = {s: value(t, "sidecar_breaker_state", provider=prov, state=s) for s in BREAKER_STATES}
            assert None not in states.values(), states
            assert sum(states.values()) == 1, states
        assert value(t, "sidecar_breaker_state", provider="p", state=expected_p) == 1
        assert value(t, "sidecar_breaker_state", provider="q", state="closed") == 1

    await check("closed")
    fake.then(*[Reply(status=500)] * 3)
    await (await client.get("/p/x")).read()
    await check("open")
    clock.advance(10.0)
    await check("half_open")  # no request needed: the scrape applies the lazy transition
    svc.registry.providers["p"].breaker.force_open()
    await check("forced_open")
    svc.registry.providers["p"].breaker.disable()
    await check("disabled")


async def test_requests_to_no_provider_export_only_request_series(
    fake: FakeProvider, sidecar
) -> None:
    """provider="unknown" has request counts and durations but no breaker, attempt or other series."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    assert (await client.get("/nope/x")).status == 404
    assert (await client.get("/unknown/x")).status == 404
    families = {
        s.name for fam in text_string_to_metric_families(await scrape(client))
        for s in fam.samples if s.labels.get("provider") == "unknown"
    }
    assert families == {
        "sidecar_requests_total", "sidecar_requests_created",
        *(f"sidecar_request_duration_seconds{end}" for end in ("_bucket", "_count", "_sum", "_created")),
    }


@pytest.mark.parametrize("kind", ["proxy", "download"])
def test_any_render_applies_the_lazy_half_open(clock: FakeClock, kind: str) -> None:
    """Rendering the registry, with no request and no /metrics handler, shows OPEN turn HALF_OPEN."""
    download = DownloadConfig() if kind == "download" else None
    cfg = sidecar_config(provider("p", "http://127.0.0.1:9", kind=kind, download=download))
    svc = Services(cfg, clock=clock)
    rt = svc.registry.providers["p"]
    breaker = rt.hosts.breaker("h:80") if isinstance(rt, DownloadRuntime) else rt.breaker
    for _ in range(3):
        permit = breaker.acquire()
        assert isinstance(permit, Permit)
        breaker.record(permit, Outcome.FAILURE)
    assert value(samples(svc.metrics.render().decode()), "sidecar_breaker_state", provider="p",
                 state="open") == 1
    clock.advance(10.0)
    t = samples(svc.metrics.render().decode())
    states = {s: value(t, "sidecar_breaker_state", provider="p", state=s) for s in BREAKER_STATES}
    assert states == {s: float(s == "half_open") for s in BREAKER_STATES}
    assert value(t, "sidecar_breaker_transitions_total", provider="p",
                 from_state="open", to_state="half_open") == 1


async def test_promtool_finds_nothing_to_fix(fake: FakeProvider, sidecar, clock: FakeClock) -> None:
    """`promtool check metrics` (the real binary) accepts a /metrics page taken after real traffic."""
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not on PATH: `make test` installs it"
    client = await sidecar(sidecar_config(provider("p", fake.url, health=QUIET)), clock=clock)
    svc = client.app[SERVICES]
    await traffic(client, fake, clock)
    await svc.probes.run_once(svc.registry.providers["p"])
    text = await scrape(client)
    proc = await asyncio.create_subprocess_exec(
        promtool, "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), 60)
    assert proc.returncode == 0, out.decode() + err.decode()
    assert out.decode().strip() == "" and err.decode().strip() == ""
