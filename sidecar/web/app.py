"""The app factory: one aiohttp application per listener, sharing one ``Gateway``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

from aiohttp import web

from .. import __version__
from ..config import OWN_ENDPOINTS, UNKNOWN_PROVIDER, RouteConfig, SidecarConfig
from ..errors import error_response
from ..headers import OPERATION, REQUEST_ID
from ..logs import get_logger
from ..ops.endpoints import add_own_routes
from ..ops.metrics import Metrics, OperationMetrics
from ..ops.status_page import add_status_routes
from ..providers.download import DownloadHandler
from ..providers.proxy import ProxyHandler, split_target
from ..providers.registry import Gateway, ProviderRuntime
from ..upstream.attempts import AttemptLoop
from .catch_all import CatchAllResource

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
        add_status_routes(app, gw)  # the status page: on the ops listener only
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
    return error_response("not_found", "the ops listener serves only /health*, /metrics, /admin and /status")


class Handler(Protocol):
    """One kind of provider (``proxy``, ``download``): answers a request already accounted for."""

    async def forward(
        self, request: web.Request, rt: ProviderRuntime, rest: str, query: str,
        policy: RouteConfig, request_id: str,
    ) -> web.StreamResponse: ...


def _proxy_dispatch(
    gw: Gateway, loop: AttemptLoop
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    handlers: dict[str, Handler] = {
        "proxy": ProxyHandler(loop),
        "download": DownloadHandler(gw, loop),
    }
    serve = _ProviderCalls(gw)
    providers = gw.providers
    # Only the request series: a provider that doesn't exist has no breaker, attempts or retries.
    unknown = OperationMetrics(gw.metrics, UNKNOWN_PROVIDER, "other")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw = request.raw_path
        if not raw.startswith("/"):
            resp = error_response("bad_request", "only origin-form request targets are accepted")
        else:
            name, rest, query = split_target(raw)
            rt = providers.get(name)
            if rt is not None:
                return await serve(handlers[rt.config.kind], request, rt, rest, query)
            if name in OWN_ENDPOINTS:
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


class _ProviderCalls:
    """What every request to a provider gets, whatever its kind: a request id, the in-flight count
    and its bulkhead, the request metrics and the access log line."""

    def __init__(self, gw: Gateway) -> None:
        self._gw = gw
        self._log = get_logger("access") if gw.config.server.access_log else None

    async def __call__(
        self, handler: Handler, request: web.Request, rt: ProviderRuntime, rest: str, query: str
    ) -> web.StreamResponse:
        gw = self._gw
        t0 = gw.clock()
        policy = rt.policy_for(request.method, rest or "/")
        # Unique, not secret: a PRNG draw avoids uuid4's urandom syscall per request.
        request_id = request.headers.get(REQUEST_ID) or f"{gw.rng.getrandbits(128):032x}"
        rt.inflight += 1
        code = 500
        try:
            resp: web.StreamResponse
            refused = self._refusal(rt)
            if refused is None:
                resp = await handler.forward(request, rt, rest, query, policy, request_id)
            else:
                refused.headers[REQUEST_ID] = request_id
                resp = refused
            code = resp.status
            return resp
        finally:
            rt.inflight -= 1
            elapsed = gw.clock() - t0
            rt.metrics.operation(policy.name).observe(code, elapsed)
            if self._log is not None:
                self._log.info(
                    "request", provider=rt.name, operation=policy.name, method=request.method,
                    status=code, request_id=request_id,
                    caller_operation=request.headers.get(OPERATION),
                    duration_ms=round(elapsed * 1000, 1),
                )

    @staticmethod
    def _refusal(rt: ProviderRuntime) -> web.Response | None:
        """503 without trying: no upstream configured, or the bulkhead (``max_concurrent``) full."""
        cfg = rt.config
        if not cfg.configured:
            return error_response(
                "provider_unconfigured", f"provider {rt.name} has no upstream", provider=rt.name
            )
        if cfg.max_concurrent is not None and rt.inflight > cfg.max_concurrent:
            return error_response(
                "provider_overloaded",
                f"{cfg.max_concurrent} requests already in flight to {rt.name}",
                provider=rt.name,
            )
        return None
