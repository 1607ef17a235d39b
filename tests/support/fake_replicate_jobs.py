"""A fake Replicate that creates predictions, lists them newest first, and loses answers on demand.

Each create takes the next scripted ``CreateMode``: answer 201, create the prediction and then drop
the connection (the job exists, the answer is lost), or drop it without creating anything. The
list (``GET /v1/predictions``) pages two predictions at a time with a ``next`` URL naming another
host (only its path and query may be followed), or fails with 500 when ``list_fails`` is set.
Every request is recorded: method, path with query, and the Authorization header.
"""

from __future__ import annotations

import enum
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

PAGE = 2


class CreateMode(enum.Enum):
    ANSWER = "answer"
    CREATE_THEN_RESET = "create_then_reset"
    RESET = "reset"


@dataclass
class Call:
    method: str
    target: str
    authorization: str | None


@dataclass
class FakeReplicateJobs:
    script: deque[CreateMode] = field(default_factory=deque)
    predictions: list[dict[str, object]] = field(default_factory=list)  # oldest first
    calls: list[Call] = field(default_factory=list)
    list_fails: bool = False
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def creates(self) -> list[Call]:
        return [c for c in self.calls if c.method == "POST"]

    def lists(self) -> list[Call]:
        return [c for c in self.calls if c.method == "GET"]

    async def start(self) -> FakeReplicateJobs:
        app = web.Application()
        app.router.add_post("/v1/predictions", self._create)
        app.router.add_post("/v1/models/{owner}/{name}/predictions", self._create)
        app.router.add_get("/v1/predictions", self._list)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add_old(self, version: str, inputs: object) -> None:
        """A prediction created long ago (before any send in the test)."""
        self.predictions.append(_prediction(f"old-{len(self.predictions)}", version, inputs,
                                            "2020-01-01T00:00:00.000000Z"))

    async def _create(self, request: web.Request) -> web.StreamResponse:
        self.calls.append(Call("POST", request.path_qs, request.headers.get("Authorization")))
        payload = json.loads(await request.read())
        mode = self.script.popleft() if self.script else CreateMode.ANSWER
        if mode is CreateMode.RESET:
            return _drop(request)
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        version = payload.get("version") or request.match_info.get("name", "")
        prediction = _prediction(f"p-{len(self.predictions)}", version, payload.get("input"), now)
        self.predictions.append(prediction)
        if mode is CreateMode.CREATE_THEN_RESET:
            return _drop(request)
        return web.json_response(prediction, status=201)

    async def _list(self, request: web.Request) -> web.Response:
        self.calls.append(Call("GET", request.path_qs, request.headers.get("Authorization")))
        if self.list_fails:
            return web.json_response({"detail": "internal error"}, status=500)
        newest = list(reversed(self.predictions))
        start = int(request.query.get("cursor", "0"))
        page = newest[start:start + PAGE]
        more = start + PAGE < len(newest)
        nxt = f"https://elsewhere.example/v1/predictions?cursor={start + PAGE}" if more else None
        return web.json_response({"next": nxt, "previous": None, "results": page})


def _drop(request: web.Request) -> web.Response:
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


def _prediction(pid: str, version: str, inputs: object, created_at: str) -> dict[str, object]:
    return {"id": pid, "model": "acme/flux", "version": version, "input": inputs,
            "status": "starting", "created_at": created_at, "urls": {}}
