"""Recently settled job records of this sidecar, so a burst of repeats is answered without the store.

A bot repeats a paid create in bursts: a double-clicked button, a retry loop after a timeout, two
replicas handling one update. A settled record (``done``) never changes again except by an operator's
release or its expiry, so its answer can be served from memory for a short while. The cost is a bounded
staleness: a release made on *another* sidecar of the fleet is seen here at most ``fresh`` seconds late
(a release on this sidecar is seen at once). Memory is bounded by ``max_bytes`` of stored bodies.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from ..state import LedgerRecord

__all__ = ["SettledAnswers"]

Key = tuple[str, str]


class SettledAnswers:
    """An LRU of ``done`` records by (scope, key), each kept ``fresh`` seconds on ``clock``."""

    def __init__(
        self, *, clock: Callable[[], float], fresh: float = 10.0, max_bytes: int = 8 << 20
    ) -> None:
        self._clock = clock
        self._fresh = fresh
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[Key, tuple[float, int, LedgerRecord]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, scope: str, key: str, now_wall: float) -> LedgerRecord | None:
        """The record, while fresh and not past its own expiry (``now_wall``: epoch seconds)."""
        entry = self._entries.get((scope, key))
        if entry is None:
            return None
        until, _, record = entry
        if self._clock() >= until or now_wall >= record.expires_at:
            self.drop(scope, key)
            return None
        self._entries.move_to_end((scope, key))
        return record

    def put(self, record: LedgerRecord) -> None:
        response = record.response
        size = len(response.body) if response is not None and response.body is not None else 0
        if size > self._max_bytes:
            return
        key = (record.provider, record.key)
        self.drop(*key)
        self._entries[key] = (self._clock() + self._fresh, size, record)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, dropped, _) = self._entries.popitem(last=False)
            self._bytes -= dropped

    def drop(self, scope: str, key: str) -> None:
        entry = self._entries.pop((scope, key), None)
        if entry is not None:
            self._bytes -= entry[1]
