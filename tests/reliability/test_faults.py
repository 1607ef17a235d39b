"""What each injected fault produces at the client, and what it does to the breaker (README, Reliability)."""

from __future__ import annotations

import aiohttp
import pytest

from sidecar.config import Timeouts
from sidecar.web.app import SERVICES

from ..support.clocked_sleep import ClockedSleep
from ..support.configs import provider, sidecar_config
from ..support.fakes import FakeClock
from ..support.fault_provider import OK_BODY, Fault, FaultProvider


@pytest.fixture
async def faulty():
    fp = await FaultProvider().start()
    yield fp
    await fp.close()


async def _one(faulty: FaultProvider, sidecar, *faults: Fault, method: str = "GET", **app):
    faulty.then(*faults)
    client = await sidecar(sidecar_config(provider(
        "p", faulty.url, timeouts=Timeouts(connect=1.0, attempt=0.5, total=3.0))), **app)
    resp = await client.request(method, "/p/x")
    body = await resp.read()
    snap = client.app[SERVICES].registry.providers["p"].breaker.snapshot()
    return resp, body, snap


async def test_503_is_retried_then_returned(faulty: FaultProvider, sidecar) -> None:
    """Three 503s: the GET is tried three times and the provider's last 503 comes back as is."""
    resp, body, snap = await _one(faulty, sidecar, *[Fault("status", status=503)] * 3)
    assert (resp.status, body) == (503, b'{"fault": "status 503"}')
    assert "X-Sidecar-Error" not in resp.headers and resp.headers["X-Sidecar-Attempts"] == "3"
    assert snap["total_failures"] == 3 and len(faulty.seen) == 3


async def test_429_is_retried_after_retry_after_and_not_a_failure(
    faulty: FaultProvider, sidecar
) -> None:
    """A 429 with Retry-After 1 is retried after 1 s (when the pause it started is over) and never
    counts as a breaker failure."""
    sleep = ClockedSleep(FakeClock())
    resp, body, snap = await _one(faulty, sidecar, Fault("rate_limit", retry_after="1"), Fault(),
                                  clock=sleep.clock, sleep=sleep)
    assert (resp.status, body) == (200, OK_BODY) and resp.headers["X-Sidecar-Attempts"] == "2"
    assert sleep.delays == [1.0]
    assert snap["total_failures"] == 0


async def test_reset_before_response_is_retried_then_502(faulty: FaultProvider, sidecar) -> None:
    """A connection reset before any byte is a breaker failure, retried, then 502 upstream_unreachable."""
    resp, _body, snap = await _one(faulty, sidecar, *[Fault("reset")] * 3)
    assert resp.status == 502 and resp.headers["X-Sidecar-Error"] == "upstream_unreachable"
    assert resp.headers["X-Sidecar-Attempts"] == "3"
    assert snap["total_failures"] == 3


async def test_reset_before_response_of_a_post_is_not_resent(faulty: FaultProvider, sidecar) -> None:
    """A plain POST whose connection resets is answered 502 and reached the provider once."""
    resp, _body, _snap = await _one(faulty, sidecar, Fault("reset"), method="POST")
    assert resp.status == 502 and resp.headers["X-Sidecar-Error"] == "upstream_unreachable"
    assert len(faulty.seen) == 1


@pytest.mark.parametrize("kind", ["reset_mid_body", "short_body"])
async def test_small_body_cut_short_is_502(faulty: FaultProvider, sidecar, kind: str) -> None:
    """A small body that breaks off is 502 upstream_unreachable, sent once, and not a breaker failure."""
    resp, _body, snap = await _one(faulty, sidecar, Fault(kind, body_size=4096))
    assert resp.status == 502 and resp.headers["X-Sidecar-Error"] == "upstream_unreachable"
    assert len(faulty.seen) == 1 and snap["total_failures"] == 0


async def test_small_body_that_stalls_is_504_after_attempt_timeout(faulty: FaultProvider, sidecar) -> None:
    """Headers then silence: after timeouts.attempt of no bytes the client gets 504, nothing hangs."""
    resp, _body, _snap = await _one(faulty, sidecar, Fault("stall", body_size=4096))
    assert resp.status == 504 and resp.headers["X-Sidecar-Error"] == "upstream_timeout"
    assert len(faulty.seen) == 1


@pytest.mark.parametrize("kind", ["reset_mid_body", "short_body", "stall"])
async def test_streamed_body_cut_short_cuts_the_client(faulty: FaultProvider, sidecar, kind: str) -> None:
    """A streamed (> 64 KiB) body that breaks off cuts the client's connection: it never looks complete."""
    faulty.then(Fault(kind, body_size=256 * 1024))
    client = await sidecar(sidecar_config(provider(
        "p", faulty.url, timeouts=Timeouts(connect=1.0, attempt=0.5, total=3.0))))
    resp = await client.get("/p/x")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert len(faulty.seen) == 1


async def test_trickled_body_arrives_whole(faulty: FaultProvider, sidecar) -> None:
    """A slow body whose every chunk comes within the attempt timeout passes through whole."""
    resp, body, snap = await _one(faulty, sidecar, Fault("trickle", body_size=2048, chunk_delay=0.02))
    assert resp.status == 200 and body == b"x" * 2048
    assert snap["total_failures"] == 0


async def test_latency_over_the_attempt_timeout_is_504(faulty: FaultProvider, sidecar) -> None:
    """A provider slower than timeouts.attempt: retried, then 504 upstream_timeout, each a failure."""
    resp, _body, snap = await _one(faulty, sidecar, *[Fault("ok", delay=2.0)] * 3)
    assert resp.status == 504 and resp.headers["X-Sidecar-Error"] == "upstream_timeout"
    assert snap["total_failures"] >= 2


async def test_open_breaker_answers_circuit_open_without_calling(faulty: FaultProvider, sidecar) -> None:
    """After failure_threshold failures the next request is 503 circuit_open with Retry-After, unsent."""
    faulty.then(*[Fault("status", status=500)] * 3)
    client = await sidecar(sidecar_config(provider("p", faulty.url)))
    await (await client.post("/p/a")).read()
    await (await client.post("/p/b")).read()
    await (await client.post("/p/c")).read()
    resp = await client.get("/p/d")
    assert resp.status == 503 and resp.headers["X-Sidecar-Error"] == "circuit_open"
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["state"] == "open"
    assert len(faulty.seen) == 3
