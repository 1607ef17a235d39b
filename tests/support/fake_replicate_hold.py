"""A fake Replicate API on 127.0.0.1 that holds ``Prefer: wait`` creates, and the timing rule it tests.

Replicate holds a prediction create that carries ``Prefer: wait`` for up to ``REPLICATE_MAX_HOLD``
seconds; when the model is not done by then it answers the prediction as ``starting`` and the client
polls ``GET /v1/predictions/{id}``. The fake does exactly that, with a hold the test chooses, so the
real ``replicate`` SDK can run against it through the sidecar.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web
from pytest_aiohttp import AiohttpServer

from sidecar.config import Timeouts

REPLICATE_MAX_HOLD = 60.0  # seconds: the longest hold of a Prefer: wait create (wait=1..60)
MARGIN = 0.5  # a held create's attempt timeout outlasts the hold by half of it again


def outlasts_hold(timeouts: Timeouts, hold: float = REPLICATE_MAX_HOLD) -> bool:
    """The rule for routes the provider may hold: attempt >= hold x 1.5, and total >= attempt."""
    return timeouts.attempt >= hold * (1 + MARGIN) and timeouts.total >= timeouts.attempt


@dataclass
class Seen:
    method: str
    path: str
    prefer: str | None
    authorization: str | None


@dataclass
class FakeReplicate:
    answer_after: float  # seconds a Prefer: wait create is held before the answer leaves
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def creates(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    async def start(self, serve: AiohttpServer) -> FakeReplicate:
        """Serve on a free port with pytest-aiohttp's ``aiohttp_server`` (which closes it at teardown)."""
        app = web.Application()
        app.router.add_post("/v1/predictions", self._create)
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create)
        app.router.add_post("/v1/deployments/{owner}/{name}/predictions", self._create)
        app.router.add_get("/v1/predictions/{id}", self._get)
        app.router.add_get("/v1/models/{owner}/{name}/versions/{version}", self._version)
        self.port = (await serve(app, access_log=None, shutdown_timeout=0.5)).port
        return self

    def _record(self, request: web.Request) -> None:
        self.seen.append(Seen(request.method, request.path, request.headers.get("Prefer"),
                              request.headers.get("Authorization")))

    async def _create(self, request: web.Request) -> web.Response:
        self._record(request)
        await request.read()
        if "wait" in request.headers.get("Prefer", ""):
            # The model runs longer than the hold: Replicate answers "starting" at the end of it.
            await asyncio.sleep(self.answer_after)
        return web.json_response(_prediction("starting", None), status=201)

    async def _get(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response(_prediction("succeeded", "https://replicate.delivery/out.png"))

    async def _version(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"id": request.match_info["version"], "cog_version": "0.9.0",
                                  "created_at": "2025-01-01T00:00:00Z", "openapi_schema": {}})


def _prediction(status: str, output: str | None) -> dict[str, object]:
    return {
        "id": "p-1", "model": "acme/flux", "version": "v1", "status": status,
        "input": {"prompt": "a cat"}, "output": output, "logs": "", "error": None, "metrics": {},
        "created_at": "2025-01-01T00:00:00Z", "started_at": None, "completed_at": None,
        "urls": {"get": "https://api.replicate.com/v1/predictions/p-1",
                 "cancel": "https://api.replicate.com/v1/predictions/p-1/cancel"},
    }
