"""The catch-all route: every path the own endpoints don't claim reaches one handler.

A resource that matches every path, built on aiohttp's public ``web.AbstractResource``. A dynamic
route would do too, with care: the router matches the *decoded* path, where ``%0a`` is a newline,
so it would have to be ``/{tail:(?s:.*)}``; and every proxied request would then pay for a regular
expression, its match dictionary and the unquoting of the tail that nobody reads (the handler
parses the raw target itself). Registered last, it is asked only after the own endpoints.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from yarl import URL

__all__ = ["CatchAllResource", "add_catch_all"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class CatchAllResource(web.AbstractResource):
    """Every method, every path: one route to ``handler`` (a fresh match info per request: the
    application adds itself to it and freezes it)."""

    def __init__(self, handler: Handler) -> None:
        super().__init__(name=None)
        self._route = web.ResourceRoute("*", handler, self)
        self._methods = {"*"}  # shared by every resolve, as aiohttp's own resources share theirs

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        return URL("/")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the catch-all resource takes no prefix")

    def get_info(self) -> dict[str, Any]:  # type: ignore[override]
        return {"path": "/*"}

    def raw_match(self, path: str) -> bool:
        return True

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo, set[str]]:
        return web.UrlMappingMatchInfo({}, self._route), self._methods

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        yield self._route


def add_catch_all(router: web.UrlDispatcher, handler: Handler) -> None:
    """Route every method and every path not matched before it (add it last) to ``handler``."""
    router.register_resource(CatchAllResource(handler))
