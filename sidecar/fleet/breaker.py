"""A provider's breaker shared by the fleet (``breaker.shared: true``): one record in Redis.

Each sidecar keeps its own ``CircuitBreaker`` for counting; this store makes the *decisions*
common. When one sidecar's breaker opens, it calls ``open()``: every sidecar that reads the record
(``read()``) follows it, open for the same time (Redis time, so clocks don't matter). An open
record never gets longer from a second opener. Once it is due (half-open), ``try_trial()`` gives
the trial lease to exactly one caller in the whole fleet (``SET NX PX``); the others are answered
as for a full half-open breaker. The trial's verdict (``report_trial()``) closes the record after
``success_threshold`` successes, or re-opens it for everyone with the open time doubled (up to
``max_recovery_timeout``). A verdict from an older generation is ignored, as the local breaker
ignores outcomes of calls admitted before its last transition.

Every call is bounded by the client's timeouts and fails with ``FleetUnavailable``; the caller then decides
on its local breaker alone.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sidecar.fleet import breaker_scripts as lua
from sidecar.fleet.client import guarded
from sidecar.fleet.keys import FleetKeys
from sidecar.policy.gcra import micros, seconds
from sidecar.state.resp import RespClient

__all__ = ["SharedBreakerView", "SharedBreakers", "SharedState", "Trial"]


class SharedState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATES = (SharedState.CLOSED, SharedState.OPEN, SharedState.HALF_OPEN)


@dataclass(frozen=True, slots=True)
class SharedBreakerView:
    """The fleet's record as read now: ``retry_after`` is seconds until trials (0 unless OPEN)."""

    state: SharedState
    retry_after: float
    generation: int
    open_for: float
    trial_successes: int


@dataclass(frozen=True, slots=True)
class Trial:
    """This caller runs the fleet's one trial call; report its verdict with ``report_trial``."""

    token: str
    generation: int
    view: SharedBreakerView


class SharedBreakers:
    """The shared breaker records of every provider under one key prefix."""

    def __init__(
        self,
        redis: RespClient,
        *,
        keys: FleetKeys | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.keys = keys or FleetKeys()
        self._clock = clock
        self._read = redis.register_script(lua.READ)
        self._open = redis.register_script(lua.OPEN)
        self._trial = redis.register_script(lua.TRIAL)
        self._verdict = redis.register_script(lua.VERDICT)
        self._reset = redis.register_script(lua.RESET)
        self._cache: dict[str, tuple[float, SharedBreakerView]] = {}

    async def read(self, provider: str, *, max_age: float = 0.0) -> SharedBreakerView:
        """The record now; with ``max_age`` (needs ``clock``), a read that recent is reused."""
        if max_age > 0 and self._clock is not None:
            cached = self._cache.get(provider)
            now = self._clock()
            if cached is not None and now - cached[0] <= max_age:
                return cached[1]
            view = await self._run(self._read, provider, [], "breaker_read")
            self._cache[provider] = (now, view)
            return view
        return await self._run(self._read, provider, [], "breaker_read")

    async def open(self, provider: str, open_for: float) -> SharedBreakerView:
        """This sidecar's breaker opened: open the fleet's for ``open_for`` s (unless already open)."""
        return await self._run(self._open, provider, [micros(open_for)], "breaker_open")

    async def try_trial(self, provider: str, *, lease: float) -> Trial | SharedBreakerView:
        """A ``Trial`` when this caller won the half-open trial (held ``lease`` s at most), else the view."""
        token = secrets.token_hex(8)
        reply = await self._call(self._trial, provider, [token, max(1, round(lease * 1000))], "breaker_trial")
        view = _view(reply)
        if int(reply[5]) == 1:
            return Trial(token, view.generation, view)
        return view

    async def report_trial(
        self,
        provider: str,
        trial: Trial,
        *,
        success: bool,
        success_threshold: int,
        recovery_timeout: float,
        max_recovery_timeout: float | None,
    ) -> SharedBreakerView:
        """Publish the trial's verdict: count a success (closing at the threshold) or re-open."""
        args = [
            trial.token, trial.generation, 1 if success else 0, success_threshold,
            micros(recovery_timeout), micros(max_recovery_timeout) if max_recovery_timeout else 0,
        ]
        return await self._run(self._verdict, provider, args, "breaker_verdict")

    async def reset(self, provider: str) -> SharedBreakerView:
        """An operator's reset, for the whole fleet."""
        return await self._run(self._reset, provider, [], "breaker_reset")

    async def _run(self, script: Any, provider: str, args: list[Any], what: str) -> SharedBreakerView:
        view = _view(await self._call(script, provider, args, what))
        if self._clock is not None:
            self._cache[provider] = (self._clock(), view)
        return view

    async def _call(self, script: Any, provider: str, args: list[Any], what: str) -> list[int]:
        keys = [self.keys.breaker(provider), self.keys.trial(provider)]
        operation: Awaitable[list[int]] = script(keys, args)
        return await guarded(operation, what=what)


def _view(reply: list[int]) -> SharedBreakerView:
    state, left, generation, open_for, successes = (int(x) for x in reply[:5])
    return SharedBreakerView(_STATES[state], seconds(left), generation, seconds(open_for), successes)
