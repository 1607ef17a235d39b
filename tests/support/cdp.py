"""Drive headless Chromium through the DevTools protocol, for what ``--dump-dom`` can't do: click.

A minimal client on aiohttp's own websocket client (no extra dependency): launch, attach to the
page, ``send`` commands, ``evaluate`` expressions (DevTools evaluation is not subject to the page's
Content-Security-Policy), answer ``confirm()`` dialogs. The browser runs in its own process group
and is killed with it on ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from .browser import BASE_FLAGS, chromium
from .polling import eventually

START_LIMIT = 45.0  # seconds for the browser to open its DevTools port on a loaded machine


class Cdp:
    def __init__(self, proc: asyncio.subprocess.Process, profile: tempfile.TemporaryDirectory[str],
                 session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._proc = proc
        self._profile = profile
        self._session = session
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.dialogs: list[str] = []  # messages of the confirm()/alert() dialogs, all accepted
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def launch(cls) -> Cdp:
        profile = tempfile.TemporaryDirectory(prefix="sidecar-cdp-")
        proc = await asyncio.create_subprocess_exec(
            chromium(), *BASE_FLAGS, f"--user-data-dir={profile.name}", "--remote-debugging-port=0",
            "--window-size=1280,900", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        session = aiohttp.ClientSession()
        try:
            port = await _devtools_port(Path(profile.name), proc)
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        except BaseException:
            await session.close()
            await _kill(proc)
            profile.cleanup()
            raise
        cdp = cls(proc, profile, session, ws)
        await cdp.send("Page.enable")
        await cdp.send("Runtime.enable")
        return cdp

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = future
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 30)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                 awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, expression: str, check: Callable[[Any], bool], *, limit: float = 30.0) -> Any:
        """Poll ``expression`` until ``check(value)`` holds; fail with the last value at the deadline."""
        return await eventually(lambda: self.evaluate(expression), until=check, timeout=limit,
                                interval=0.1, what=f"{expression} passing its check")

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()
        await self._session.close()
        await _kill(self._proc)
        self._profile.cleanup()

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
            elif data.get("method") == "Page.javascriptDialogOpening":
                self.dialogs.append(data["params"]["message"])
                self._spawn(self.send("Page.handleJavaScriptDialog", accept=True))

    def _spawn(self, work: Awaitable[Any]) -> None:
        # Not awaited here: the reader must go on reading to receive the answer.
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a dialog that closed by itself is no error here


async def _devtools_port(profile: Path, proc: asyncio.subprocess.Process) -> int:
    """Chromium writes its DevTools port into ``DevToolsActivePort`` in the profile once listening."""
    marker = profile / "DevToolsActivePort"

    async def written() -> str:
        if proc.returncode is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode} before opening DevTools")
        return await asyncio.to_thread(lambda: marker.read_text() if marker.exists() else "")

    text = await eventually(written, until=str.strip, timeout=START_LIMIT, interval=0.05,
                            what="chromium opening its DevTools port")
    return int(text.split()[0])


async def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
