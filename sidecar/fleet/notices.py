"""Pauses and lowered concurrencies announced by any sidecar, heard by every other at once.

A sidecar admitting calls from a share (see ``RedisBackend``) does not ask Redis for each call, so it
must hear of a pause or a lowering another sidecar made: the scripts that make one ``PUBLISH`` the
key they changed on one channel, and this subscriber, on a connection of its own, drops the shares
it concerns. Redis writes the message to every subscriber before it answers the script's caller,
so a sidecar has it before the 429 that caused it is even answered.

``live`` is true only while the subscription is confirmed: a message sent while it is down would be
missed, so shares are neither granted nor used then (``on_down`` drops those held). A lost
connection is made again every ``retry_every`` seconds. An idle subscription is asked a PING every
``keepalive`` seconds, so one silently dropped on the way (a NAT, a proxy) is noticed within the
client's read timeout after that.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from sidecar.logs import get_logger
from sidecar.state.resp import RespClient, RespError

__all__ = ["Notices"]


class Notices:
    """The subscriber of one channel, started on first use; ``aclose`` ends it."""

    def __init__(
        self,
        url: str,
        channel: str,
        *,
        timeout: float,
        on_notice: Callable[[str], None],
        on_down: Callable[[], None],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        retry_every: float = 1.0,
        keepalive: float = 5.0,
    ) -> None:
        self.url = url
        self.channel = channel
        self.timeout = timeout
        self.live = False
        self._on_notice = on_notice
        self._on_down = on_down
        self._sleep = sleep
        self._retry_every = retry_every
        self._keepalive = keepalive
        self._task: asyncio.Task[None] | None = None
        self.log = get_logger("limits")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="sidecar-fleet-notices"
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        was_live = True  # a first failure is worth a line in the log, repeats are not
        while True:
            lost: asyncio.Future[None] = loop.create_future()
            client = RespClient(
                self.url, connect_timeout=self.timeout, read_timeout=self.timeout,
                name="sidecar-fleet-notices", push=self._heard,
                on_lost=functools.partial(_set_once, lost),
            )
            try:
                await client.execute("SUBSCRIBE", self.channel)
                self.live = was_live = True
                while not lost.done():
                    await asyncio.wait([lost], timeout=self._keepalive)
                    if not lost.done():
                        await client.execute("PING")  # fails after the read timeout if unanswered
            except (RespError, OSError) as error:
                if was_live:
                    self.log.warning("fleet_notices_unavailable", error=str(error))
                was_live = False
            finally:
                self._down()
                await client.aclose()
            await self._sleep(self._retry_every)

    def _heard(self, data: bytes) -> None:
        self._on_notice(data.decode())

    def _down(self) -> None:
        if self.live:
            self.live = False
            self._on_down()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._down()


def _set_once(lost: asyncio.Future[None]) -> None:
    if not lost.done():
        lost.set_result(None)
