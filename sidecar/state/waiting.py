"""Waiting for a record to leave ``in_flight``.

Within one process the store that settles a record wakes its waiters at once (an ``asyncio.Event``
per key). Another process (a second sidecar on the same file or Redis) can't ring that bell, so the
waiter also re-reads the record on a short backoff; polling stays cheap because it only happens
while a repeat is actually waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from .ids import check_key
from .records import LedgerRecord, RecordState

__all__ = ["POLL_MAX", "POLL_MIN", "Waiters", "WaitsForSettling", "wait_settled"]

POLL_MIN = 0.02
POLL_MAX = 0.25

Key = tuple[str, str]


class _Slot:
    __slots__ = ("event", "watchers")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.watchers = 0


class Waiters:
    """The in-process bell: one slot per key while somebody waits on it, so the map stays bounded."""

    def __init__(self) -> None:
        self._slots: dict[Key, _Slot] = {}

    @contextlib.contextmanager
    def watch(self, provider: str, key: str) -> Iterator[Callable[[], asyncio.Event]]:
        """Yields a function returning the event to wait on for the next round."""
        slot = self._slots.setdefault((provider, key), _Slot())
        slot.watchers += 1
        try:
            yield lambda: slot.event
        finally:
            slot.watchers -= 1
            if slot.watchers == 0:
                del self._slots[(provider, key)]

    def wake(self, provider: str, key: str) -> None:
        """Wake everyone waiting on the key; the next round waits on a fresh event."""
        slot = self._slots.get((provider, key))
        if slot is not None:
            slot.event.set()
            slot.event = asyncio.Event()

    def wake_all(self) -> None:
        """Wake every waiter (to re-read): for changes that don't name their keys, like adoption."""
        for provider, key in list(self._slots):
            self.wake(provider, key)

    def __len__(self) -> int:
        return len(self._slots)


async def wait_settled(
    get: Callable[[], Awaitable[LedgerRecord | None]],
    waiters: Waiters,
    provider: str,
    key: str,
    max_wait: float,
    *,
    poll_min: float = POLL_MIN,
    poll_max: float = POLL_MAX,
) -> LedgerRecord | None:
    """Re-read until the record is gone or not ``in_flight``, or ``max_wait`` passes.

    Returns the last record read: still ``in_flight`` means ``max_wait`` passed; None means the key
    was released (or expired) meanwhile.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait
    delay = poll_min
    with waiters.watch(provider, key) as current:
        while True:
            event = current()  # taken before the read, so a wake between read and wait isn't lost
            record = await get()
            remaining = deadline - loop.time()
            if record is None or record.state is not RecordState.IN_FLIGHT or remaining <= 0:
                return record
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(delay, remaining))
            delay = min(delay * 2, poll_max)


class WaitsForSettling:
    """The ``wait`` of every store: the same wake-or-poll loop over the store's own ``get``."""

    poll: tuple[float, float]
    _waiters: Waiters

    async def get(self, provider: str, key: str) -> LedgerRecord | None:
        raise NotImplementedError

    async def wait(self, provider: str, key: str, max_wait: float) -> LedgerRecord | None:
        check_key(provider, key)
        return await wait_settled(
            lambda: self.get(provider, key), self._waiters, provider, key, max_wait,
            poll_min=self.poll[0], poll_max=self.poll[1],
        )
