"""An event loop whose clock jumps: ``asyncio.sleep(30)`` returns at once, 30 virtual seconds later.

When nothing is ready to run, the loop's selector would block until the next timer; this one moves
the clock to that timer instead. Timers fire in the right order at exact times, so tests of code
that waits (queues, deadlines, pauses) are deterministic and take no real time. Only for code that
does no real I/O.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        ready: list[Any] = super().select(0)
        if ready or (timeout is not None and timeout <= 0):
            return ready
        if timeout is None:
            raise RuntimeError("deadlock: every task waits and no timer is set")
        self.now += timeout
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 1000.0) -> None:
        self._jumper = _JumpingSelector()
        self._jumper.now = start
        super().__init__(self._jumper)

    def time(self) -> float:
        return self._jumper.now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
