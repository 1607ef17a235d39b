"""A provider that counts: an aiohttp server recording each call's arrival time (loop time).

Shared by the fleet tests (`tests/fleet/test_fleet_processes.py`) and the fleet rate figure
(`bench/fleet_rate.py`): limits are judged on when calls reach the provider, not on what the
clients were told. On the default asyncio loop, loop time is `time.monotonic()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web


class CountingProvider:
    """An aiohttp server recording each call's arrival (loop time); ``answer`` decides the reply."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.answer: Callable[[web.Request], Awaitable[web.StreamResponse]] = self._ok
        self._runner: web.AppRunner | None = None
        self.url = ""

    @staticmethod
    async def _ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(asyncio.get_running_loop().time())
        return await self.answer(request)

    async def start(self) -> CountingProvider:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
