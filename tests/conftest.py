"""Shared fixtures: fake providers on loopback and a sidecar app built from a config in code."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import settings
from yarl import URL

from sidecar.config import (
    AuthHeader,
    BreakerConfig,
    ProviderConfig,
    RetryConfig,
    ServerConfig,
    SidecarConfig,
    Timeouts,
)
from sidecar.web.app import create_app, runner_kwargs

from .support.fake_provider import FakeProvider
from .support.fakes import FakeClock


class RecordingSleep:
    """Remembers each requested delay; a short one returns at once, a long one never returns.

    The app's one injected sleep serves the retry waits (fractions of a second in tests: returned at
    once) and the probe loops (an interval of an hour in tests: parked until the app closes, so a
    background loop never spins).
    """

    def __init__(self, park_from: float = 60.0) -> None:
        self.delays: list[float] = []
        self.park_from = park_from

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if delay >= self.park_from:
            await asyncio.Event().wait()


def provider(name: str, upstream: str, **overrides: Any) -> ProviderConfig:
    """A provider with fast test-friendly policies; keyword overrides replace whole fields."""
    base = ProviderConfig(
        name=name,
        upstream=upstream,
        breaker=BreakerConfig(failure_threshold=3, minimum_calls=0, recovery_timeout=10.0),
        retry=RetryConfig(base_delay=0.01, max_delay=1.0),
        timeouts=Timeouts(connect=2.0, attempt=5.0, total=10.0),
    )
    return dataclasses.replace(base, **overrides)


def sidecar_config(*providers: ProviderConfig, **server: Any) -> SidecarConfig:
    return SidecarConfig(server=ServerConfig(**server), providers={p.name: p for p in providers})


SECRET = "sk-test-SECRET-abc123"


def keyed(name: str, upstream: str, **overrides: Any) -> ProviderConfig:
    auth = (AuthHeader(header="Authorization", prefix="Bearer ", env="TOKEN", value=SECRET),)
    return provider(name, upstream, auth=auth, **overrides)


@pytest.fixture
async def fake() -> AsyncIterator[FakeProvider]:
    fp = await FakeProvider().start()
    yield fp
    await fp.close()


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class SidecarClient:
    """A client bound to one running sidecar listener (a real AppRunner, as in production)."""

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
    runner = web.AppRunner(app, **runner_kwargs(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return SidecarClient(runner, aiohttp.ClientSession())


@pytest.fixture
async def sidecar(sleep: RecordingSleep, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start a sidecar app for a config; returns a client on its proxy listener.

    A SQLite job ledger (the default backend) lives in the test's own directory."""
    clients: list[SidecarClient] = []

    async def start(config: SidecarConfig, **kwargs: Any) -> SidecarClient:
        kwargs.setdefault("sleep", sleep)
        # Nothing of the test machine leaks in (SIDECAR_ADMIN_TOKEN, say).
        kwargs.setdefault("environ", {"SIDECAR_STATE_DIR": str(tmp_path / "state")})
        kwargs.setdefault("rng", random.Random(7))
        client = await start_listener(create_app(config, **kwargs), config)
        clients.append(client)
        return client

    yield start
    for c in clients:
        await c.close()


async def raw_http(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send bytes as they are (no client normalisation) and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET an exact request target; returns (status, body)."""
    data = await raw_http(
        port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# Property tests: in CI the same examples every run (a new random counterexample must not decide
# whether a submission lands), and no example database written into the checkout.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
