"""Ledger stores of every backend behind one factory, and a recorder of their operation events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sidecar.state import LedgerStore, MemoryStore, OperationEvent, RedisStore, SqliteStore

from .fakes import FakeClock

__all__ = ["EPOCH", "Backend", "RecordingObserver"]

EPOCH = 1_700_000_000.0  # the stores take wall-clock epoch seconds


class RecordingObserver:
    """Keeps every operation event, in order."""

    def __init__(self) -> None:
        self.events: list[OperationEvent] = []

    def on_operation(self, event: OperationEvent) -> None:
        self.events.append(event)


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
