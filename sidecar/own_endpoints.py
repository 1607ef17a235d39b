"""The sidecar's own endpoints (``/health*``, ``/metrics``, ``/admin``), served on both listeners."""

from __future__ import annotations

from aiohttp import web

from . import __version__
from .gateway import Gateway
from .metrics import CONTENT_TYPE_LATEST


def add_own_routes(app: web.Application, gw: Gateway) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "version": __version__, "uptime_seconds": round(gw.uptime(), 3)}
        )

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def ready(request: web.Request) -> web.Response:
        if gw.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(request: web.Request) -> web.Response:
        for rt in gw.providers.values():
            _ = rt.breaker.state  # OPEN -> HALF_OPEN happens lazily; let the gauge see it
        return web.Response(body=gw.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics)
