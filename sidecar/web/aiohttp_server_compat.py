"""Every use of aiohttp's server internals, in one place, behind a small typed API.

The listeners time out a slow request head (``web.server``), which aiohttp has no public hook for:
it takes a ``RequestHandler`` subclass (``HeadTimeoutProtocol``, the per-connection protocol) that
knows whether a request is being parsed or handled, and a runner whose server builds connections
with it. The same server takes a *shortcut*: requests it claims (a provider's path) skip the
application's router, its match info and its response signals, which the catch-all route would
only have passed on to the same handler. This module is the only one that reaches into aiohttp's
server for that, and ``PRIVATE_API`` lists each name it relies on; ``tests/test_aiohttp_contract.py``
checks the list against the installed aiohttp (and that this module touches nothing it does not
list).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from ..upstream.aiohttp_client_compat import PrivateName

__all__ = [
    "PRIVATE_API", "HeadTimeoutProtocol", "ProtocolFactory", "ProtocolRunner", "Shortcut", "busy",
    "requests_parsed",
]

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
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def busy(handler: web.RequestHandler) -> bool:
    """Whether a request is being handled on this connection, or parsed and queued for it."""
    return bool(handler._request_in_progress or handler._messages)


def requests_parsed(handler: web.RequestHandler) -> int:
    """How many request heads this connection has parsed so far."""
    return handler._request_count


_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class HeadTimeoutProtocol(web.RequestHandler):
    """aiohttp's protocol, plus a deadline from the first byte of a request head to its end.

    ``data_received`` runs for every request: it reads what ``busy`` and ``requests_parsed`` read
    directly, without their calls.
    """

    __slots__ = ("head_count", "head_timeout", "head_timer")

    def __init__(self, manager: web.Server, *, head_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.head_timeout = head_timeout
        self.head_timer: asyncio.TimerHandle | None = None
        self.head_count = 0

    def data_received(self, data: bytes) -> None:
        # Bytes while no request is queued or being handled start a head.
        starts = bool(data) and self.head_timer is None and not (
            self._request_in_progress or self._messages
        )
        count = self._request_count
        super().data_received(data)
        if self.head_timer is not None:
            if self._request_count != self.head_count:
                self.head_timer.cancel()  # a whole request was parsed
                self.head_timer = None
        elif starts and self._request_count == count and self.transport is not None:
            # Time only a head that this read left incomplete: a request usually arrives whole, and
            # a timer armed and cancelled per request was ~3% of the CPU under load.
            self.head_count = count
            loop = asyncio.get_running_loop()
            self.head_timer = loop.call_later(self.head_timeout, self.head_timed_out)

    def head_timed_out(self) -> None:
        self.head_timer = None
        # Body bytes of a request already being handled are not a slow head.
        if requests_parsed(self) != self.head_count or busy(self):
            return
        if self.transport is not None:
            self.transport.write(_REQUEST_TIMEOUT)
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)


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
    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        claimed = shortcut(cast(web.Request, request))  # the application's request factory made it
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
