"""Timing and error reports for every store operation, through a protocol the metrics layer implements.

The state layer never imports prometheus: a later layer turns these events into
``sidecar_ledger_duration_seconds{backend,op}`` and ``sidecar_ledger_errors_total{backend,op}``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

__all__ = ["NULL_OBSERVER", "OperationEvent", "OperationTimer", "StoreObserver"]


@dataclass(frozen=True, slots=True)
class OperationEvent:
    """One finished store operation; ``error`` is the exception's class name when it failed."""

    backend: str
    op: str
    duration: float
    error: str | None


class StoreObserver(Protocol):
    def on_operation(self, event: OperationEvent) -> None: ...


class _NullObserver:
    def on_operation(self, event: OperationEvent) -> None:
        pass


NULL_OBSERVER: StoreObserver = _NullObserver()


class OperationTimer:
    """``with timer.op("claim"):`` reports one event when the block ends, raised or not."""

    def __init__(
        self, backend: str, observer: StoreObserver, timer: Callable[[], float] = time.perf_counter
    ) -> None:
        self.backend = backend
        self.observer = observer
        self.timer = timer

    def op(self, name: str) -> _Operation:
        return _Operation(self, name)


class _Operation:
    def __init__(self, owner: OperationTimer, name: str) -> None:
        self.owner = owner
        self.name = name
        self.started = 0.0

    def __enter__(self) -> None:
        self.started = self.owner.timer()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        error = None if kind is None else kind.__name__
        duration = self.owner.timer() - self.started
        self.owner.observer.on_operation(OperationEvent(self.owner.backend, self.name, duration, error))
