"""A fake Replicate on 127.0.0.1 that lists predictions newest first, a few per page, like the real API.

It records every target it was asked for. ``next`` is an absolute URL on api.replicate.com, as the
real API returns, so a client that followed hosts would leave loopback (and fail the test).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pytest_aiohttp import AiohttpServer

PAGE = 3


def prediction(pid: str, created: float, *, version: str = "v1", model: str = "acme/painter",
               prompt: str = "a cat") -> dict[str, Any]:
    """A prediction object in Replicate's shape, created at epoch seconds ``created``."""
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "id": pid, "model": model, "version": version, "input": {"prompt": prompt}, "status": "starting",
        "created_at": stamp, "started_at": None, "completed_at": None, "source": "api",
        "data_removed": False, "error": None, "logs": "", "output": None, "metrics": {},
        "urls": {"get": f"https://api.replicate.com/v1/predictions/{pid}",
                 "cancel": f"https://api.replicate.com/v1/predictions/{pid}/cancel"},
    }


class FakeReplicate:
    """Replicate's prediction list, paged newest first; ``fail_page`` makes a page answer badly."""

    def __init__(self, predictions: list[dict[str, Any]]) -> None:
        self.predictions = sorted(predictions, key=lambda p: p["created_at"], reverse=True)
        self.asked: list[str] = []
        self.fail_page: dict[int, tuple[int, str]] = {}  # page -> (status, raw body)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, serve: AiohttpServer) -> FakeReplicate:
        """Serve on a free port with pytest-aiohttp's ``aiohttp_server`` (which closes it at teardown)."""
        app = web.Application()
        app.router.add_get("/v1/predictions", self._list)
        self.port = (await serve(app, access_log=None)).port
        return self

    async def _list(self, request: web.Request) -> web.Response:
        self.asked.append(request.path_qs)
        page = int(request.query.get("cursor", "1"))
        if page in self.fail_page:
            status, body = self.fail_page[page]
            return web.Response(status=status, text=body, content_type="text/html")
        start = (page - 1) * PAGE
        results = self.predictions[start:start + PAGE]
        more = start + PAGE < len(self.predictions)
        return web.json_response({
            "next": f"https://api.replicate.com/v1/predictions?cursor={page + 1}" if more else None,
            "previous": f"https://api.replicate.com/v1/predictions?cursor={page - 1}" if page > 1 else None,
            "results": results,
        })
