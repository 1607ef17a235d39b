"""A sliding time window of counts in fixed buckets: O(1) memory at any event rate.

Shared by the breaker's failure-rate rule and the retry budget.
"""

from __future__ import annotations

__all__ = ["SlidingCounter"]

_NEVER = -(1 << 62)


class SlidingCounter:
    """Events of the last ``period`` seconds in ``buckets`` fixed slots: O(1) memory at any rate."""

    __slots__ = ("_counts", "_head", "_n", "_total", "_width")

    def __init__(self, period: float, buckets: int) -> None:
        self._n = buckets
        self._width = period / buckets
        self._counts = [0] * buckets
        self._head = _NEVER
        self._total = 0

    def add(self, now: float, n: int = 1) -> None:
        self._advance(now)
        self._counts[self._head % self._n] += n
        self._total += n

    def total(self, now: float) -> int:
        self._advance(now)
        return self._total

    def clear(self) -> None:
        self._counts = [0] * self._n
        self._total = 0

    def _advance(self, now: float) -> None:
        """Empty the buckets that slid out; at most ``buckets`` steps however long it was idle."""
        index = int(now // self._width)
        head = self._head
        if index <= head:
            return
        if index - head >= self._n:
            self.clear()
        else:
            counts = self._counts
            for i in range(head + 1, index + 1):
                slot = i % self._n
                self._total -= counts[slot]
                counts[slot] = 0
        self._head = index
