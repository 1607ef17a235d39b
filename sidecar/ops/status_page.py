"""``/status``: a live HTML status page, and ``/status/events``, the JSON of recent transitions.

Served on the ops listener only. The page is one self-contained document (inline CSS and JS, no
external assets, works offline) that reads ``health/detailed`` and ``status/events`` every few
seconds and draws them with DOM APIs only. Its buttons call ``/admin/breakers/<provider>/<action>``,
so they are bound by the admin API's own access rule; the page itself is read-only.

The inline script and style are allowed by their SHA-256 in a strict Content-Security-Policy,
computed once when the page is built, so no ``'unsafe-inline'`` is needed.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web

from ..providers.registry import ProviderRegistry
from .transitions import DEFAULT_CAPACITY, TransitionLog

__all__ = ["STATUS_EVENTS", "StatusPage", "add_status_routes", "load_page"]

STATUS_EVENTS = web.AppKey("status_events", TransitionLog)

# Headers of every /status* answer: never cached (it is live), never sniffed as another type.
_COMMON = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True, slots=True)
class StatusPage:
    body: bytes
    csp: str


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def _resource(name: str) -> str:
    return resources.files(__name__.rpartition(".")[0]).joinpath(name).read_text(encoding="utf-8")


@functools.cache
def load_page() -> StatusPage:
    """The page with its style and script inlined, and the policy that allows exactly those two."""
    style, script = _resource("status_page.css"), _resource("status_page.js")
    for text, closing in ((style, "</style"), (script, "</script")):
        if closing in text.lower():
            raise ValueError(f"an inlined asset must not contain {closing}")
    html = _resource("status_page.html")
    if html.count("{{style}}") != 1 or html.count("{{script}}") != 1:
        raise ValueError("status_page.html needs one {{style}} and one {{script}} placeholder")
    html = html.replace("{{style}}", style).replace("{{script}}", script)
    csp = "; ".join((
        "default-src 'self'",
        f"script-src {_sha256(script)}",
        f"style-src {_sha256(style)}",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ))
    return StatusPage(html.encode(), csp)


def add_status_routes(
    app: web.Application,
    registry: ProviderRegistry,
    *,
    clock: Callable[[], float],
    wall: Callable[[], float],
    capacity: int = DEFAULT_CAPACITY,
) -> TransitionLog:
    """Serve ``/status`` and ``/status/events`` on ``app``, fed by the registry's breaker transitions."""
    log = TransitionLog(registry.known, clock=clock, wall=wall, capacity=capacity)
    registry.transition_listeners.append(log.record)
    app[STATUS_EVENTS] = log
    page = load_page()
    page_headers = {
        **_COMMON,
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": page.csp,
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }

    async def status(request: web.Request) -> web.Response:
        return web.Response(body=page.body, headers=page_headers)

    async def events(request: web.Request) -> web.Response:
        return web.json_response(log.snapshot(), headers=_COMMON)

    app.router.add_get("/status", status)
    app.router.add_get("/status/events", events)
    return log
