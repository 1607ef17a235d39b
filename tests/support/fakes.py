"""Shared test doubles: a hand-moved clock and a seeded rng, so no test waits or flakes."""

from __future__ import annotations

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
