"""Per-host circuit breakers for the download provider: one dead CDN must not stop every download.

Downloads go to many hosts under one provider name, so each host (``host:port``) gets its own
breaker, created on first use and kept in an LRU of bounded size. Retry budget, metrics and the
client session stay the provider's; metric labels stay ``provider=<name>``, so cardinality is
bounded whatever hosts the bot downloads from.

The provider's own state (``sidecar_breaker_state``, /admin) is the admin mode when one is set
(``forced_open``/``disabled``), else the worst state among its hosts (open > half_open > closed),
where a host counts while it is OPEN or was used within ``monitoring_period``. Admin actions on
the provider apply to every host, and to hosts first seen while the mode lasts.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from ..config import BreakerConfig
from ..logs import get_logger
from ..ops.metrics import ProviderMetrics
from .breaker import BreakerState, CircuitBreaker, Transition
from .retry import RetryBudget

DEFAULT_CAPACITY = 256
_RANK = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}


@dataclass(slots=True)
class HostTarget:
    """One download host as the attempt loop sees it (``upstream.Target``)."""

    name: str
    host: str
    breaker: CircuitBreaker
    budget: RetryBudget
    metrics: ProviderMetrics
    session: aiohttp.ClientSession


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
        metrics: ProviderMetrics,
        capacity: int = DEFAULT_CAPACITY,
        on_transition: Callable[[Transition, str], None] | None = None,
    ) -> None:
        self.provider = provider
        self.config = config
        self.capacity = capacity
        self._clock = clock
        self._metrics = metrics
        self._hosts: OrderedDict[str, _Entry] = OrderedDict()
        self._mode: BreakerState | None = None  # FORCED_OPEN or DISABLED, set by admin
        self._log = get_logger("breaker")
        self._on_transition = on_transition
        self.evicted = 0

    def target(self, host: str, budget: RetryBudget, session: aiohttp.ClientSession) -> HostTarget:
        """The host's breaker (created on first use) with the provider's budget, metrics, session."""
        entry = self._hosts.get(host)
        if entry is None:
            entry = self._hosts[host] = _Entry(self._new_breaker(host), self._clock())
            self._evict(keep=host)
        else:
            self._hosts.move_to_end(host)
            entry.last_used = self._clock()
        return HostTarget(self.provider, host, entry.breaker, budget, self._metrics, session)

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
        """The provider's view for /admin and /health/detailed, with each host's breaker."""
        hosts = {h: e.breaker.snapshot() for h, e in self._hosts.items()}
        totals = {
            key: sum(int(s[key]) for s in hosts.values())  # type: ignore[call-overload]
            for key in ("window_calls", "window_failures", "total_calls", "total_failures",
                        "total_rejected")
        }
        for snap in hosts.values():
            snap.pop("config", None)
        return {
            "state": self.state.value,
            "per_host": True,
            **totals,
            "host_count": len(hosts),
            "host_capacity": self.capacity,
            "evicted_hosts": self.evicted,
            "hosts": hosts,
            "config": dataclasses.asdict(self.config),
        }

    def _new_breaker(self, host: str) -> CircuitBreaker:
        def on_transition(t: Transition) -> None:
            self._metrics.transition(t.from_state.value, t.to_state.value)
            self._log.warning(
                "breaker_transition", provider=self.provider, host=host,
                from_state=t.from_state.value, to_state=t.to_state.value, reason=t.reason,
            )
            if self._on_transition is not None:
                self._on_transition(t, host)

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
            del self._hosts[victim]
            self.evicted += 1
            self._log.info("download_host_evicted", provider=self.provider, host=victim)
