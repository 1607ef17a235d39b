"""The app factory: one aiohttp application per listener, sharing one ``Services``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, cast

from aiohttp import hdrs, web

from ..config import OWN_ENDPOINTS, UNKNOWN_PROVIDER, RouteConfig, SidecarConfig
from ..errors import ErrorCode, error_response
from ..headers import CALLER_OPERATION, REQUEST_ID, SIDECAR_ERROR
from ..logs import get_logger
from ..ops.endpoints import add_own_routes
from ..ops.metrics import RouteMetrics
from ..ops.status_page import add_status_routes
from ..providers.download import DownloadHandler
from ..providers.proxy import ProxyHandler, split_target
from ..providers.runtime import ProviderRuntime, ProxyRuntime
from .aiohttp_server_compat import Shortcut
from .catch_all import add_catch_all
from .services import Services

Role = Literal["proxy", "ops"]
SERVICES = web.AppKey("services", Services)
# The proxy listener's provider paths, claimed before the application's router (SidecarRunner).
SHORTCUT: web.AppKey[Shortcut] = web.AppKey("shortcut")


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
    services: Services | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
) -> web.Application:
    """Build the app for one listener.

    Without ``services`` it builds its own from the other arguments and runs them for its lifetime
    (``cleanup_ctx``); with ``services`` the caller runs them (``async with services.running()``)
    and the other arguments are unused.
    """
    owns = services is None
    svc = services or Services(config, clock=clock, wall=wall, sleep=sleep, rng=rng, environ=environ)
    app = web.Application()
    app[SERVICES] = svc
    # /admin's access rule depends on the address this listener is configured to bind.
    bound_host = config.server.host if role == "proxy" else config.server.ops_host
    add_own_routes(
        app, registry=svc.registry, probes=svc.probes, metrics=svc.metrics, status=svc.status,
        bound_host=bound_host, environ=svc.environ,  # SIDECAR_ADMIN_TOKEN, read once
        limits=svc.limits, shared=svc.shared,
        jobs=svc.jobs,
    )
    if role == "proxy":
        handler, app[SHORTCUT] = _proxy_dispatch(svc)
    else:
        add_status_routes(app, svc.registry, clock=svc.clock, wall=svc.wall)  # ops listener only
        handler = _not_found
    add_catch_all(app.router, handler)
    if owns:
        app.cleanup_ctx.append(_lifetime(svc))
    return app


def _lifetime(svc: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with svc.running():
            yield

    return lifetime


async def _not_found(request: web.Request) -> web.StreamResponse:
    return error_response(
        ErrorCode.NOT_FOUND, "the ops listener serves only /health*, /metrics, /admin and /status"
    )


Forward = Callable[
    [web.Request, ProviderRuntime, str, str, RouteConfig, str], Awaitable[web.StreamResponse]
]


def _proxy_dispatch(
    svc: Services,
) -> tuple[Callable[[web.Request], Awaitable[web.StreamResponse]], Shortcut]:
    """The catch-all route's handler, and the shortcut that serves a provider's path without the
    router (the same calls, minus the router's work on every request)."""
    registry = svc.registry
    proxy = ProxyHandler(svc.attempts, svc.limits, svc.shared, jobs=svc.jobs)
    download = DownloadHandler(registry, svc.attempts)

    # The handler of each provider's kind, chosen once by its runtime's type.
    forwards = {
        name: cast(Forward, proxy.forward if isinstance(rt, ProxyRuntime) else download.forward)
        for name, rt in registry.providers.items()
    }
    serve = _ProviderCalls(svc, forwards)
    providers = registry.providers
    known = registry.known
    # Only the request series: a provider that doesn't exist has no breaker, attempts or retries.
    unknown = RouteMetrics(svc.metrics, UNKNOWN_PROVIDER, "other")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        if not raw.startswith("/"):
            resp = error_response(ErrorCode.BAD_REQUEST, "only origin-form request targets are accepted")
        else:
            name, rest, query = split_target(raw)
            rt = providers.get(name)
            if rt is not None:
                return await serve(request, rt, rest, query)
            if name in OWN_ENDPOINTS:
                resp = error_response(ErrorCode.NOT_FOUND, f"no such endpoint: /{name}{rest}")
            else:
                resp = error_response(
                    ErrorCode.UNKNOWN_PROVIDER,
                    "no such provider",
                    provider=None,
                    extra={"known_providers": known},
                )
        unknown.observe(resp.status, 0.0, "sidecar")
        return resp

    def shortcut(request: web.Request) -> Awaitable[web.StreamResponse] | None:
        raw = request.raw_path
        # Expect: 100-continue is the application's to answer (its expect handler)
        if not raw.startswith("/") or request.headers.get(hdrs.EXPECT):
            return None
        name, rest, query = split_target(raw)
        rt = providers.get(name)
        return None if rt is None else serve(request, rt, rest, query)

    return dispatch, shortcut


class _ProviderCalls:
    """What every request to a provider gets, whatever its kind: a request id, the in-flight count
    and its bulkhead, the request metrics and the access log line."""

    def __init__(self, svc: Services, forwards: Mapping[str, Forward]) -> None:
        self._forwards = forwards
        self._clock = svc.clock
        self._rng = svc.rng
        self._metrics = {name: svc.metrics.provider(name) for name in svc.registry.providers}
        self._log = get_logger("access") if svc.config.server.access_log else None

    async def __call__(
        self, request: web.Request, rt: ProviderRuntime, rest: str, query: str
    ) -> web.StreamResponse:
        t0 = self._clock()
        route = rt.route_for(request.method, rest or "/")
        # Unique, not secret: a PRNG draw avoids uuid4's urandom syscall per request.
        request_id = request.headers.get(REQUEST_ID) or f"{self._rng.getrandbits(128):032x}"
        rt.inflight += 1
        code, source = 500, "sidecar"  # an exception becomes aiohttp's 500: not the provider's
        try:
            resp: web.StreamResponse
            refused = self._refusal(rt)
            if refused is None:
                resp = await self._forwards[rt.name](request, rt, rest, query, route, request_id)
            else:
                refused.headers[REQUEST_ID] = request_id
                resp = refused
            code = resp.status
            source = "sidecar" if SIDECAR_ERROR in resp.headers else "provider"
            return resp
        finally:
            rt.inflight -= 1
            elapsed = self._clock() - t0
            self._metrics[rt.name].route(route.name).observe(code, elapsed, source)
            if self._log is not None:
                self._log.info(
                    "request", provider=rt.name, operation=route.name, method=request.method,
                    status=code, request_id=request_id,
                    caller_operation=request.headers.get(CALLER_OPERATION),
                    duration_ms=round(elapsed * 1000, 1),
                )

    def _refusal(self, rt: ProviderRuntime) -> web.Response | None:
        """503 without trying: no upstream configured, or the bulkhead (``max_concurrent``) full."""
        cfg = rt.config
        if not cfg.configured:
            return error_response(
                ErrorCode.PROVIDER_UNCONFIGURED, f"provider {rt.name} has no upstream", provider=rt.name
            )
        if cfg.max_concurrent is not None and rt.inflight > cfg.max_concurrent:
            self._metrics[rt.name].bulkhead_rejected.inc()
            return error_response(
                ErrorCode.PROVIDER_OVERLOADED,
                f"{cfg.max_concurrent} requests already in flight to {rt.name}",
                provider=rt.name,
            )
        return None
