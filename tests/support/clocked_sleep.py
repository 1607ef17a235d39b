"""A sleep that moves a ``FakeClock``: waits take no real time, yet time passes for the app."""

from __future__ import annotations

import asyncio

from .fakes import FakeClock


class ClockedSleep:
    """Records each delay and advances ``clock`` by it; a delay of ``park_from`` or more (a probe
    loop's interval) never returns, so background loops stay parked until the app closes."""

    def __init__(self, clock: FakeClock, park_from: float = 60.0) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self.park_from = park_from

    async def __call__(self, delay: float) -> None:
        if delay >= self.park_from:
            await asyncio.Event().wait()
        self.delays.append(delay)
        self.clock.advance(max(0.0, delay))
        await asyncio.sleep(0)
