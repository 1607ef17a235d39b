"""The fleet's limiter while its Redis answers; this sidecar's own while it does not.

A ``FleetUnavailable`` from the fleet switches to the local limiter at once (the call that met it
is served locally, within what is left of its wait), logs it and counts it. A background check
then pings Redis with exponential backoff (``min_backoff`` doubling up to ``max_backoff``) and
switches back on the first answer. The backoff is not reset by a recovery: only after the fleet
limiter has stayed healthy for ``stable_after`` does the next outage start again from
``min_backoff``. A Redis that keeps coming and going is thus looked at less and less often
instead of flipping the limiter back and forth.

Slots keep the limiter they came from: a fleet slot is given back to Redis (or left to expire).
Pauses are recorded locally as well, so a pause in force is still honoured after a switch.
While on the local limiter, budgets are per sidecar (the fleet's budget is not divided).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from sidecar.limits.api import Completion, FleetUnavailable, Limiter, RateLimited, Slot
from sidecar.logs import get_logger
from sidecar.policy.admission import Scope

__all__ = ["MAX_BACKOFF", "MIN_BACKOFF", "STABLE_AFTER", "FallbackLimiter", "Mode"]

MIN_BACKOFF = 1.0
MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0

Mode = Literal["fleet", "local"]


class FallbackLimiter:
    """A ``Limiter`` over a fleet and a local one; ``on_switch(mode)`` hears of every switch."""

    def __init__(
        self,
        fleet: Limiter,
        local: Limiter,
        *,
        ping: Callable[[], Awaitable[None]],
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        on_switch: Callable[[Mode], None] | None = None,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        stable_after: float = STABLE_AFTER,
    ) -> None:
        self.fleet = fleet
        self.local = local
        self._ping = ping
        self._clock = clock
        self._sleep = sleep
        self._on_switch = on_switch
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._stable_after = stable_after
        self._backoff = min_backoff
        self._mode: Mode = "fleet"
        self._since = clock()
        self._check: asyncio.Task[None] | None = None
        self.switches: dict[Mode, int] = {"fleet": 0, "local": 0}
        self._log = get_logger("limits")

    @property
    def mode(self) -> Mode:
        return self._mode

    async def acquire(self, provider: str, scopes: Sequence[Scope], *, max_wait: float) -> Slot:
        started = self._clock()
        if self._mode == "fleet":
            try:
                return await self.fleet.acquire(provider, scopes, max_wait=max_wait)
            except FleetUnavailable as error:
                self._fall_back(error)
        spent = self._clock() - started
        try:
            slot = await self.local.acquire(provider, scopes, max_wait=max(0.0, max_wait - spent))
        except RateLimited as refused:
            refused.waited += spent
            raise
        slot.waited += spent
        return slot

    def acquire_at_once(self, provider: str, scopes: Sequence[Scope]) -> Slot | None:
        """The limiter in force answers (the fleet's only from a share it holds)."""
        current = self.fleet if self._mode == "fleet" else self.local
        return current.acquire_at_once(provider, scopes)

    def pass_open(self, provider: str) -> int | None:
        """The local limiter's open place, while it is in force (the fleet's asks Redis)."""
        return None if self._mode == "fleet" else self.local.pass_open(provider)

    def release_open(self, provider: str, admitted_at: int, completion: Completion) -> None:
        self.local.release_open(provider, admitted_at, completion)  # only the local one gives them

    async def pause(self, provider: str, seconds: float) -> float:
        local = await self.local.pause(provider, seconds)
        if self._mode == "fleet":
            try:
                return await self.fleet.pause(provider, seconds)
            except FleetUnavailable as error:
                self._fall_back(error)
        return local

    async def paused_for(self, provider: str) -> float:
        if self._mode == "fleet":
            try:
                return await self.fleet.paused_for(provider)
            except FleetUnavailable as error:
                self._fall_back(error)
        return await self.local.paused_for(provider)

    async def aclose(self) -> None:
        if self._check is not None:
            self._check.cancel()
            await asyncio.gather(self._check, return_exceptions=True)
        await self.fleet.aclose()
        await self.local.aclose()

    def _fall_back(self, error: FleetUnavailable) -> None:
        if self._mode == "local":
            return  # another caller switched already
        now = self._clock()
        if now - self._since >= self._stable_after:
            self._backoff = self._min_backoff
        self._switch("local", now)
        self._log.warning("fleet_limiter_unavailable", error=str(error), next_check_in=self._backoff)
        self._check = asyncio.create_task(self._check_until_back())

    async def _check_until_back(self) -> None:
        while True:
            await self._sleep(self._backoff)
            waited, self._backoff = self._backoff, min(self._max_backoff, self._backoff * 2)
            try:
                await self._ping()
            except FleetUnavailable as error:
                self._log.info("fleet_limiter_still_unavailable", error=str(error), waited=waited)
                continue
            self._switch("fleet", self._clock())
            self._log.warning("fleet_limiter_restored", after_check_of=waited)
            return

    def _switch(self, mode: Mode, now: float) -> None:
        self._mode = mode
        self._since = now
        self.switches[mode] += 1
        if self._on_switch is not None:
            self._on_switch(mode)
