"""``/health``, ``/health/live``, ``/health/ready`` and ``/health/detailed``: the process and its providers.

Nothing here sends traffic upstream: provider state comes from the breakers and from the results
the background probes (``ProbeRunner``) keep. The decisions are pure functions of that state, so
tests check them without a server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Literal

from aiohttp import web

from .. import __version__
from ..policy.breaker import BreakerState
from ..providers.admission import Limits
from ..providers.ledger import JobLedger
from ..providers.registry import ProviderRegistry
from ..providers.runtime import DownloadRuntime, ProviderRuntime
from .checks import Check, LocalChecks
from .jobs import ledger_health
from .probes import ProbeResult, ProbeRunner

__all__ = [
    "HealthHandlers",
    "ProcessStatus",
    "overall_status",
    "provider_fault",
    "readiness_problems",
]

Status = Literal["healthy", "degraded", "unhealthy"]
_NOT_READY_STATES = frozenset({BreakerState.OPEN, BreakerState.FORCED_OPEN})


class ProcessStatus:
    """What health says of the process itself: how long it has run, and whether it is draining."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.started_at = clock()
        self.draining = False

    def uptime(self) -> float:
        return self._clock() - self.started_at


def provider_fault(
    rt: ProviderRuntime, state: BreakerState, probe: ProbeResult | None
) -> str | None:
    """Why a configured provider counts against health (breaker not closed, last probe failed)."""
    if not rt.config.configured:
        return None
    if state is not BreakerState.CLOSED:
        return f"breaker {state.value}"
    if probe is not None and not probe.ok:
        return f"probe failed: {probe.error}"
    return None


def overall_status(
    faults: Mapping[str, tuple[bool, str | None]], checks: Mapping[str, Check]
) -> Status:
    """``faults`` maps provider -> (critical, fault or None)."""
    if any(not c.get("ok") for c in checks.values()):
        return "unhealthy"
    if any(critical and fault for critical, fault in faults.values()):
        return "unhealthy"
    if any(fault for _, fault in faults.values()):
        return "degraded"
    return "healthy"


def readiness_problems(
    status: ProcessStatus, registry: ProviderRegistry, probes: ProbeRunner
) -> list[str]:
    """Empty when ready. Only draining and *critical* providers count; half_open does not."""
    problems = ["draining"] if status.draining else []
    for rt in registry.providers.values():
        cfg = rt.config
        if not cfg.critical or not cfg.configured:
            continue  # a provider left without an upstream is switched off: never a readiness fault
        state = rt.control.state
        probe = probes.result(rt.name)
        if state in _NOT_READY_STATES:
            problems.append(f"{rt.name}: breaker {state.value}")
        elif probe is not None and not probe.ok:
            problems.append(f"{rt.name}: probe failed ({probe.error})")
    return problems


def _provider_view(
    rt: ProviderRuntime, probe: ProbeResult | None
) -> tuple[dict[str, object], str | None]:
    snapshot = rt.control.snapshot()  # applies OPEN -> HALF_OPEN when due, like a request would
    state = BreakerState(str(snapshot["state"]))
    view: dict[str, object] = {
        "configured": rt.config.configured,
        "critical": rt.config.critical,
        "state": state.value,
        "breaker": snapshot,  # the same keys for every provider, per-host ones aggregated
        "probe": dataclasses.asdict(probe) if probe is not None else None,
        "hosts": rt.hosts.host_table() if isinstance(rt, DownloadRuntime) else None,  # per host
    }
    return view, provider_fault(rt, state, probe)


class HealthHandlers:
    def __init__(
        self,
        registry: ProviderRegistry,
        probes: ProbeRunner,
        checks: LocalChecks,
        status: ProcessStatus,
        limits: Limits | None = None,
        *,
        jobs: JobLedger | None = None,
    ) -> None:
        self.jobs = jobs
        self.registry = registry
        self.probes = probes
        self.checks = checks
        self.status = status
        self.limits = limits

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self.health)
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/health/detailed", self.detailed)

    def _base(self) -> dict[str, object]:
        return {"version": __version__, "uptime_seconds": round(self.status.uptime(), 3)}

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self._base()})

    async def live(self, request: web.Request) -> web.Response:
        # Answering at all is the proof: the event loop runs. Providers never matter here.
        return web.json_response({"status": "alive"})

    async def ready(self, request: web.Request) -> web.Response:
        problems = readiness_problems(self.status, self.registry, self.probes)
        if problems:
            return web.json_response({"status": "not_ready", "reasons": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def _with_limits(self, rt: ProviderRuntime, view: dict[str, object]) -> dict[str, object]:
        """Add the provider's ``limits`` (null for downloads) and ``shared_breaker``: null unless
        ``breaker.shared``, else whether the fleet's store answered last time (the breaker object
        itself keeps one shape everywhere)."""
        limits = self.limits
        view["limits"] = None if limits is None else await limits.usage(rt.name)
        shared = rt.config.breaker.shared and rt.config.kind == "proxy" and limits is not None
        view["shared_breaker"] = (
            {"store_reachable": limits.fleet.breakers_reachable} if shared and limits else None
        )
        return view

    async def detailed(self, request: web.Request) -> web.Response:
        providers: dict[str, object] = {}
        faults: dict[str, tuple[bool, str | None]] = {}
        for name, rt in self.registry.providers.items():
            view, fault = _provider_view(rt, self.probes.result(name))
            providers[name] = await self._with_limits(rt, view)
            faults[name] = (rt.config.critical, fault)
        checks = await self.checks.run()
        status = overall_status(faults, checks)
        ledger = await ledger_health(self.jobs)
        if ledger is not None and not ledger["ok"] and status == "healthy":
            status = "degraded"  # requests still flow (on_unavailable), without protection or with 503s
        body: dict[str, object] = {"status": status, **self._base(), "providers": providers,
                                   "checks": checks}
        if ledger is not None:  # only when some route creates jobs
            body["ledger"] = ledger
        return web.json_response(body, status=503 if status == "unhealthy" else 200)
