"""Timers on a hand-moved clock: what ``H1Pool(timers=...)`` runs its deadlines on in tests."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class ManualHandle:
    """One scheduled callback; ``cancel`` stops it from running."""

    def __init__(self, when: float, callback: Callable[..., object], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualTimers:
    """A clock that moves only on ``advance``, which runs every callback that came due, in order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._due: list[tuple[float, int, ManualHandle]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any) -> ManualHandle:
        handle = ManualHandle(when, callback, args)
        heapq.heappush(self._due, (when, next(self._order), handle))
        return handle

    @property
    def pending(self) -> int:
        """Callbacks scheduled and neither run nor cancelled."""
        return sum(1 for _, _, handle in self._due if not handle.cancelled)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds
        while self._due and self._due[0][0] <= self.now:
            _, _, handle = heapq.heappop(self._due)
            if not handle.cancelled:
                handle.callback(*handle.args)
