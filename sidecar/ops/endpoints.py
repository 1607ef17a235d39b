"""The sidecar's own endpoints (``/health*``, ``/metrics``, ``/admin``), served on both listeners."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ..providers.admission import Limits
from ..providers.ledger import JobLedger
from ..providers.registry import ProviderRegistry
from ..providers.shared_breaker import SharedBreaker
from .admin import AdminHandlers
from .checks import LocalChecks
from .health import HealthHandlers, ProcessStatus
from .jobs import JobsAdmin
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .probes import ProbeRunner

__all__ = ["ADMIN", "CHECKS", "add_own_routes"]

# Typed app keys so tests (and a future create_app) can reach the handlers' state.
CHECKS = web.AppKey("checks", LocalChecks)
ADMIN = web.AppKey("admin", AdminHandlers)


def add_own_routes(
    app: web.Application,
    *,
    registry: ProviderRegistry,
    probes: ProbeRunner,
    metrics: Metrics,
    status: ProcessStatus,
    bound_host: str,
    environ: Mapping[str, str],
    limits: Limits | None = None,
    shared: Mapping[str, SharedBreaker] | None = None,
    jobs: JobLedger | None = None,
) -> None:
    """Add the own endpoints of a listener bound to ``bound_host``; ``environ`` is read once, here."""
    checks = LocalChecks(registry.clock)
    admin = AdminHandlers(registry, environ, bound_host=bound_host, shared=shared)
    app[CHECKS] = checks
    app[ADMIN] = admin
    HealthHandlers(registry, probes, checks, status, limits, jobs=jobs).add_routes(app)
    admin.add_routes(app)
    JobsAdmin(jobs, registry.known).add_routes(app, admin.guard)

    async def render(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", render)
