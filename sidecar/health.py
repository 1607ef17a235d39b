"""``/health``, ``/health/live``, ``/health/ready`` and ``/health/detailed`` (SPEC section 6).

Nothing here sends traffic upstream: provider state comes from the breakers and from the results
the background probes (``probes``) left on each ``ProviderRuntime``. The decisions are pure
functions of that state, so tests check them without a server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from aiohttp import web

from . import __version__
from .breaker import BreakerState
from .checks import Check, LocalChecks
from .gateway import Gateway, ProviderRuntime

__all__ = ["HealthHandlers", "overall_status", "provider_fault", "readiness_problems"]

Status = Literal["healthy", "degraded", "unhealthy"]
_NOT_READY_STATES = frozenset({BreakerState.OPEN, BreakerState.FORCED_OPEN})


def provider_fault(rt: ProviderRuntime, state: BreakerState) -> str | None:
    """Why a configured provider counts against health (breaker not closed, last probe failed)."""
    if not rt.config.configured:
        return None
    if state is not BreakerState.CLOSED:
        return f"breaker {state.value}"
    if rt.probe is not None and not rt.probe.ok:
        return f"probe failed: {rt.probe.error}"
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


def readiness_problems(gw: Gateway) -> list[str]:
    """Empty when ready. Only draining and *critical* providers count; half_open does not."""
    problems = ["draining"] if gw.draining else []
    for rt in gw.providers.values():
        cfg = rt.config
        if not cfg.critical or not cfg.configured:
            continue  # an unconfigured provider never fails readiness (SPEC section 3)
        state = rt.control.state
        if state in _NOT_READY_STATES:
            problems.append(f"{rt.name}: breaker {state.value}")
        elif rt.probe is not None and not rt.probe.ok:
            problems.append(f"{rt.name}: probe failed ({rt.probe.error})")
    return problems


def _provider_view(rt: ProviderRuntime) -> tuple[dict[str, object], str | None]:
    snapshot = rt.control.snapshot()  # applies OPEN -> HALF_OPEN when due, like a request would
    state = BreakerState(str(snapshot["state"]))
    view: dict[str, object] = {
        "configured": rt.config.configured,
        "critical": rt.config.critical,
        "state": state.value,
        "breaker": snapshot,  # the same keys for every provider, per-host ones aggregated
        "probe": dataclasses.asdict(rt.probe) if rt.probe is not None else None,
        "hosts": rt.hosts.host_table() if rt.hosts is not None else None,  # per-host breakers
    }
    return view, provider_fault(rt, state)


class HealthHandlers:
    def __init__(self, gw: Gateway, checks: LocalChecks) -> None:
        self.gw = gw
        self.checks = checks

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/health", self.health)
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/health/detailed", self.detailed)

    def _base(self) -> dict[str, object]:
        return {"version": __version__, "uptime_seconds": round(self.gw.uptime(), 3)}

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **self._base()})

    async def live(self, request: web.Request) -> web.Response:
        # Answering at all is the proof: the event loop runs. Providers never matter here.
        return web.json_response({"status": "alive"})

    async def ready(self, request: web.Request) -> web.Response:
        problems = readiness_problems(self.gw)
        if problems:
            return web.json_response({"status": "not_ready", "reasons": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def detailed(self, request: web.Request) -> web.Response:
        providers: dict[str, object] = {}
        faults: dict[str, tuple[bool, str | None]] = {}
        for name, rt in self.gw.providers.items():
            providers[name], fault = _provider_view(rt)
            faults[name] = (rt.config.critical, fault)
        checks = await self.checks.run()
        status = overall_status(faults, checks)
        body = {"status": status, **self._base(), "providers": providers, "checks": checks}
        return web.json_response(body, status=503 if status == "unhealthy" else 200)
