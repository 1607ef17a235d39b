"""The sidecar's own endpoints (``/health*``, ``/metrics``, ``/admin``), served on both listeners."""

from __future__ import annotations

import os
from collections.abc import Mapping

from aiohttp import web

from .admin import AdminHandlers
from .checks import LocalChecks
from .gateway import Gateway
from .health import HealthHandlers
from .metrics import CONTENT_TYPE_LATEST

__all__ = ["ADMIN", "CHECKS", "add_own_routes"]

# Typed app keys so tests (and a future create_app) can reach the handlers' state.
CHECKS = web.AppKey("checks", LocalChecks)
ADMIN = web.AppKey("admin", AdminHandlers)


def add_own_routes(
    app: web.Application, gw: Gateway, environ: Mapping[str, str] | None = None, *,
    bound_host: str,
) -> None:
    """Add the own endpoints of a listener bound to ``bound_host``; ``environ`` (default
    ``os.environ``) is read once, here."""
    checks = LocalChecks(gw.clock)
    admin = AdminHandlers(gw, os.environ if environ is None else environ, bound_host=bound_host)
    app[CHECKS] = checks
    app[ADMIN] = admin
    HealthHandlers(gw, checks).add_routes(app)
    admin.add_routes(app)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)
