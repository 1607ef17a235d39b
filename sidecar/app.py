"""The app factory: one aiohttp application per listener, sharing one ``Gateway``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal

from aiohttp import web

from . import __version__
from .config import RESERVED_NAMES, SidecarConfig
from .download import DownloadHandler
from .errors import error_response
from .gateway import Gateway
from .metrics import Metrics
from .own_endpoints import add_own_routes
from .proxy import ProxyHandler, split_target
from .routing import CatchAllResource
from .upstream import AttemptLoop

Role = Literal["proxy", "ops"]
GATEWAY = web.AppKey("gateway", Gateway)


def runner_kwargs(config: SidecarConfig) -> dict[str, Any]:
    """Server settings for both listeners (also used by tests that build their own runner)."""
    return {
        "auto_decompress": False,  # bodies pass through as sent, Content-Encoding untouched
        "access_log": None,  # the sidecar logs what matters itself (server.access_log)
        "handle_signals": False,
        "shutdown_timeout": config.server.shutdown_grace,
        # An idle keep-alive connection is closed after this (aiohttp's default is an hour); it is
        # longer than common client pools keep idle connections (aiohttp 15s), so they close first.
        "keepalive_timeout": 75.0,
        # aiohttp's limits, stated: longer lines or more headers are answered 400 and closed.
        "max_line_size": 8190,
        "max_field_size": 8190,
        "max_headers": 128,
    }


def create_app(
    config: SidecarConfig,
    *,
    role: Role = "proxy",
    gateway: Gateway | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
) -> web.Application:
    """Build the app for one listener; without a ``gateway`` it owns a new one for its lifetime."""
    owns = gateway is None
    gw = gateway or Gateway(config, metrics=Metrics(__version__), clock=clock, wall=wall, rng=rng)
    app = web.Application()
    app[GATEWAY] = gw
    add_own_routes(app, gw, environ)  # environ: SIDECAR_ADMIN_TOKEN, read once
    if role == "proxy":
        handler = _proxy_dispatch(
            gw, AttemptLoop(clock=gw.clock, sleep=sleep, rng=gw.rng, wall=gw.wall)
        )
    else:
        handler = _not_found
    app.router.register_resource(CatchAllResource(handler))
    if owns:
        app.cleanup_ctx.append(_gateway_lifetime(gw))
    return app


def _gateway_lifetime(gw: Gateway) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        await gw.start()
        yield
        await gw.close()

    return lifetime


async def _not_found(request: web.Request) -> web.StreamResponse:
    return error_response("not_found", "the ops listener serves only /health*, /metrics and /admin")


def _proxy_dispatch(
    gw: Gateway, loop: AttemptLoop
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    proxy = ProxyHandler(gw, loop)
    download = DownloadHandler(gw, loop)
    providers = gw.providers
    unknown = gw.metrics.provider("unknown").operation("other")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        if not raw.startswith("/"):
            resp = error_response("bad_request", "only origin-form request targets are accepted")
        else:
            name, rest, query = split_target(raw)
            rt = providers.get(name)
            if rt is not None and rt.config.kind == "download":
                return await download.forward(request, rt, rest, query)
            if rt is not None:
                return await proxy.forward(request, rt, rest, query)
            if name in RESERVED_NAMES:
                resp = error_response("not_found", f"no such endpoint: /{name}{rest}")
            else:
                resp = error_response(
                    "unknown_provider",
                    "no such provider",
                    provider=None,
                    extra={"known_providers": gw.known},
                )
        unknown.observe(resp.status, 0.0)
        return resp

    return dispatch
