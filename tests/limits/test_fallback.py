"""FallbackLimiter on a virtual clock: switch at the first failure, come back with backoff, no flapping."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from sidecar.limits.api import Completion, FleetUnavailable, RateLimited
from sidecar.limits.fallback import FallbackLimiter, Mode
from sidecar.limits.local import LocalBackend
from sidecar.limits.queue import QueuedLimiter
from sidecar.policy.admission import PROVIDER_SCOPE, RateLimitConfig, Reason, Scope
from tests.support.virtual_time import run_virtual

P = "replicate"
ONE = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(concurrency=1))]


class _Flaky(LocalBackend):
    """A stand-in for the Redis backend that fails fast while ``down``."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise FleetUnavailable("connection refused")

    async def try_acquire(self, provider: str, scopes: Sequence[Scope], max_wait: float) -> Any:
        self._check()
        return await super().try_acquire(provider, scopes, max_wait)

    async def pause(self, provider: str, seconds_: float) -> float:
        self._check()
        return await super().pause(provider, seconds_)

    async def paused_for(self, provider: str) -> float:
        self._check()
        return await super().paused_for(provider)


class _Rig:
    def __init__(self) -> None:
        self.clock = asyncio.get_running_loop().time
        self.t0 = self.clock()
        self.flaky = _Flaky(self.clock)
        self.pings: list[float] = []
        self.switches: list[Mode] = []
        self.limiter = FallbackLimiter(
            QueuedLimiter(self.flaky, clock=self.clock, sleep=asyncio.sleep),
            QueuedLimiter(LocalBackend(clock=self.clock), clock=self.clock, sleep=asyncio.sleep),
            ping=self.ping, clock=self.clock, sleep=asyncio.sleep, on_switch=self.switches.append,
            min_backoff=1, max_backoff=8, stable_after=60,
        )

    async def ping(self) -> None:
        self.pings.append(self.clock() - self.t0)
        self.flaky._check()

    async def fail_once(self) -> None:
        """A call meets the outage: it is served locally and the limiter switches."""
        slot = await self.limiter.acquire(P, ONE, max_wait=0)
        assert self.limiter.mode == "local"
        await slot.release()


def test_an_outage_switches_to_local_at_once_and_back_after_a_successful_check() -> None:
    """Calls go local at the first failure; checks back off 1, 2, 4 s; the first answer restores."""

    async def main() -> None:
        rig = _Rig()
        held = await rig.limiter.acquire(P, ONE, max_wait=0)
        assert rig.limiter.mode == "fleet"
        rig.flaky.down = True
        await rig.fail_once()
        await asyncio.sleep(6.5)
        assert rig.pings == [1, 3]
        rig.flaky.down = False
        await asyncio.sleep(1.01)
        assert rig.pings == [1, 3, 7]
        assert rig.limiter.mode == "fleet"
        assert rig.switches == ["local", "fleet"]
        with pytest.raises(RateLimited):  # the fleet's slot, still held, counts again
            await rig.limiter.acquire(P, ONE, max_wait=0)
        await held.release()
        await rig.limiter.aclose()

    run_virtual(main())


def test_unlimited_calls_pass_at_once_only_on_the_local_limiter() -> None:
    """``pass_open`` is None while the fleet's limiter is in force (Redis decides, pauses are
    shared there); after the switch the local limiter lets them through, and one still in flight
    when the fleet comes back is given back to the local limiter that counted it."""

    async def main() -> None:
        rig = _Rig()
        local = rig.limiter.local
        assert isinstance(local, QueuedLimiter) and isinstance(local.backend, LocalBackend)
        free = Scope(PROVIDER_SCOPE)
        assert rig.limiter.pass_open(P) is None
        rig.flaky.down = True
        await rig.fail_once()
        admitted_at = rig.limiter.pass_open(P)
        assert admitted_at is not None
        assert local.backend.usage(P, free)[0] == 1
        rig.flaky.down = False
        await asyncio.sleep(1.01)
        assert rig.limiter.mode == "fleet"
        assert rig.limiter.pass_open(P) is None
        rig.limiter.release_open(P, admitted_at, Completion.OK)
        assert local.backend.usage(P, free)[0] == 0
        await rig.limiter.aclose()

    run_virtual(main())


def test_a_flapping_redis_is_checked_less_and_less_often() -> None:
    """Back up and down again at once: the next check waits twice as long, not the minimum."""

    async def main() -> None:
        rig = _Rig()
        rig.flaky.down = True
        await rig.fail_once()
        await asyncio.sleep(0.5)
        rig.flaky.down = False
        await asyncio.sleep(0.5)
        assert rig.pings == [1] and rig.limiter.mode == "fleet"
        for wait in (2, 4, 8, 8):  # doubling up to the cap, never back to 1
            rig.flaky.down = True
            failed_at = rig.clock() - rig.t0
            await rig.fail_once()
            rig.flaky.down = False
            await asyncio.sleep(wait + 0.01)  # timers due at one instant fire in any order
            assert rig.pings[-1] == pytest.approx(failed_at + wait)
            assert rig.limiter.mode == "fleet"
        assert rig.switches.count("local") == 5
        await rig.limiter.aclose()

    run_virtual(main())


def test_after_a_stable_while_an_outage_starts_from_the_minimum_again() -> None:
    """Healthy for longer than stable_after, the next outage is checked after min_backoff."""

    async def main() -> None:
        rig = _Rig()
        for _ in range(3):  # grow the backoff to 8
            rig.flaky.down = True
            await rig.fail_once()
            rig.flaky.down = False
            await asyncio.sleep(8.01)  # the longest check wait here
            assert rig.limiter.mode == "fleet"
        await asyncio.sleep(61)
        rig.flaky.down = True
        outage = rig.clock() - rig.t0
        await rig.fail_once()
        rig.flaky.down = False
        await asyncio.sleep(1.01)
        assert rig.pings[-1] == outage + 1
        await rig.limiter.aclose()

    run_virtual(main())


def test_a_pause_is_kept_locally_too() -> None:
    """A pause set through the fleet is still honoured after switching to the local limiter."""

    async def main() -> None:
        rig = _Rig()
        assert await rig.limiter.pause(P, 5) == 5
        rig.flaky.down = True
        with pytest.raises(RateLimited) as refused:
            await rig.limiter.acquire(P, ONE, max_wait=0)
        assert refused.value.reason is Reason.PROVIDER_PAUSE
        assert rig.limiter.mode == "local"
        assert await rig.limiter.paused_for(P) == 5
        await rig.limiter.aclose()

    run_virtual(main())


def test_waiters_in_the_fleets_line_fall_back_with_what_is_left_of_their_wait() -> None:
    """A caller waiting on the fleet when it fails is served locally; its total wait is counted."""

    async def main() -> None:
        rig = _Rig()
        rig.flaky.poll_interval = 0.5  # type: ignore[misc]
        held = await rig.limiter.acquire(P, ONE, max_wait=0)
        waiting = asyncio.ensure_future(rig.limiter.acquire(P, ONE, max_wait=10))
        await asyncio.sleep(2)
        rig.flaky.down = True
        slot = await waiting
        assert rig.limiter.mode == "local"
        assert slot.waited == pytest.approx(2.0)
        await slot.release()
        await held.release()
        await rig.limiter.aclose()

    run_virtual(main())
