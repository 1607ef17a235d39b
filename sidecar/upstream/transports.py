"""The two transports, each as the attempt loop's one ``send``: given the seconds left for the
attempt, the response head, or an exception.

``pool_send`` sends through a provider's lean keep-alive pool (it enforces the attempt's timeout
itself, with the route's connect and body-read timeouts); ``session_send`` through an ``aiohttp``
session (one download hop, no redirects followed: the caller checks each hop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from ..config import Timeouts
from .h1pool import Body, H1Pool, H1Response

__all__ = ["pool_send", "session_send"]


def pool_send(
    pool: H1Pool, method: str, target: str, headers: CIMultiDict[str], body: Body, timeouts: Timeouts
) -> Callable[[float], Awaitable[H1Response]]:
    """``target``: the origin-form path and query, sent as is."""

    def send(seconds: float) -> Awaitable[H1Response]:  # no wrapping coroutine on the hot path
        return pool.request(
            method, target, headers, body, seconds,
            connect_timeout=timeouts.connect, read_timeout=timeouts.attempt,
        )

    return send


def session_send(
    session: aiohttp.ClientSession, method: str, url: URL, headers: CIMultiDict[str], body: Body
) -> Callable[[float], Awaitable[aiohttp.ClientResponse]]:
    async def send(seconds: float) -> aiohttp.ClientResponse:
        async with asyncio.timeout(seconds):
            return await session.request(method, url, headers=headers, data=body, allow_redirects=False)

    return send
