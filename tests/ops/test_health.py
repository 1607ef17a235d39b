"""The /health endpoints: status codes and JSON, readiness rules, and local checks."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import pytest
from pytest_aiohttp import AiohttpServer

from sidecar import __version__
from sidecar.config import BreakerConfig, HealthConfig, SidecarConfig
from sidecar.config.load import load_config
from sidecar.ops.checks import LocalChecks, filesystem_check, memory_check, memory_limit, read_rss
from sidecar.ops.endpoints import CHECKS
from sidecar.ops.health import overall_status
from sidecar.policy.breaker import CircuitBreaker
from sidecar.policy.host_breakers import FROM_WORST, SUMMED
from sidecar.web.app import SERVICES, create_app

from ..support.configs import QUIET, provider, sidecar_config
from ..support.fake_provider import FakeProvider, Reply
from ..support.fakes import FakeClock
from ..support.ports import free_port
from ..support.sidecar_listener import start_listener

OK_CHECKS = {"filesystem": {"ok": True}, "memory": {"ok": True}}


async def json_of(client, path: str) -> tuple[int, dict]:
    resp = await client.get(path)
    return resp.status, await resp.json()


async def open_breaker(client, fake: FakeProvider, name: str) -> None:
    """Three 500s (the test failure_threshold) through the proxy open the provider's breaker."""
    fake.then(*[Reply(status=500)] * 3)
    await (await client.get(f"/{name}/x")).read()
    assert client.app[SERVICES].registry.providers[name].breaker.state.value == "open"


async def test_health_and_live(fake: FakeProvider, sidecar) -> None:
    """/health is 200 ok with version and uptime; /health/live is 200 whatever the providers do."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    status, body = await json_of(client, "/health")
    assert status == 200 and body["status"] == "ok" and body["version"] == __version__
    assert isinstance(body["uptime_seconds"], float) and body["uptime_seconds"] >= 0
    await open_breaker(client, fake, "p")
    assert await json_of(client, "/health/live") == (200, {"status": "alive"})


async def test_own_endpoints_on_the_ops_listener(fake: FakeProvider) -> None:
    """The ops listener serves every /health endpoint too, but no provider route."""
    config = sidecar_config(provider("p", fake.url))
    client = await start_listener(create_app(config, role="ops"), config)
    try:
        for path in ("/health", "/health/live", "/health/ready", "/health/detailed"):
            assert (await client.get(path)).status == 200, path
        assert (await client.get("/p/x")).status == 404
        assert fake.seen == []
    finally:
        await client.close()


async def test_ready_until_draining(fake: FakeProvider, sidecar) -> None:
    """/health/ready is 200, then 503 with reason "draining" once the process drains."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    assert await json_of(client, "/health/ready") == (200, {"status": "ready"})
    client.app[SERVICES].status.draining = True
    assert await json_of(client, "/health/ready") == (503, {"status": "not_ready", "reasons": ["draining"]})


async def test_open_breaker_of_critical_provider_fails_readiness(
    fake: FakeProvider, sidecar, clock: FakeClock
) -> None:
    """A critical provider's OPEN breaker is 503; HALF_OPEN is ready again; detailed is unhealthy."""
    client = await sidecar(sidecar_config(provider("c", fake.url, critical=True)), clock=clock)
    await open_breaker(client, fake, "c")
    status, body = await json_of(client, "/health/ready")
    assert status == 503 and body["reasons"] == ["c: breaker open"]
    status, body = await json_of(client, "/health/detailed")
    assert status == 503 and body["status"] == "unhealthy"
    clock.advance(10.0)  # recovery_timeout: HALF_OPEN, trials allowed
    assert (await client.get("/health/ready")).status == 200
    status, body = await json_of(client, "/health/detailed")
    assert body["providers"]["c"]["state"] == "half_open"


async def test_forced_open_critical_provider_fails_readiness(fake: FakeProvider, sidecar) -> None:
    """FORCED_OPEN counts like OPEN for readiness; DISABLED does not."""
    client = await sidecar(sidecar_config(provider("c", fake.url, critical=True)))
    breaker = client.app[SERVICES].registry.providers["c"].breaker
    breaker.force_open()
    assert (await json_of(client, "/health/ready"))[1]["reasons"] == ["c: breaker forced_open"]
    breaker.disable()
    assert (await client.get("/health/ready")).status == 200


async def test_open_breaker_of_non_critical_provider_is_only_degraded(
    fake: FakeProvider, sidecar
) -> None:
    """A non-critical provider's OPEN breaker leaves readiness 200 and /health/detailed 200 degraded."""
    client = await sidecar(sidecar_config(provider("n", fake.url), provider("ok", fake.url)))
    await open_breaker(client, fake, "n")
    assert (await client.get("/health/ready")).status == 200
    status, body = await json_of(client, "/health/detailed")
    assert (status, body["status"]) == (200, "degraded")
    assert body["providers"]["n"]["state"] == "open"
    assert body["providers"]["n"]["breaker"]["opened_count"] == 1
    assert body["providers"]["ok"]["state"] == "closed"


async def test_failed_probe_of_critical_provider_fails_readiness(fake: FakeProvider, sidecar) -> None:
    """A critical provider whose last probe failed makes readiness 503 until a probe succeeds."""
    fake.then(Reply(status=500))
    client = await sidecar(sidecar_config(provider("c", fake.url, critical=True, health=QUIET)))
    svc = client.app[SERVICES]
    await svc.probes.run_once(svc.registry.providers["c"])
    status, body = await json_of(client, "/health/ready")
    assert status == 503 and body["reasons"] == ["c: probe failed (http_500)"]
    assert (await json_of(client, "/health/detailed"))[1]["status"] == "unhealthy"
    await svc.probes.run_once(svc.registry.providers["c"])
    assert (await client.get("/health/ready")).status == 200


async def test_failed_probe_of_non_critical_provider_keeps_ready(fake: FakeProvider, sidecar) -> None:
    """A non-critical provider's failed probe is degraded, never unready."""
    fake.then(Reply(status=401))
    client = await sidecar(sidecar_config(provider("n", fake.url, health=QUIET)))
    svc = client.app[SERVICES]
    await svc.probes.run_once(svc.registry.providers["n"])
    assert (await client.get("/health/ready")).status == 200
    status, body = await json_of(client, "/health/detailed")
    assert (status, body["status"]) == (200, "degraded")
    probe = body["providers"]["n"]["probe"]
    assert probe["ok"] is False and probe["status"] == 401 and probe["error"] == "auth_failed"
    assert set(probe) == {"ok", "status", "latency_ms", "checked_at", "error"}


async def test_unconfigured_provider(sidecar) -> None:
    """An unconfigured (even critical) provider shows configured false, closed, no probe, and stays ready."""
    client = await sidecar(sidecar_config(provider("u", "", critical=True, health=QUIET)))
    assert (await client.get("/health/ready")).status == 200
    status, body = await json_of(client, "/health/detailed")
    assert (status, body["status"]) == (200, "healthy")
    view = body["providers"]["u"]
    assert view["configured"] is False and view["state"] == "closed" and view["probe"] is None
    assert view["critical"] is True


async def test_detailed_shape(fake: FakeProvider, sidecar) -> None:
    """/health/detailed has status, version, uptime, every provider with breaker and probe, and checks."""
    client = await sidecar(sidecar_config(provider("a", fake.url), provider("b", fake.url)))
    status, body = await json_of(client, "/health/detailed")
    assert status == 200 and body["status"] == "healthy" and body["version"] == __version__
    assert set(body) == {"status", "version", "uptime_seconds", "providers", "checks"}
    assert set(body["providers"]) == {"a", "b"}
    view = body["providers"]["a"]
    assert set(view) == {"configured", "critical", "state", "breaker", "probe", "hosts", "limits",
                         "shared_breaker"}
    for key in ("window_calls", "window_failures", "consecutive_failures", "state"):
        assert key in view["breaker"]
    assert view["hosts"] is None  # only a per-host provider (kind: download) lists hosts
    assert body["checks"]["filesystem"]["ok"] is True and body["checks"]["memory"]["ok"] is True
    assert isinstance(body["checks"]["memory"]["rss_bytes"], int)


async def test_detailed_sends_nothing_upstream(fake: FakeProvider, sidecar) -> None:
    """Fifty /health/detailed calls reach the provider zero times; only background probes do."""
    fast = HealthConfig(path="/probe", interval=0.05, timeout=0.5)
    client = await sidecar(sidecar_config(provider("p", fake.url, health=fast), provider("q", fake.url)))
    for _ in range(50):
        assert (await client.get("/health/detailed")).status == 200
    assert all(s.raw_path == "/probe" for s in fake.seen), [s.raw_path for s in fake.seen]
    breaker = client.app[SERVICES].registry.providers["p"].breaker.snapshot()
    assert breaker["total_calls"] == 0


async def test_failing_local_check_is_unhealthy(fake: FakeProvider, sidecar) -> None:
    """A failing filesystem (or memory) check makes /health/detailed 503 unhealthy, readiness untouched."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    checks = client.app[CHECKS]
    checks.filesystem = lambda: {"ok": False, "error": "PermissionError"}
    checks.invalidate()
    status, body = await json_of(client, "/health/detailed")
    assert (status, body["status"]) == (503, "unhealthy")
    assert body["checks"]["filesystem"] == {"ok": False, "error": "PermissionError"}
    assert (await client.get("/health/ready")).status == 200


def test_overall_status_rules() -> None:
    """healthy, degraded on a non-critical fault, unhealthy on a critical fault or a failed check."""
    assert overall_status({"a": (False, None), "b": (True, None)}, OK_CHECKS) == "healthy"
    assert overall_status({"a": (False, "breaker open"), "b": (True, None)}, OK_CHECKS) == "degraded"
    assert overall_status({"a": (True, "probe failed")}, OK_CHECKS) == "unhealthy"
    bad_mem = {**OK_CHECKS, "memory": {"ok": False}}
    assert overall_status({"a": (False, None)}, bad_mem) == "unhealthy"


def test_filesystem_check(tmp_path: Path) -> None:
    """A writable dir with room passes and leaves no file behind; a missing dir or too little space fails."""
    ok = filesystem_check(str(tmp_path))
    assert ok["ok"] is True and ok["writable"] is True and isinstance(ok["free_bytes"], int)
    assert list(tmp_path.iterdir()) == []
    missing = filesystem_check(str(tmp_path / "nope"))
    assert missing["ok"] is False and missing["writable"] is False
    assert str(missing["error"]).startswith("FileNotFoundError")
    full = filesystem_check(str(tmp_path), min_free=shutil.disk_usage(tmp_path).total + 1)
    assert full["ok"] is False and full["error"] == "low_disk_space"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_filesystem_check_read_only(tmp_path: Path) -> None:
    """A directory the process cannot write to fails the check."""
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert filesystem_check(str(ro))["ok"] is False


def test_memory_check_against_cgroup_limits(tmp_path: Path) -> None:
    """RSS is compared with the v2 limit, else v1; "max" and v1's huge value mean no limit."""
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmRSS:\t  102400 kB\n")
    v2, v1 = tmp_path / "memory.max", tmp_path / "limit_in_bytes"
    assert read_rss(str(status)) == 100 * 1024 * 1024
    v2.write_text("max\n")
    assert memory_limit(str(v2), str(v1)) is None
    v2.unlink()
    v1.write_text("9223372036854771712\n")
    assert memory_limit(str(v2), str(v1)) is None
    v1.write_text(str(200 * 1024 * 1024))
    ok = memory_check(str(status), str(v2), str(v1))
    assert ok["ok"] is True and ok["usage_ratio"] == 0.5 and ok["limit_bytes"] == 200 * 1024 * 1024
    v2.write_text(str(110 * 1024 * 1024))  # v2 wins over v1: 100/110 > 0.9
    bad = memory_check(str(status), str(v2), str(v1))
    assert bad["ok"] is False and bad["error"] == "memory_near_limit"


def test_memory_check_without_proc(tmp_path: Path) -> None:
    """Without /proc or a limit the check passes with nulls rather than failing the pod."""
    result = memory_check(str(tmp_path / "none"), str(tmp_path / "a"), str(tmp_path / "b"))
    assert result["ok"] is True and result["rss_bytes"] is None and result["limit_bytes"] is None


async def test_local_checks_are_cached_for_ttl() -> None:
    """Within the ttl the checks run once; after it they run again."""
    clock = FakeClock()
    runs: list[int] = []

    def fs() -> dict[str, object]:
        runs.append(1)
        return {"ok": True}

    checks = LocalChecks(clock, ttl=2.0, filesystem=fs, memory=lambda: {"ok": True})
    await checks.run()
    await checks.run()
    assert len(runs) == 1
    clock.advance(2.0)
    await checks.run()
    assert len(runs) == 2


def test_test_provider_helpers_are_what_the_tests_assume() -> None:
    """The readiness tests rely on failure_threshold 3 and recovery_timeout 10 of the test provider."""
    b = provider("x", "http://h").breaker
    assert (b.failure_threshold, b.recovery_timeout) == (3, 10.0)
    assert QUIET.interval >= 3600


def default_config_with(environ: dict[str, str]) -> SidecarConfig:
    """The embedded default, its file-download opened to http on loopback for fake file servers."""
    config = load_config(None, environ)
    dl = config.providers["file-download"]
    assert dl.download is not None
    download = dataclasses.replace(dl.download, allowed_hosts=("127.0.0.1",),
                                   allowed_schemes=("http",), allow_private_networks=True)
    providers = {**config.providers, "file-download": dataclasses.replace(dl, download=download)}
    return dataclasses.replace(config, providers=providers)


async def breaker_objects(client) -> tuple[dict[str, dict], dict[str, dict], dict]:
    """Every provider's breaker object from /health/detailed and /admin/breakers, and the
    file-download host table."""
    status, detailed = await json_of(client, "/health/detailed")
    assert status == 200
    status, admin = await json_of(client, "/admin/breakers")
    assert status == 200
    health = {name: view["breaker"] for name, view in detailed["providers"].items()}
    return health, admin["breakers"], detailed["providers"]["file-download"].get("hosts")


def assert_one_shape(health: dict[str, dict], admin: dict[str, dict]) -> None:
    """Every provider's breaker object has the keys of a single CircuitBreaker's, on both endpoints."""
    single = set(CircuitBreaker("x", BreakerConfig(), clock=FakeClock()).snapshot())
    assert len(health) == 7 and set(admin) == set(health)
    for name in health:
        assert set(health[name]) == single, name
        assert set(admin[name]) == single, name


async def test_breaker_objects_have_one_shape_with_the_default_config(sidecar, clock: FakeClock) -> None:
    """With the default config, file-download's breaker object looks like every other provider's."""
    client = await sidecar(default_config_with({}), clock=clock)
    health, admin, hosts = await breaker_objects(client)
    assert_one_shape(health, admin)
    assert hosts == {"count": 0, "capacity": 256, "evicted": 0, "breakers": {}}
    config = client.app[SERVICES].registry.providers["file-download"].config.breaker
    assert health["file-download"] == CircuitBreaker("x", config, clock=clock).snapshot()


async def test_breaker_objects_have_one_shape_after_hosts_failed(
    fake: FakeProvider, sidecar, clock: FakeClock, aiohttp_server: AiohttpServer
) -> None:
    """After a host opened, another failed and a proxy provider opened, the shapes still agree and
    file-download's values are the sums and the worst host's."""
    other = await FakeProvider().start(aiohttp_server)
    client = await sidecar(default_config_with({"SIDECAR_REPLICATE_UPSTREAM": fake.url}),
                           clock=clock)
    dead = f"http://127.0.0.1:{free_port()}/f"
    assert (await client.get(download(dead))).status == 502  # 3 refused attempts: opens
    assert (await client.get(download(dead))).status == 503  # short-circuited
    fake.then(Reply(status=500), Reply(body=b"ok"))  # 2 calls, 1 failure, then closed
    assert (await client.get(download(f"{fake.url}/b"))).status == 200
    other.then(Reply(status=503, headers={"Retry-After": "3600"}))  # 1 call, not retried
    assert (await client.get(download(f"{other.url}/c"))).status == 503
    fake.then(*[Reply(status=500)] * 5)  # replicate (threshold 5) opens on its 5th failure
    for _ in range(2):
        assert (await client.get("/replicate/v1/x")).status == 500
    health, admin, hosts = await breaker_objects(client)
    assert_one_shape(health, admin)
    assert health["replicate"]["state"] == "open"
    agg = health["file-download"]
    assert admin["file-download"] == agg
    assert (agg["state"], agg["consecutive_failures"], agg["retry_after_seconds"]) == ("open", 3, 5.0)
    assert (agg["window_calls"], agg["window_failures"], agg["failure_rate"]) == (6, 5, 0.8333)
    assert (agg["total_calls"], agg["total_successes"], agg["total_failures"]) == (6, 1, 5)
    assert (agg["total_rejected"], agg["opened_count"]) == (1, 1)
    per_host = hosts["breakers"]
    assert hosts["count"] == 3 and sorted(s["state"] for s in per_host.values()) == [
        "closed", "closed", "open"]
    assert_aggregated(agg, list(per_host.values()))
    clock.advance(5.0)  # the dead host's recovery_timeout: HALF_OPEN
    health, admin, hosts = await breaker_objects(client)
    assert_one_shape(health, admin)
    agg = health["file-download"]
    assert (agg["state"], agg["retry_after_seconds"], agg["consecutive_failures"]) == (
        "half_open", None, 3)
    assert_aggregated(agg, list(hosts["breakers"].values()))


def assert_aggregated(agg: dict, hosts: list[dict]) -> None:
    """The documented rules: SUMMED keys are sums, FROM_WORST keys the worst host's values."""
    for key in SUMMED:
        assert agg[key] == sum(h[key] for h in hosts), key
    rank = {"closed": 0, "half_open": 1, "open": 2}
    worst = max(hosts, key=lambda h: (rank[h["state"]], h["consecutive_failures"],
                                      h["retry_after_seconds"] or 0.0))
    for key in FROM_WORST:
        assert agg[key] == worst[key], key
    assert agg["state"] == worst["state"]
    assert agg["failure_rate"] == round(agg["window_failures"] / agg["window_calls"], 4)


def download(url: str) -> str:
    """The file-download path for ``url``."""
    return f"/file-download?url={quote(url, safe='')}"
