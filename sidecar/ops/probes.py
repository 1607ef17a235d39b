"""Background health probes: one task per probed provider; the runner keeps each one's last result.

A probe is *not* a breaker call: it uses a small session of its own, never asks
the breaker for a permit and never records an outcome, so a failing probe cannot open a breaker and
an open breaker does not stop the probe that would show the provider is back. ``/health/detailed``
only reads what the probes left behind, so calling it never sends traffic upstream.

The first probe of each provider waits a random 0..interval (the injected rng) so that pods started
together don't probe in lockstep; then one probe every ``health.interval`` after the previous ended.
Every wait goes through the injected ``sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeGuard

import aiohttp
from yarl import URL

from .. import __version__
from ..logs import get_logger
from ..providers.registry import ProviderRegistry
from ..providers.runtime import ProviderRuntime, ProxyRuntime
from .metrics import Metrics

__all__ = ["ProbeResult", "ProbeRunner", "classify_status", "is_probed", "probe_once"]

_MAX_ERROR = 200


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    status: int | None
    latency_ms: float
    checked_at: str
    error: str | None


def is_probed(rt: ProviderRuntime) -> TypeGuard[ProxyRuntime]:
    """A configured proxy provider with a ``health`` block and every key it needs."""
    cfg = rt.config
    return (
        isinstance(rt, ProxyRuntime) and cfg.health is not None and cfg.configured
        and bool(rt.base_url) and cfg.has_credentials
    )


def classify_status(status: int) -> str | None:
    """The error of a probe that got an answer, or None when the answer means "up"."""
    if status in (401, 403):
        return "auth_failed"  # a wrong key is a real fault, not a sign of life
    if status >= 500:
        return f"http_{status}"
    return None


def new_probe_session() -> aiohttp.ClientSession:
    """Small and separate from the forwarding pools: a probe never waits behind real traffic."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=8, ttl_dns_cache=60, force_close=True),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        headers={"User-Agent": f"egress-sidecar-probe/{__version__}"},
    )


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def probe_once(
    rt: ProxyRuntime,
    session: aiohttp.ClientSession,
    *,
    clock: Callable[[], float],
    wall: Callable[[], float],
) -> ProbeResult:
    """Send one probe and turn whatever happens into a ``ProbeResult``; never raises (but cancels)."""
    hc = rt.config.health
    assert hc is not None
    url = URL(rt.base_url + hc.path, encoded=True)
    started = clock()
    status: int | None = None
    error: str | None
    try:
        async with session.request(
            hc.method, url, headers=dict(rt.auth_headers), allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=hc.timeout),
        ) as resp:
            status = resp.status
            error = classify_status(status)
    except TimeoutError:
        error = "timeout"
    except (aiohttp.ClientError, OSError) as err:
        # aiohttp's messages name host and port, never the headers: no secret can leak here.
        error = f"connect_error: {err}"[:_MAX_ERROR]
    latency = clock() - started
    return ProbeResult(
        ok=error is None, status=status, latency_ms=round(latency * 1000, 1),
        checked_at=_iso(wall()), error=error,
    )


class ProbeRunner:
    """Owns the probe session, tasks and results of one registry; ``start()`` then ``close()``."""

    def __init__(
        self,
        registry: ProviderRegistry,
        metrics: Metrics,
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._rng = rng
        self._results: dict[str, ProbeResult] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._log = get_logger("probe")

    @property
    def probed(self) -> list[str]:
        return [rt.name for rt in self._registry.providers.values() if is_probed(rt)]

    def result(self, provider: str) -> ProbeResult | None:
        """The provider's last probe result; None before its first probe or when it is not probed."""
        return self._results.get(provider)

    def start(self) -> None:
        targets = [rt for rt in self._registry.providers.values() if is_probed(rt)]
        if not targets or self._tasks:
            return
        self._session = new_probe_session()
        for rt in targets:
            self._tasks.append(asyncio.create_task(self._loop(rt), name=f"probe-{rt.name}"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run_once(self, rt: ProxyRuntime) -> ProbeResult:
        """Probe one provider now and record the result (the loop's step; also for tests)."""
        assert self._session is not None, "probe runner not started"
        result = await probe_once(rt, self._session, clock=self._clock, wall=self._wall)
        previous = self._results.get(rt.name)
        self._results[rt.name] = result
        self._metrics.provider(rt.name).probe(result.ok, result.latency_ms / 1000)
        if not result.ok and (previous is None or previous.ok):
            self._log.warning("probe_failed", provider=rt.name, status=result.status,
                              error=result.error)
        elif result.ok and previous is not None and not previous.ok:
            self._log.info("probe_recovered", provider=rt.name, status=result.status)
        return result

    async def _loop(self, rt: ProxyRuntime) -> None:
        hc = rt.config.health
        assert hc is not None
        await self._sleep(self._rng.uniform(0, hc.interval))
        while True:
            try:
                await self.run_once(rt)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # a bug here must not end the provider's probing for good
                self._log.error("probe_crashed", provider=rt.name, error=repr(err)[:_MAX_ERROR])
            await self._sleep(hc.interval)
