"""The proxy listener's shortcut: a provider's path is served without the application's router,
and whatever the shortcut does not claim is the application's, as before.

The ``sidecar`` fixture serves through ``SidecarRunner``, so every proxy test goes through the
shortcut; these tests cover what it must leave to the application.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..support.configs import provider, sidecar_config
from ..support.fake_provider import FakeProvider


async def test_expect_100_continue_is_answered_before_the_body_is_sent(
    sidecar: Callable[..., Any], fake: FakeProvider
) -> None:
    """The application's expect handler sends ``100 Continue``: a client that waits for it before
    sending its body would otherwise wait until its own timeout."""
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(b"POST /p/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\n\r\n")
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(b"hello")
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert [(s.method, s.raw_path, s.body) for s in fake.seen] == [("POST", "/jobs", b"hello")]


async def test_paths_that_are_no_providers_reach_the_application(
    sidecar: Callable[..., Any], fake: FakeProvider
) -> None:
    client = await sidecar(sidecar_config(provider("p", fake.url)))
    async with client.get("/health/live") as resp:
        assert resp.status == 200
    async with client.get("/nobody/x") as resp:
        assert resp.status == 404
        assert resp.headers["X-Sidecar-Error"] == "unknown_provider"
    async with client.get("/p/x") as resp:
        assert resp.status == 200
    assert [s.raw_path for s in fake.seen] == ["/x"]
