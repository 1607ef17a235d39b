"""``/admin``: inspect breakers and override them (reset, force-open, disable).

Access: when ``SIDECAR_ADMIN_TOKEN`` is set, every ``/admin`` request needs
``Authorization: Bearer <token>`` (compared in constant time), on either listener. When it is not
set, ``/admin`` answers only on a listener whose configured bind address is loopback; anywhere else
(``0.0.0.0``, ``::``, a pod IP, a host name other than ``localhost``) it is 403. Neither the peer's
address nor the local address a connection arrived on counts: behind a local proxy (a mesh's
inbound proxy, ``kubectl port-forward``) every remote caller arrives from and on 127.0.0.1.

Without a token, a browser on the operator's machine is the remaining way in: a web page can send a
simple POST to ``127.0.0.1`` (cross-site request forgery) or rebind its own name to it (DNS
rebinding). So such requests must also name a loopback ``Host`` and come from no other site: an
``Origin`` that is not loopback, or ``Sec-Fetch-Site: cross-site``, is 403. Tools such as curl send
neither header and are unaffected; the status page is same-origin.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import ErrorCode, error_response
from ..logs import get_logger
from ..providers.registry import ProviderRegistry
from ..providers.shared_breaker import SharedBreaker

__all__ = ["TOKEN_ENV", "AdminHandlers", "is_loopback_binding", "token_matches"]

TOKEN_ENV = "SIDECAR_ADMIN_TOKEN"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_binding(host: str) -> bool:
    """True when a listener bound to ``host`` can only be reached from this host.

    ``host`` is the listener's configured address: a loopback literal (IPv4, IPv6, IPv4-mapped) or
    ``localhost``, which resolves to loopback by definition (RFC 6761). Wildcards, other addresses,
    other names and the empty string (every interface) are not loopback.
    """
    name = host.strip().rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(name.split("%", 1)[0])  # a zone id names a link, not an address
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def _host_of(authority: str) -> str:
    """The host of ``host[:port]`` or ``[v6]:port``, without brackets; empty when unparsable."""
    try:
        return urlsplit("//" + authority).hostname or ""
    except ValueError:
        return ""


def browser_refusal(headers: Mapping[str, str]) -> str | None:
    """Why a token-less admin request looks like it came from another site through a browser."""
    host = headers.get("Host")
    if host is not None and not is_loopback_binding(_host_of(host)):
        return f"Host {host[:100]!r} is not a loopback address (DNS rebinding)"
    origin = headers.get("Origin")
    if origin is not None and not is_loopback_binding(urlsplit(origin).hostname or ""):
        return f"Origin {origin[:100]!r} is another site"
    if headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return "a cross-site browser request"
    return None


def token_matches(header: str | None, token: str) -> bool:
    """``header`` is ``Bearer <token>`` (scheme case-insensitive); constant-time comparison."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # aiohttp decodes header bytes as UTF-8 with surrogateescape (and so does os.environ), so any
    # bytes at all come back as the bytes that were sent instead of raising.
    return hmac.compare_digest(_raw(given.strip()), _raw(token))


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class AdminHandlers:
    """The ``/admin`` routes of one listener; ``bound_host`` is the address that listener binds."""

    def __init__(
        self, registry: ProviderRegistry, environ: Mapping[str, str], *, bound_host: str,
        shared: Mapping[str, SharedBreaker] | None = None,
    ) -> None:
        self.registry = registry
        self._shared = shared or {}  # breaker.shared providers: reset clears the fleet's record too
        self.token = environ.get(TOKEN_ENV) or None  # read once: changing env later changes nothing
        self.bound_host = bound_host
        self._local_only = is_loopback_binding(bound_host)
        self._log = get_logger("admin")
        self._actions: dict[str, Callable[[str], None]] = {
            "reset": lambda name: registry.providers[name].control.reset(),
            "force-open": lambda name: registry.providers[name].control.force_open(),
            "disable": lambda name: registry.providers[name].control.disable(),
        }

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/admin/breakers", self._guard(self.breakers))
        app.router.add_post("/admin/breakers/{provider}/{action}", self._guard(self.action))

    def guard(self, handler: Handler) -> Handler:
        """``handler`` behind ``/admin``'s access rule (for other ``/admin`` routes)."""
        return self._guard(handler)

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if self.token is not None:
                if not token_matches(request.headers.get("Authorization"), self.token):
                    resp = error_response(
                        ErrorCode.UNAUTHORIZED, "admin requires Authorization: Bearer <token>"
                    )
                    resp.headers["WWW-Authenticate"] = 'Bearer realm="sidecar-admin"'
                    return resp
            elif not self._local_only:
                return error_response(
                    ErrorCode.FORBIDDEN,
                    f"admin without {TOKEN_ENV} answers only on a listener bound to loopback; "
                    f"this one is bound to {self.bound_host or 'every interface'}",
                )
            elif (why := browser_refusal(request.headers)) is not None:
                return error_response(
                    ErrorCode.FORBIDDEN, f"admin without {TOKEN_ENV} refuses {why}"
                )
            return await handler(request)

        return guarded

    async def breakers(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"breakers": {name: rt.control.snapshot() for name, rt in self.registry.providers.items()}}
        )

    async def action(self, request: web.Request) -> web.Response:
        name = request.match_info["provider"]
        action = request.match_info["action"]
        if name not in self.registry.providers:
            return error_response(
                ErrorCode.UNKNOWN_PROVIDER, "no such provider", provider=name,
                extra={"known_providers": self.registry.known},
            )
        act = self._actions.get(action)
        if act is None:
            return error_response(
                ErrorCode.BAD_REQUEST, f"unknown action {action!r}; one of: {', '.join(self._actions)}",
                provider=name,
            )
        breaker = self.registry.providers[name].control
        before = breaker.state.value
        act(name)
        fleet: bool | None = None
        link = self._shared.get(name)
        if link is not None and action == "reset":
            fleet = await link.reset()
        snapshot = breaker.snapshot()
        self._log.warning(
            "admin_action", provider=name, action=action, from_state=before,
            state=snapshot["state"], remote=request.remote,
            **({} if fleet is None else {"fleet_reset": fleet}),
        )
        return web.json_response({"provider": name, **snapshot})
