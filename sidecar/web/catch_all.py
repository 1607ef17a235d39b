"""The catch-all route: every path the own endpoints don't claim reaches one handler.

It is aiohttp's public dynamic route, with one care: the router matches the *decoded* path, where
``%0a`` is a newline, and ``.`` does not match a newline unless the pattern says so. ``{tail:.*}``
would leave ``/p/a%0ab`` to aiohttp's plain-text 404; ``(?s:.*)`` hands it to the handler, which
parses the raw target itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = ["CATCH_ALL_PATH", "add_catch_all"]

CATCH_ALL_PATH = "/{tail:(?s:.*)}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_catch_all(router: web.UrlDispatcher, handler: Handler) -> None:
    """Route every method and every path not matched before it (add it last) to ``handler``."""
    router.add_route("*", CATCH_ALL_PATH, handler)
