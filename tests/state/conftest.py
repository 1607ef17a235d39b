"""Fixtures for the state layer: each ledger backend behind one factory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fakes import FakeClock
from tests.support.ledger_backends import EPOCH, Backend, RecordingObserver
from tests.support.redis_server import RedisServer


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The stores of one backend (memory, SQLite file, or a private redis-server) for this test."""
    options: dict[str, Any] = {}
    server: RedisServer | None = None
    if request.param == "sqlite":
        options["path"] = tmp_path / "state" / "ledger.sqlite3"
    elif request.param == "redis":
        # Started here rather than through the redis_server fixture: an async fixture cannot
        # request another one by name (getfixturevalue) once its event loop runs.
        server = await RedisServer(tmp_path / "redis").start()
        options.update(url=server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    b = Backend(request.param, FakeClock(EPOCH), RecordingObserver(), options)
    yield b
    await b.close()
    if server is not None:
        server.kill()
