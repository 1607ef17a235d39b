"""A catch-all aiohttp resource: every path the own endpoints don't claim reaches one handler.

aiohttp's ``{tail:.*}`` does not match every decoded path (``%0a`` decodes to a newline), so the
fallback is a resource that matches unconditionally and lets the handler parse the raw target.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.web_urldispatcher import (
    AbstractResource,
    AbstractRoute,
    ResourceRoute,
    UrlMappingMatchInfo,
    _InfoDict,
)
from yarl import URL

Handler = Any  # aiohttp's own Handler alias is private


class CatchAllResource(AbstractResource):
    def __init__(self, handler: Handler) -> None:
        super().__init__(name=None)
        self._route = ResourceRoute("*", handler, self)
        self._methods = frozenset({"*"})

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        return URL("/")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the catch-all resource takes no prefix")

    def get_info(self) -> _InfoDict:
        return {"path": "/*"}

    def raw_match(self, path: str) -> bool:
        return True

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo, set[str]]:
        return UrlMappingMatchInfo({}, self._route), set(self._methods)

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[AbstractRoute]:
        yield self._route
