"""Shared test doubles: a hand-moved clock, a recording sleep and a seeded rng, so no test waits or flakes."""

from __future__ import annotations

import asyncio
import random

SEED = 20240101


class FakeClock:
    """A monotonic clock that only moves when a test calls ``advance``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds


def seeded_rng(seed: int = SEED) -> random.Random:
    return random.Random(seed)


class RecordingSleep:
    """Remembers each requested delay; a short one returns at once, a long one never returns.

    The app's one injected sleep serves the retry waits (fractions of a second in tests: returned at
    once) and the probe loops (an interval of an hour in tests: parked until the app closes, so a
    background loop never spins).
    """

    def __init__(self, park_from: float = 60.0) -> None:
        self.delays: list[float] = []
        self.park_from = park_from

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if delay >= self.park_from:
            await asyncio.Event().wait()
