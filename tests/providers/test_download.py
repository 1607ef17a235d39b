"""The file-download provider through a real sidecar app and real fake file servers on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpServer
from structlog.testing import capture_logs

from sidecar.config import RetryConfig, ServerConfig
from sidecar.config.load import parse_config
from sidecar.policy.breaker import BreakerState
from sidecar.policy.host_breakers import HostBreakers
from sidecar.providers.runtime import DownloadRuntime, new_session
from sidecar.upstream.ssrf import guarded_connector
from sidecar.web.app import SERVICES

from ..support.configs import sidecar_config
from ..support.downloads import NAME, MiB, download_config, path_for
from ..support.fake_provider import FakeProvider, Reply, has_ipv6_loopback
from ..support.fakes import FakeClock
from ..support.metric_samples import metric
from ..support.polling import eventually
from ..support.ports import free_port
from ..support.process import start_sidecar
from ..support.resolvers import StaticResolver

REPO = Path(__file__).resolve().parents[2]


def runtime(client: Any) -> DownloadRuntime:
    rt = client.app[SERVICES].registry.providers[NAME]
    assert isinstance(rt, DownloadRuntime)
    return rt


def hosts_of(client: Any) -> HostBreakers:
    return runtime(client).hosts


async def test_file_is_streamed_with_its_headers(fake: FakeProvider, sidecar) -> None:
    """The body and the file's headers reach the client; cookies and bot credentials don't cross."""
    body = bytes(range(256)) * 400
    fake.then(Reply(body=body, headers={
        "Content-Type": "image/png", "Content-Disposition": 'attachment; filename="a.png"',
        "Set-Cookie": "session=1", "Strict-Transport-Security": "max-age=1", "ETag": '"v1"'}))
    client = await sidecar(download_config())
    resp = await client.get(path_for(f"{fake.url}/files/a.png?sig=a%2Fb"),
                            headers={"Authorization": "Bearer bot", "Cookie": "c=1", "Accept": "*/*"})
    assert resp.status == 200 and await resp.read() == body
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Content-Length"] == str(len(body))
    assert resp.headers["Content-Disposition"] == 'attachment; filename="a.png"'
    assert resp.headers["ETag"] == '"v1"' and resp.headers["X-Sidecar-Attempts"] == "1"
    assert "Set-Cookie" not in resp.headers and "Strict-Transport-Security" not in resp.headers
    seen = fake.seen[0]
    assert seen.raw_path == "/files/a.png?sig=a%2Fb"
    assert "Authorization" not in seen.headers and "Cookie" not in seen.headers
    assert seen.headers["Accept"] == "*/*"


async def test_head_returns_headers_only(fake: FakeProvider, sidecar) -> None:
    """HEAD is sent as HEAD and answered with the file's length and no body."""
    fake.then(Reply(body=b"x" * 5000, headers={"Content-Type": "video/mp4"}))
    client = await sidecar(download_config())
    resp = await client.head(path_for(f"{fake.url}/v.mp4"))
    assert resp.status == 200 and resp.headers["Content-Length"] == "5000"
    assert await resp.read() == b"" and fake.seen[0].method == "HEAD"


@pytest.mark.parametrize(
    "query",
    ["", "?url=", "?url=example.com/a.png", "?url=http%3A%2F%2F%5B%3A%3A1", "?url=http%3A%2F%2F%2Fx",
     "?url=http%3A%2F%2F127.0.0.1%2Fa&url=http%3A%2F%2F127.0.0.1%2Fb",
     "?url=http%3A%2F%2Fu%3Ap%40127.0.0.1%2Fa", "?url=localhost%3A8080%2Ff",
     "?url=127.0.0.1%3A8080%2Ff", "?url=%2F%2F127.0.0.1%2Ff", "?url=%2Ff", "?url=%3A%2F%2Fx"],
)
async def test_malformed_url_is_bad_request(fake: FakeProvider, sidecar, query: str) -> None:
    """Missing, scheme-less, unparsable, host-less, repeated or credentialed url= is 400."""
    client = await sidecar(download_config())
    resp = await client.get(f"/{NAME}{query}")
    assert resp.status == 400 and (await resp.json())["error"] == "bad_request"
    assert fake.seen == []


async def test_other_methods_are_refused(sidecar) -> None:
    """A POST to the download provider is 405, never sent anywhere."""
    client = await sidecar(download_config())
    resp = await client.post(path_for("http://127.0.0.1/x"), data=b"x")
    assert resp.status == 405


async def test_get_is_retried_before_the_first_byte(fake: FakeProvider, sidecar) -> None:
    """A 503 and a reset connection are retried; the client sees only the final file."""
    fake.then(Reply(status=503), Reply(reset=True), Reply(body=b"file"))
    client = await sidecar(download_config())
    resp = await client.get(path_for(f"{fake.url}/f"))
    assert resp.status == 200 and await resp.read() == b"file"
    assert resp.headers["X-Sidecar-Attempts"] == "3" and len(fake.seen) == 3


async def test_too_large_by_content_length_is_413(fake: FakeProvider, sidecar) -> None:
    """A declared length over max_download_size is refused before any byte is sent."""
    fake.then(Reply(stream_bytes=2000))
    client = await sidecar(download_config(max_download_size=1000))
    resp = await client.get(path_for(f"{fake.url}/big"))
    assert resp.status == 413 and (await resp.json())["error"] == "body_too_large"
    host = hosts_of(client).host_table()["breakers"]
    assert host[f"127.0.0.1:{fake.port}"]["total_failures"] == 0  # type: ignore[index]


async def test_too_large_while_streaming_cuts_the_connection(fake: FakeProvider, sidecar) -> None:
    """A chunked body over the limit is cut: the client sees a broken stream, never a complete one."""
    fake.then(Reply(stream_bytes=3 * MiB, content_length=False))
    client = await sidecar(download_config(max_download_size=MiB))
    received = 0
    async with client.get(path_for(f"{fake.url}/chunked")) as resp:
        assert resp.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += len(chunk)
    assert received <= MiB
    assert hosts_of(client).host_state(f"127.0.0.1:{fake.port}") is BreakerState.CLOSED
    assert metric(client, "sidecar_upstream_attempts_total", provider=NAME, result="failure") == 0


async def test_redirects_are_followed(fake: FakeProvider, sidecar) -> None:
    """Absolute and relative Locations are followed to the file."""
    fake.then(Reply(status=302, body=b"", headers={"Location": f"{fake.url}/b"}),
              Reply(status=301, body=b"", headers={"Location": "/c?x=1"}),
              Reply(body=b"final"))
    client = await sidecar(download_config())
    resp = await client.get(path_for(f"{fake.url}/a"))
    assert resp.status == 200 and await resp.read() == b"final"
    assert [s.raw_path for s in fake.seen] == ["/a", "/b", "/c?x=1"]


async def test_too_many_redirects_is_502(fake: FakeProvider, sidecar) -> None:
    """The sixth redirect in a row is not followed: 502 too_many_redirects."""
    fake.default = Reply(status=302, body=b"", headers={"Location": "/again"})
    client = await sidecar(download_config())
    resp = await client.get(path_for(f"{fake.url}/start"))
    assert resp.status == 502 and (await resp.json())["error"] == "too_many_redirects"
    assert len(fake.seen) == 6


FORBIDDEN = [
    ("http://localhost:{port}/f", {"allowed_hosts": ("localhost",), "allow_private_networks": False},
     "loopback"),
    ("http://127.0.0.1:{port}/f", {"allow_private_networks": False}, "loopback"),
    ("http://[::1]:{port}/f", {"allowed_hosts": ("::1",), "allow_private_networks": False},
     "loopback"),
    ("http://[::ffff:127.0.0.1]:{port}/f",
     {"allowed_hosts": ("::ffff:127.0.0.1",), "allow_private_networks": False},
     "IPv4-mapped loopback"),
    ("http://169.254.169.254/latest/meta-data/", {"allowed_hosts": ("169.254.169.254",)},
     "cloud metadata"),
    ("http://[fd00:ec2::254]/latest/", {"allowed_hosts": ("fd00:ec2::254",)}, "cloud metadata"),
    ("http://[::ffff:a9fe:a9fe]/", {"allowed_hosts": ("::ffff:169.254.169.254",)},
     "IPv4-mapped cloud metadata"),
    ("http://evil.example/f", {}, "not in allowed_hosts"),
    ("http://127.0.0.1:{port}/f", {"allowed_schemes": ("https",)}, "scheme 'http'"),
    ("ftp://127.0.0.1/f", {}, "scheme 'ftp'"),
]


@pytest.mark.parametrize(("url", "overrides", "reason"), FORBIDDEN)
async def test_forbidden_targets(fake: FakeProvider, sidecar, url: str, overrides: dict[str, Any],
                                 reason: str) -> None:
    """Each forbidden target is 403 with its reason, logged, never sent and no breaker call."""
    client = await sidecar(download_config(**overrides))
    with capture_logs() as logs:
        resp = await client.get(path_for(url.format(port=fake.port)))
    body = await resp.json()
    assert resp.status == 403 and body["error"] == "forbidden_target"
    assert reason in body["detail"] and body["provider"] == NAME
    assert any(e["event"] == "download_refused" and reason in e["reason"] for e in logs)
    assert fake.seen == []
    assert all(s["total_calls"] == 0 for s in hosts_of(client).host_table()["breakers"].values())  # type: ignore[attr-defined]
    assert metric(client, "sidecar_upstream_attempts_total", provider=NAME, result="success") == 0


def breaker_series(client: Any) -> dict[str, float]:
    """Every breaker-related sample of the download provider, as name{labels} -> value."""
    text = client.app[SERVICES].metrics.render().decode()
    series = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.labels.get("provider") == NAME and not sample.name.startswith("sidecar_request"):
                series[f"{sample.name}{sorted(sample.labels.items())}"] = sample.value
    return series


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("file:///etc/passwd", "file"), ("data:text/plain,hi", "data"),
     ("javascript:alert(1)", "javascript"), ("ftp://x/y", "ftp"), ("gopher://x", "gopher"),
     ("FILE:///etc/passwd", "file"), ("https://127.0.0.1/f", "https")],
)
async def test_disallowed_scheme_is_forbidden_target(
    fake: FakeProvider, sidecar, url: str, scheme: str
) -> None:
    """A URL whose scheme is not allowed is 403 forbidden_target naming it; no breaker call."""
    client = await sidecar(download_config())  # allowed_schemes: [http]
    before = breaker_series(client)
    assert any(key.startswith("sidecar_upstream_attempts_total") for key in before)
    with capture_logs() as logs:
        resp = await client.get(path_for(url))
    body = await resp.json()
    assert resp.status == 403 and resp.headers["X-Sidecar-Error"] == "forbidden_target"
    assert body["error"] == "forbidden_target" and body["provider"] == NAME
    assert f"scheme {scheme!r} is not allowed" in body["detail"]
    assert any(e["event"] == "download_refused" and scheme in e["reason"] for e in logs)
    assert fake.seen == []
    assert breaker_series(client) == before
    snapshot = hosts_of(client).snapshot()
    assert snapshot["total_calls"] == 0 and snapshot["total_rejected"] == 0
    assert metric(client, "sidecar_requests_total", provider=NAME, code="403") == 1


@pytest.mark.parametrize(
    ("location", "reason"),
    [("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
     ("http://[::ffff:169.254.169.254]/", "IPv4-mapped cloud metadata"),
     ("http://metadata.test/computeMetadata/v1/", "cloud metadata"),
     ("http://evil.example/x", "not in allowed_hosts"),
     ("file:///etc/passwd", "scheme 'file'")],
)
async def test_redirect_hops_are_checked(fake: FakeProvider, sidecar, location: str, reason: str) -> None:
    """A redirect from an allowed host to a forbidden target is refused even with private networks open."""
    fake.then(Reply(status=302, body=b"", headers={"Location": location}))
    allowed = ("127.0.0.1", "169.254.169.254", "::ffff:169.254.169.254", "metadata.test")
    client = await sidecar(download_config(allowed_hosts=allowed))
    rt = runtime(client)
    await rt.session.close()  # resolve metadata.test through the guard, without real DNS
    rt._session = new_session(rt.config, guarded_connector(
        True, inner=StaticResolver({"metadata.test": ["169.254.169.254"]})))
    resp = await client.get(path_for(f"{fake.url}/r"))
    body = await resp.json()
    assert resp.status == 403 and body["error"] == "forbidden_target" and reason in body["detail"]
    assert len(fake.seen) == 1


@pytest.fixture
async def fake6(aiohttp_server: AiohttpServer) -> FakeProvider:
    """A fake file server on [::1]; the test is skipped where the machine has no IPv6 loopback."""
    if not has_ipv6_loopback():
        pytest.skip("this machine has no IPv6 loopback")
    return await FakeProvider(host="::1").start(aiohttp_server)


def loaded_download_config(*hosts: str, allow_private: bool = True) -> Any:
    """The download provider as the config loader builds it from YAML-shaped data."""
    return parse_config({"providers": {NAME: {
        "kind": "download", "allowed_hosts": list(hosts), "allowed_schemes": ["http"],
        "allow_private_networks": allow_private}}}, {})


@pytest.mark.parametrize("entry", ["::1", "[::1]", "0:0:0:0:0:0:0:1"])
@pytest.mark.parametrize("url_host", ["[::1]", "[0:0:0:0:0:0:0:1]", "[0::1]"])
async def test_ipv6_literal_in_allowed_hosts_downloads(
    fake6: FakeProvider, sidecar, entry: str, url_host: str
) -> None:
    """An IPv6 literal, bare or bracketed, allows that address however the URL spells it."""
    fake6.then(Reply(body=b"over ipv6"))
    client = await sidecar(loaded_download_config(entry))
    resp = await client.get(path_for(f"http://{url_host}:{fake6.port}/f.bin"))
    assert resp.status == 200 and await resp.read() == b"over ipv6"
    assert [s.raw_path for s in fake6.seen] == ["/f.bin"]
    assert hosts_of(client).host_state(f"::1:{fake6.port}") is BreakerState.CLOSED


async def test_ipv6_loopback_is_refused_without_private_networks(
    fake6: FakeProvider, sidecar
) -> None:
    """Listing ::1 does not open loopback: without allow_private_networks it is 403, never sent."""
    client = await sidecar(loaded_download_config("::1", allow_private=False))
    resp = await client.get(path_for(f"http://[::1]:{fake6.port}/f"))
    body = await resp.json()
    assert resp.status == 403 and body["error"] == "forbidden_target"
    assert "loopback" in body["detail"]
    assert fake6.seen == [] and hosts_of(client).snapshot()["total_calls"] == 0


@pytest.mark.parametrize("entry", ["fd00:ec2::254", "[FD00:EC2:0::254]"])
async def test_listed_ipv6_metadata_address_stays_refused(sidecar, entry: str) -> None:
    """fd00:ec2::254 is 403 cloud metadata even when listed and private networks are open."""
    client = await sidecar(loaded_download_config(entry))
    resp = await client.get(path_for("http://[fd00:ec2::254]/latest/meta-data/"))
    body = await resp.json()
    assert resp.status == 403 and body["error"] == "forbidden_target"
    assert "cloud metadata" in body["detail"]
    assert hosts_of(client).snapshot()["total_calls"] == 0


async def test_unlisted_ipv6_address_is_refused(fake6: FakeProvider, sidecar) -> None:
    """An IPv6 address that is not on the list is 403 not in allowed_hosts."""
    client = await sidecar(loaded_download_config("::2"))
    resp = await client.get(path_for(f"http://[::1]:{fake6.port}/f"))
    body = await resp.json()
    assert resp.status == 403 and "'::1' is not in allowed_hosts" in body["detail"]
    assert fake6.seen == []


async def test_only_allowed_resolved_addresses_are_connected(fake: FakeProvider, sidecar) -> None:
    """A name resolving to metadata and loopback is fetched from loopback only."""
    fake.then(Reply(body=b"via loopback"))
    client = await sidecar(download_config(allowed_hosts=("mixed.test",)))
    rt = runtime(client)
    await rt.session.close()
    rt._session = new_session(rt.config, guarded_connector(
        True, inner=StaticResolver({"mixed.test": ["169.254.169.254", "127.0.0.1"]})))
    resp = await client.get(path_for(f"http://mixed.test:{fake.port}/f"))
    assert resp.status == 200 and await resp.read() == b"via loopback"


async def test_dead_host_opens_only_its_own_breaker(fake: FakeProvider, sidecar, clock: FakeClock) -> None:
    """Connection refused opens the dead host's breaker (logged with its host); another host still
    downloads."""
    dead = f"http://127.0.0.1:{free_port()}/f"
    client = await sidecar(download_config(), clock=clock)
    with capture_logs() as logs:
        resp = await client.get(path_for(dead))
    assert resp.status == 502 and resp.headers["X-Sidecar-Attempts"] == "3"
    opened = [e for e in logs if e["event"] == "breaker_transition"]
    assert [(e["provider"], e["host"], e["to_state"]) for e in opened] == [
        (NAME, dead.split("/")[2], "open")]
    resp = await client.get(path_for(dead))
    assert resp.status == 503 and resp.headers["X-Sidecar-Error"] == "circuit_open"
    assert resp.headers["Retry-After"] == "10"
    fake.then(Reply(body=b"alive"))
    resp = await client.get(path_for(f"{fake.url}/f"))
    assert resp.status == 200 and await resp.read() == b"alive"
    hosts = hosts_of(client)
    assert hosts.host_state(f"127.0.0.1:{fake.port}") is BreakerState.CLOSED
    assert hosts.state is BreakerState.OPEN
    assert metric(client, "sidecar_breaker_state", provider=NAME, state="open") == 1
    assert metric(client, "sidecar_breaker_transitions_total", provider=NAME,
                  from_state="closed", to_state="open") == 1


async def test_admin_actions_apply_to_every_host(fake: FakeProvider, sidecar) -> None:
    """force_open refuses known and new hosts (no Retry-After); reset lets downloads through again."""
    client = await sidecar(download_config())
    assert (await client.get(path_for(f"{fake.url}/a"))).status == 200
    hosts = hosts_of(client)
    hosts.force_open()
    for url in (f"{fake.url}/a", f"http://127.0.0.1:{free_port()}/new"):
        resp = await client.get(path_for(url))
        assert resp.status == 503 and "Retry-After" not in resp.headers
    assert metric(client, "sidecar_breaker_state", provider=NAME, state="forced_open") == 1
    hosts.reset()
    assert (await client.get(path_for(f"{fake.url}/a"))).status == 200
    assert hosts.state is BreakerState.CLOSED and len(fake.seen) == 2


async def test_bulkhead_refuses_downloads_over_max_concurrent(fake: FakeProvider, sidecar) -> None:
    """With max_concurrent 1 and a download in flight, the next is 503 provider_overloaded, unsent."""
    release = asyncio.Event()
    fake.then(Reply(hold=release, body=b"file"))
    cfg = download_config()
    client = await sidecar(sidecar_config(dataclasses.replace(cfg.providers[NAME], max_concurrent=1)))
    slow = asyncio.ensure_future(client.get(path_for(f"{fake.url}/slow")))
    await eventually(lambda: fake.inflight, what="the first download at the file server")
    resp = await client.get(path_for(f"{fake.url}/fast"), headers={"X-Request-Id": "r-2"})
    assert resp.status == 503 and (await resp.json())["error"] == "provider_overloaded"
    assert resp.headers["X-Request-Id"] == "r-2" and "Retry-After" not in resp.headers
    release.set()
    assert (await slow).status == 200 and len(fake.seen) == 1
    assert metric(client, "sidecar_requests_total", provider=NAME, code="503") == 1


async def test_downloads_get_request_ids_and_access_log_as_proxied_calls(
    fake: FakeProvider, sidecar
) -> None:
    """A download's request id comes from the app's seeded PRNG and it gets an access log line."""
    cfg = dataclasses.replace(download_config(), server=ServerConfig(access_log=True))
    client = await sidecar(cfg, rng=random.Random(3))
    with capture_logs() as logs:
        resp = await client.get(path_for(f"{fake.url}/f"))
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == f"{random.Random(3).getrandbits(128):032x}"
    lines = [e for e in logs if e["event"] == "request"]
    assert len(lines) == 1
    assert lines[0]["provider"] == NAME and lines[0]["status"] == 200
    assert lines[0]["request_id"] == resp.headers["X-Request-Id"]


async def test_retries_share_the_provider_budget(sidecar) -> None:
    """Two dead hosts draw on one retry budget: the second request is not retried."""
    retry = RetryConfig(max_attempts=2, base_delay=0.01, budget_ratio=0.0, budget_min_per_second=0.1)
    cfg = download_config()
    pc = dataclasses.replace(cfg.providers[NAME], retry=retry)
    client = await sidecar(sidecar_config(pc))
    for expected in ("2", "1"):
        resp = await client.get(path_for(f"http://127.0.0.1:{free_port()}/f"))
        assert resp.headers["X-Sidecar-Attempts"] == expected


@pytest.mark.slow
async def test_500_mib_download_keeps_memory_flat(fake: FakeProvider, tmp_path: Path) -> None:
    """A 500 MiB file streams through a sidecar process whose RSS grows by less than 30 MiB."""
    size = 500 * MiB
    sc = await start_sidecar(
        "server: {drain_time: 0s, shutdown_grace: 1s}\n"
        "providers:\n"
        "  file-download:\n"
        "    kind: download\n"
        "    allowed_hosts: [127.0.0.1]\n"
        "    allowed_schemes: [http]\n"
        "    allow_private_networks: true\n"
        "    max_download_size: 1GiB\n",
        tmp_path,
    )
    try:
        fake.then(Reply(stream_bytes=MiB), Reply(stream_bytes=size))
        url = f"{sc.proxy}{path_for(fake.url + '/big.bin')}"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as warm:
                assert len(await warm.read()) == MiB
            baseline = sc.rss()
            peak, received, next_sample = baseline, 0, 0
            async with session.get(url) as resp:
                assert resp.status == 200 and resp.content_length == size
                async for chunk in resp.content.iter_chunked(1 << 20):
                    received += len(chunk)
                    if received >= next_sample:
                        peak = max(peak, sc.rss())
                        next_sample += 8 * MiB
        assert received == size
        assert peak - baseline < 30 * MiB, f"RSS grew by {(peak - baseline) / MiB:.1f} MiB"
    finally:
        await sc.stop()
