"""The provider registry: one runtime per configured provider, built once.

Everything a request needs that can be computed at start-up (the upstream base, the auth headers,
the compiled route table, metric children, the provider-wide policy) is computed here, so the
request path only looks things up. ``start()`` opens the upstream connections, ``close()`` closes them.
Breaker transitions reach the metrics and the log through listeners: the breakers know neither.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from multidict import istr

from ..config import DownloadConfig, ProviderConfig, SidecarConfig
from ..logs import get_logger
from ..policy.breaker import LEGAL_TRANSITIONS, CircuitBreaker, Transition
from ..policy.host_breakers import HostBreakers
from ..policy.retry import RetryBudget
from ..policy.routes import RouteTable
from .observer import MetricsSource, ProviderMetrics
from .runtime import DownloadRuntime, ProviderRuntime, ProxyRuntime, default_route

__all__ = ["ProviderRegistry"]

Clock = Callable[[], float]


class ProviderRegistry:
    """The runtime of every configured provider, by name."""

    def __init__(
        self, config: SidecarConfig, *, metrics: MetricsSource, clock: Clock = time.monotonic
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        # Called with every breaker transition (and the download host it happened on, if any).
        self.transition_listeners: list[Callable[[Transition, str | None], None]] = []
        self.providers: dict[str, ProviderRuntime] = {
            name: self._runtime(pc) for name, pc in config.providers.items()
        }
        self.known = sorted(self.providers)

    def _runtime(self, cfg: ProviderConfig) -> ProviderRuntime:
        pm = self.metrics.provider(cfg.name, [r.name for r in cfg.routes])
        budget = RetryBudget(cfg.retry.budget_ratio, cfg.retry.budget_min_per_second, clock=self.clock)
        rt: ProviderRuntime
        if cfg.kind == "download":
            rt = DownloadRuntime(
                config=cfg,
                download=cfg.download or DownloadConfig(),
                hosts=HostBreakers(
                    cfg.name, cfg.breaker, clock=self.clock,
                    on_transition=_host_transition_listener(pm, self.notify_transition),
                    on_evict=_host_evict_listener(cfg.name),
                ),
                budget=budget,
                metrics=pm,
                default_route=default_route(cfg),
            )
        else:
            rt = ProxyRuntime(
                config=cfg,
                breaker=CircuitBreaker(
                    cfg.name, cfg.breaker, clock=self.clock,
                    on_transition=_transition_listener(pm, self.notify_transition),
                ),
                budget=budget,
                metrics=pm,
                routes=RouteTable(cfg.routes),
                default_route=default_route(cfg),
                auth_headers=tuple((istr(a.header), a.prefix + a.value) for a in cfg.auth if a.value),
                base_url=cfg.upstream.rstrip("/"),
            )
        runtime = rt
        pm.export_inflight(lambda: runtime.inflight)
        pm.export_state(lambda: runtime.control.state.value)
        pm.export_breaker(lambda: runtime.control.snapshot())
        if isinstance(runtime, ProxyRuntime):
            proxy = runtime
            pm.export_pool(lambda: proxy.pool_stats())
        pm.count_transitions((a.value, b.value) for a, b in LEGAL_TRANSITIONS)
        return rt

    def notify_transition(self, t: Transition, host: str | None) -> None:
        for listener in self.transition_listeners:
            listener(t, host)

    async def start(self) -> None:
        for rt in self.providers.values():
            await rt.open()

    async def close(self) -> None:
        for rt in self.providers.values():
            await rt.close()


Notify = Callable[[Transition, str | None], None]


def _transition_listener(pm: ProviderMetrics, notify: Notify) -> Callable[[Transition], None]:
    """Count and log a provider breaker's transition, then tell the registry's listeners."""
    log = get_logger("breaker")

    def on_transition(t: Transition) -> None:
        pm.transition(t.from_state.value, t.to_state.value)
        log.warning(
            "breaker_transition",
            provider=t.provider,
            from_state=t.from_state.value,
            to_state=t.to_state.value,
            reason=t.reason,
        )
        notify(t, None)

    return on_transition


def _host_transition_listener(pm: ProviderMetrics, notify: Notify) -> Callable[[str, Transition], None]:
    """Count and log a download host's breaker transition under its provider's name."""
    log = get_logger("breaker")

    def on_transition(host: str, t: Transition) -> None:
        pm.transition(t.from_state.value, t.to_state.value)
        log.warning(
            "breaker_transition", provider=t.provider, host=host,
            from_state=t.from_state.value, to_state=t.to_state.value, reason=t.reason,
        )
        notify(t, host)

    return on_transition


def _host_evict_listener(provider: str) -> Callable[[str], None]:
    log = get_logger("breaker")

    def on_evict(host: str) -> None:
        log.info("download_host_evicted", provider=provider, host=host)

    return on_evict
