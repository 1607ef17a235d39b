"""A sidecar app served on a loopback port by the production runner (``SidecarRunner``, its settings).

Not pytest-aiohttp's ``TestServer``: that one always switches ``handler_cancellation`` on, which the
sidecar's own listeners leave off, and it knows nothing of the runner's slow-head timeout or its
shortcut for provider paths; the tests must see the sidecar as it runs in production.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from sidecar.config import SidecarConfig
from sidecar.web.app import runner_kwargs
from sidecar.web.server import SidecarRunner

__all__ = ["SidecarClient", "start_listener"]


class SidecarClient:
    """A client bound to one running sidecar listener (the production runner)."""

    def __init__(self, runner: web.AppRunner, session: aiohttp.ClientSession) -> None:
        self.runner = runner
        self.session = session
        self.port: int = runner.addresses[0][1]
        self.app = runner.app

    def make_url(self, path: str) -> URL:
        return URL(f"http://127.0.0.1:{self.port}{path}", encoded=True)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.session.request(method, self.make_url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def head(self, path: str, **kwargs: Any) -> Any:
        return self.request("HEAD", path, **kwargs)

    async def close(self) -> None:
        await self.session.close()
        await self.runner.cleanup()


async def start_listener(app: web.Application, config: SidecarConfig) -> SidecarClient:
    """Serve ``app`` on a free loopback port with ``config``'s runner settings; a client on it."""
    runner = SidecarRunner(
        app, header_read_timeout=config.server.header_read_timeout, **runner_kwargs(config)
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return SidecarClient(runner, aiohttp.ClientSession())
