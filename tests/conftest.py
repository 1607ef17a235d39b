"""Shared fixtures: fake providers on loopback and a sidecar app built from a config in code.

Helpers live in ``tests/support``; this file holds only fixtures (and the hypothesis profile).
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from pytest_aiohttp import AiohttpServer

from sidecar.config import SidecarConfig
from sidecar.web.app import create_app

from .support.fake_provider import FakeProvider
from .support.fakes import FakeClock, RecordingSleep
from .support.sidecar_listener import SidecarClient, start_listener

# The redis_server fixture: one private redis-server per test, for the state and fleet tests.
pytest_plugins = ("tests.support.redis_server",)


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeProvider:
    """A scripted fake provider on 127.0.0.1 (pytest-aiohttp serves it and closes it after the test)."""
    return await FakeProvider().start(aiohttp_server)


@pytest.fixture
def sleep() -> RecordingSleep:
    return RecordingSleep()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


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


# Property tests: in CI the same examples every run (a new random counterexample must not decide
# whether a submission lands), and no example database written into the checkout.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
