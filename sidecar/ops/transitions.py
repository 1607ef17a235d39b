"""The last few breaker transitions of each provider, for the status page (``/status/events``).

The gateway calls ``record`` with every transition as it happens (a transition listener). Each
provider keeps at most ``capacity`` of them, the oldest dropped first, so memory stays fixed
however often a breaker flaps; a download provider's hosts share their provider's ring.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..policy.breaker import Transition

__all__ = ["DEFAULT_CAPACITY", "RecentTransition", "TransitionLog", "iso_utc"]

DEFAULT_CAPACITY = 20


def iso_utc(wall: float) -> str:
    """Epoch seconds as ISO-8601 UTC with milliseconds and a ``Z``, as probes report ``checked_at``."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class RecentTransition:
    seq: int  # increases by one per recorded transition, across providers
    provider: str
    host: str | None  # the download host whose breaker moved; None for a provider's own breaker
    from_state: str
    to_state: str
    reason: str
    at: float  # monotonic seconds (the breaker's clock)
    wall: float  # epoch seconds when it was recorded


class TransitionLog:
    """Bounded per-provider rings of ``RecentTransition``, newest last."""

    def __init__(
        self,
        providers: Iterable[str],
        *,
        clock: Callable[[], float],
        wall: Callable[[], float],
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._clock = clock
        self._wall = wall
        self._rings: dict[str, deque[RecentTransition]] = {
            name: deque(maxlen=capacity) for name in providers
        }
        self._seq = 0

    def record(self, t: Transition, host: str | None = None) -> None:
        """The transition listener: keep ``t``, dropping the provider's oldest when full."""
        self._seq += 1
        ring = self._rings.get(t.provider)
        if ring is None:
            ring = self._rings[t.provider] = deque(maxlen=self.capacity)
        ring.append(RecentTransition(
            self._seq, t.provider, host, t.from_state.value, t.to_state.value, t.reason, t.at,
            self._wall(),
        ))

    def recent(self, provider: str) -> list[RecentTransition]:
        return list(self._rings.get(provider, ()))

    def snapshot(self) -> dict[str, object]:
        """The JSON of ``/status/events``: every provider, its transitions newest last."""
        now = self._clock()
        return {
            "capacity": self.capacity,
            "last_seq": self._seq,
            "providers": {
                name: [_view(r, now) for r in ring] for name, ring in self._rings.items()
            },
        }


def _view(r: RecentTransition, now: float) -> dict[str, object]:
    return {
        "seq": r.seq,
        "host": r.host,
        "from_state": r.from_state,
        "to_state": r.to_state,
        "reason": r.reason,
        "at": iso_utc(r.wall),
        "age_seconds": round(max(0.0, now - r.at), 3),
    }
