"""SIGTERM under load, against the real sidecar subprocess: drain, refuse, finish in-flight, exit 0."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from ..support.fault_provider import OK_BODY, FaultProvider, mix
from ..support.polling import eventually
from ..support.process import start_sidecar

# Generous: on a loaded 2-core CI box the checks "during drain" must still land inside it.
DRAIN = 3.0
GRACE = 10.0
SLOW = 5.0  # each slow request takes this long at the provider (longer than the drain)
IN_FLIGHT = 20


def _config(slow: str, fast: str) -> str:
    return f"""
server: {{drain_time: {int(DRAIN * 1000)}ms, shutdown_grace: {int(GRACE * 1000)}ms}}
providers:
  slow: {{upstream: "{slow}", retry: {{max_attempts: 1}}}}
  fast: {{upstream: "{fast}"}}
"""


async def _fresh_get(url: str) -> int | None:
    """GET on a new connection; the status, or None when the connection is refused."""
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as s, s.get(url) as resp:
            await resp.read()
            return resp.status
    except aiohttp.ClientConnectorError:
        return None


async def test_sigterm_under_load_drains_then_finishes_in_flight(tmp_path: Path) -> None:
    """Readiness turns 503 at once, both listeners serve during drain_time, then refuse; in-flight finish."""
    slow = await FaultProvider(mix(latency_ratio=1.0, latency=(SLOW, SLOW))).start()
    fast = await FaultProvider().start()
    sc = await start_sidecar(_config(slow.url, fast.url), tmp_path)
    try:
        async with aiohttp.ClientSession() as session:

            async def call(i: int) -> tuple[int, bytes]:
                async with session.get(f"{sc.proxy}/slow/job/{i}", headers={"X-Request-Id": f"s{i}"}) as r:
                    return r.status, await r.read()

            calls = [asyncio.ensure_future(call(i)) for i in range(IN_FLIGHT)]

            await eventually(lambda: slow.inflight == IN_FLIGHT, timeout=10, interval=0.02,
                             what="every slow call in flight")
            sc.proc.send_signal(15)
            t0 = time.monotonic()

            async def not_ready() -> bool:
                return await _fresh_get(f"{sc.ops}/health/ready") == 503

            await eventually(not_ready, timeout=1.0, interval=0.02, what="readiness turning 503 at once")
            drained_by = time.monotonic() + DRAIN  # draining began between t0 and this 503
            # Still serving on both listeners, on new connections, during drain_time.
            assert await _fresh_get(f"{sc.proxy}/fast/x") == 200
            assert await _fresh_get(f"{sc.ops}/health/live") == 200
            assert time.monotonic() - t0 < DRAIN, "the during-drain checks took too long to mean anything"

            async def refused() -> bool:
                return await _fresh_get(f"{sc.proxy}/fast/x") is None

            await eventually(refused, timeout=drained_by + 1.5 - time.monotonic(), interval=0.02,
                             what="new connections refused after drain_time")
            assert time.monotonic() - t0 >= DRAIN * 0.9
            results = await asyncio.wait_for(asyncio.gather(*calls), GRACE)
        assert results == [(200, OK_BODY)] * IN_FLIGHT
        code = await asyncio.wait_for(sc.proc.wait(), GRACE)
        assert code == 0
        assert time.monotonic() - t0 < DRAIN + GRACE
        # Nothing was sent (or answered) twice.
        assert sorted(slow.by_request_id().values()) == [1] * IN_FLIGHT
        events = [e["event"] for e in sc.lines()]
        assert events.index("draining") < events.index("stopping") < events.index("stopped")
    finally:
        await sc.kill()
        await slow.close()
        await fast.close()


async def test_sigterm_when_idle_exits_zero_after_drain(tmp_path: Path) -> None:
    """With nothing in flight the process exits 0 shortly after drain_time, keep-alive clients or not."""
    fast = await FaultProvider().start()
    sc = await start_sidecar(_config(fast.url, fast.url), tmp_path)
    try:
        async with aiohttp.ClientSession() as session:  # holds an idle keep-alive connection
            async with session.get(f"{sc.proxy}/fast/x") as resp:
                assert resp.status == 200
                await resp.read()
            t0 = time.monotonic()
            code = await sc.stop(wait=DRAIN + GRACE)
        assert code == 0
        assert DRAIN * 0.9 <= time.monotonic() - t0 < DRAIN + 2.0
    finally:
        await sc.kill()
        await fast.close()
