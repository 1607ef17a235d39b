"""Every use of aiohttp's server internals, in one place, behind a small typed API.

The listeners time out a slow request head (``web.server``), which aiohttp has no public hook for:
it takes a ``RequestHandler`` subclass (the per-connection protocol) that knows whether a request
is being parsed or handled, and a runner whose server builds connections with it. The same server
takes a *shortcut*: requests it claims (a provider's path) skip the application's router, its match
info and its response signals, which the catch-all route would only have passed on to the same
handler. This module is the only one that reaches into aiohttp's server for that, and
``PRIVATE_API`` lists each name it relies on; ``tests/test_aiohttp_contract.py`` checks the list against the installed aiohttp (and
that this module touches nothing it does not list).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..upstream.aiohttp_client_compat import PrivateName

__all__ = ["PRIVATE_API", "ProtocolFactory", "ProtocolRunner", "Shortcut", "busy", "requests_parsed"]

_HANDLER = "aiohttp.web.RequestHandler"

PRIVATE_API: tuple[PrivateName, ...] = (
    PrivateName(_HANDLER, "_request_in_progress", "attribute"),
    PrivateName(_HANDLER, "_messages", "attribute"),
    PrivateName(_HANDLER, "_request_count", "attribute"),
    PrivateName(_HANDLER, "__init__", "method", ("manager", "loop")),
    PrivateName(_HANDLER, "data_received", "method"),
    PrivateName(_HANDLER, "connection_lost", "method"),
    PrivateName(_HANDLER, "force_close", "method"),
    PrivateName("aiohttp.web.Server", "__init__", "method",
                ("handler", "request_factory", "handler_cancellation", "loop")),
    PrivateName("aiohttp.web.Server", "request_factory", "attribute"),
    PrivateName("aiohttp.web.Server", "request_handler", "attribute"),
    PrivateName("aiohttp.web.Server", "handler_cancellation", "attribute"),
    PrivateName("aiohttp.web.Server", "_loop", "attribute"),
    PrivateName("aiohttp.web.Server", "_kwargs", "attribute"),
    PrivateName("aiohttp.web.AppRunner", "_make_server", "coroutine"),
)

# Makes one connection's protocol: called as aiohttp builds its own, ``factory(server, loop=...,
# **handler_settings)``; a subclass of ``web.RequestHandler`` taking those arguments is one.
ProtocolFactory = Callable[..., web.RequestHandler]

# The handling of a request the server claims before the application sees it (None: the
# application's, as usual). Called with every request the application would get.
Shortcut = Callable[[web.Request], Awaitable[web.StreamResponse] | None]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def busy(handler: web.RequestHandler) -> bool:
    """Whether a request is being handled on this connection, or parsed and queued for it."""
    return bool(handler._request_in_progress or handler._messages)


def requests_parsed(handler: web.RequestHandler) -> int:
    """How many request heads this connection has parsed so far."""
    return handler._request_count


class _ProtocolServer(web.Server):
    """aiohttp's ``Server`` for an app, rebuilt with the same settings, making ``factory``'s
    protocols instead of plain ``RequestHandler``."""

    __slots__ = ("factory",)

    def __init__(self, base: web.Server, factory: ProtocolFactory, shortcut: Shortcut | None) -> None:
        handler = base.request_handler
        if shortcut is not None:
            handler = _with_shortcut(shortcut, handler)
        super().__init__(
            handler, request_factory=base.request_factory,
            handler_cancellation=base.handler_cancellation, loop=base._loop, **base._kwargs,
        )
        self.factory = factory

    def __call__(self) -> web.RequestHandler:
        return self.factory(self, loop=self._loop, **self._kwargs)


def _with_shortcut(shortcut: Shortcut, application: Handler) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        claimed = shortcut(request)
        if claimed is None:
            return await application(request)
        return await claimed

    return handle


class ProtocolRunner(web.AppRunner):
    """An ``AppRunner`` whose connections are ``protocol`` instances (a ``RequestHandler`` kind),
    and whose server lets ``shortcut`` claim requests before the application."""

    __slots__ = ("protocol", "shortcut")

    def __init__(
        self, app: web.Application, *, protocol: ProtocolFactory, shortcut: Shortcut | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self.protocol = protocol
        self.shortcut = shortcut

    async def _make_server(self) -> web.Server:
        return _ProtocolServer(await super()._make_server(), self.protocol, self.shortcut)
