"""Per-host circuit breakers for the download provider: one dead CDN must not stop every download.

Downloads go to many hosts under one provider name, so each host (``host:port``) gets its own
breaker, created on first use and kept in an LRU of bounded size. Retry budget, metrics and the
client session stay the provider's; metric labels stay ``provider=<name>``, so cardinality is
bounded whatever hosts the bot downloads from.

Pure like ``breaker``: no I/O, no metrics, no logging. Whoever builds the set listens to it:
``on_transition(host, transition)`` for every host breaker's state change and ``on_evict(host)``
when a host leaves the table.

The provider's own state (``sidecar_breaker_state``, /admin) is the admin mode when one is set
(``forced_open``/``disabled``), else the worst state among its hosts (open > half_open > closed),
where a host counts while it is OPEN or was used within ``monitoring_period``. Admin actions on
the provider apply to every host, and to hosts first seen while the mode lasts.

The provider's breaker object (/health/detailed, /admin/breakers) has exactly the keys of one
breaker's, so every provider looks alike: counters are summed over the hosts (``SUMMED``; the
cumulative ones keep what evicted hosts had counted), the values that describe one state machine
are the worst counting host's (``FROM_WORST``: highest state, then most consecutive failures,
then longest wait), those of a fresh breaker when no host counts. The hosts themselves are listed
by ``host_table``.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..config import BreakerConfig
from .breaker import BreakerState, CircuitBreaker, Transition

DEFAULT_CAPACITY = 256
_RANK = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

# How each key of a breaker's object is aggregated over the hosts (the rest: see module docstring).
CUMULATIVE = ("opened_count", "total_calls", "total_successes", "total_failures", "total_rejected")
SUMMED = ("window_calls", "window_failures", *CUMULATIVE)
FROM_WORST = ("consecutive_failures", "half_open_in_flight", "half_open_successes",
              "current_recovery_timeout_seconds", "retry_after_seconds")
DERIVED = ("state", "failure_rate", "config")  # admin mode or worst state; sums' rate; the config


@dataclass(slots=True)
class _Entry:
    breaker: CircuitBreaker
    last_used: float


class HostBreakers:
    """The breakers of one download provider, at most ``capacity`` hosts (closed ones evicted first)."""

    def __init__(
        self,
        provider: str,
        config: BreakerConfig,
        *,
        clock: Callable[[], float],
        on_transition: Callable[[str, Transition], None] | None = None,
        on_evict: Callable[[str], None] | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.provider = provider
        self.config = config
        self.capacity = capacity
        self._clock = clock
        self._on_transition = on_transition
        self._on_evict = on_evict
        self._hosts: OrderedDict[str, _Entry] = OrderedDict()
        self._mode: BreakerState | None = None  # FORCED_OPEN or DISABLED, set by admin
        self.evicted = 0
        self._retired: Counter[str] = Counter()  # CUMULATIVE counts of evicted hosts
        # Never called: its object stands for "no host counts" (same keys, fresh values).
        self._idle = CircuitBreaker(provider, config, clock=clock)

    def breaker(self, host: str) -> CircuitBreaker:
        """The host's breaker, created on first use; using it makes the host the most recent."""
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Entry(self._new_breaker(host), self._clock())
            self._evict(keep=host)
        else:
            self._hosts.move_to_end(host)
            entry.last_used = self._clock()
        return entry.breaker

    def host_state(self, host: str) -> BreakerState | None:
        entry = self._hosts.get(host)
        return None if entry is None else entry.breaker.state

    @property
    def state(self) -> BreakerState:
        """The admin mode, else the worst state of the hosts that count (see module docstring)."""
        if self._mode is not None:
            return self._mode
        worst = BreakerState.CLOSED
        horizon = self._clock() - self.config.monitoring_period
        for entry in self._hosts.values():
            state = entry.breaker.state
            if state is BreakerState.OPEN:
                return state
            if entry.last_used >= horizon and _RANK.get(state, 0) > _RANK[worst]:
                worst = state
        return worst

    def reset(self) -> None:
        """Admin ``reset``: clear the mode and close every host's breaker."""
        self._mode = None
        for entry in self._hosts.values():
            entry.breaker.reset()

    def force_open(self) -> None:
        """Admin ``force-open``: every host, and every host first seen until ``reset``."""
        self._mode = BreakerState.FORCED_OPEN
        for entry in self._hosts.values():
            entry.breaker.force_open()

    def disable(self) -> None:
        """Admin ``disable``: every host admits all calls (still recorded) until ``reset``."""
        self._mode = BreakerState.DISABLED
        for entry in self._hosts.values():
            entry.breaker.disable()

    def snapshot(self) -> dict[str, object]:
        """The provider's breaker object: the keys of one breaker's, aggregated over the hosts."""
        horizon = self._clock() - self.config.monitoring_period
        snaps = [(entry, entry.breaker.snapshot()) for entry in self._hosts.values()]
        counting = [snap for entry, snap in snaps
                    if snap["state"] == BreakerState.OPEN.value or entry.last_used >= horizon]
        worst = max(counting, key=_severity, default=None)
        view = dict(worst if worst is not None else self._idle.snapshot())
        for key in SUMMED:
            view[key] = self._retired[key] + sum(_count(snap, key) for _, snap in snaps)
        calls, failures = _count(view, "window_calls"), _count(view, "window_failures")
        view["failure_rate"] = round(failures / calls, 4) if calls else None
        view["state"] = (self._mode or BreakerState(str(view["state"]))).value
        view["config"] = dataclasses.asdict(self.config)
        return view

    def host_table(self) -> dict[str, object]:
        """Each host's own breaker object (the shared config left out) and the table's size."""
        hosts = {h: e.breaker.snapshot() for h, e in self._hosts.items()}
        for snap in hosts.values():
            snap.pop("config", None)
        return {"count": len(hosts), "capacity": self.capacity, "evicted": self.evicted,
                "breakers": hosts}

    def _new_breaker(self, host: str) -> CircuitBreaker:
        listener = self._on_transition
        on_transition = None if listener is None else lambda t: listener(host, t)
        breaker = CircuitBreaker(self.provider, self.config, clock=self._clock,
                                 on_transition=on_transition)
        if self._mode is BreakerState.FORCED_OPEN:
            breaker.force_open()
        elif self._mode is BreakerState.DISABLED:
            breaker.disable()
        return breaker

    def _evict(self, keep: str) -> None:
        """Over capacity: drop the least recently used closed host, else the least recent one."""
        while len(self._hosts) > self.capacity:
            others = [h for h in self._hosts if h != keep]
            victim = next(
                (h for h in others if self._hosts[h].breaker.state is BreakerState.CLOSED),
                others[0],
            )
            gone = self._hosts.pop(victim).breaker.snapshot()
            self._retired.update({key: _count(gone, key) for key in CUMULATIVE})
            self.evicted += 1
            if self._on_evict is not None:
                self._on_evict(victim)


def _count(snap: Mapping[str, object], key: str) -> int:
    value = snap.get(key)
    return value if isinstance(value, int) else 0


def _severity(snap: Mapping[str, object]) -> tuple[int, int, float]:
    """Which host is worst: highest state, then most consecutive failures, then longest wait."""
    wait = snap.get("retry_after_seconds")
    return (_RANK.get(BreakerState(str(snap["state"])), 0), _count(snap, "consecutive_failures"),
            float(wait) if isinstance(wait, int | float) else 0.0)
