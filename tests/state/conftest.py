"""Fixtures for the state layer: a real redis-server, and each backend behind one factory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sidecar.state import LedgerStore, MemoryStore, OperationEvent, RedisStore, SqliteStore
from tests.support.fakes import FakeClock

from .redis_server import RedisServer

EPOCH = 1_700_000_000.0  # the stores take wall-clock epoch seconds


class RecordingObserver:
    """Keeps every operation event, in order."""

    def __init__(self) -> None:
        self.events: list[OperationEvent] = []

    def on_operation(self, event: OperationEvent) -> None:
        self.events.append(event)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; each test gets its own key prefix on it."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for this test alone (fault tests kill and restart it)."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.kill()


@dataclass
class Backend:
    """Builds started stores of one backend over the same backing (file, Redis prefix)."""

    name: str
    clock: FakeClock
    observer: RecordingObserver
    options: dict[str, Any]
    stores: list[LedgerStore] = field(default_factory=list)

    @property
    def shared(self) -> bool:
        """Whether two stores can share records (not memory: that is one process's own)."""
        return self.name != "memory"

    async def store(self, instance_id: str = "pod-a", **overrides: Any) -> LedgerStore:
        kwargs: dict[str, Any] = {"instance_id": instance_id, "clock": self.clock,
                                  "observer": self.observer, **overrides}
        store: LedgerStore
        if self.name == "memory":
            store = MemoryStore(**kwargs)
        elif self.name == "sqlite":
            store = SqliteStore(self.options["path"], **kwargs)
        else:
            # The contract suite checks meaning, not timing: roomy bounds, so a loaded machine's slow
            # connect is not mistaken for an outage (the fault tests set tight ones themselves).
            kwargs.setdefault("op_timeout", 5.0)
            kwargs.setdefault("connect_timeout", 5.0)
            store = RedisStore(self.options["url"], prefix=self.options["prefix"], **kwargs)
        await store.start()
        self.stores.append(store)
        return store

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    options: dict[str, Any] = {}
    if request.param == "sqlite":
        options["path"] = tmp_path / "state" / "ledger.sqlite3"
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        options.update(url=server.url, prefix=f"test-{uuid.uuid4().hex[:8]}:")
    b = Backend(request.param, FakeClock(EPOCH), RecordingObserver(), options)
    yield b
    await b.close()
