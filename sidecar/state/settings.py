"""The ``ledger:`` settings, where the embedded file lives, and the factory that builds a store.

The SQLite file is ``ledger.path`` when set, else ``ledger.sqlite3`` in the state directory:
``SIDECAR_STATE_DIR`` when set; else ``/var/lib/sidecar`` when that directory exists and is writable
(the image creates it; mount an ``emptyDir`` there so it survives container restarts); else
``<tmp>/sidecar-<uid>``, which survives restarts of the process on the same machine.
"""

from __future__ import annotations

import enum
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .memory_store import MEMORY_MAX_ENTRIES, MemoryStore
from .observe import NULL_OBSERVER, StoreObserver
from .redis_store import RedisStore
from .sqlite_store import SqliteStore
from .store import LedgerStore

__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_STATE_DIR",
    "LEDGER_FILE",
    "LedgerBackend",
    "LedgerSettings",
    "OnUnavailable",
    "instance_id_from",
    "ledger_path",
    "open_store",
    "state_dir",
]

DEFAULT_STATE_DIR = Path("/var/lib/sidecar")
LEDGER_FILE = "ledger.sqlite3"


class LedgerBackend(enum.Enum):
    SQLITE = "sqlite"
    MEMORY = "memory"
    REDIS = "redis"


class OnUnavailable(enum.Enum):
    FORWARD = "forward"  # send without protection (logged, counted)
    REFUSE = "refuse"  # 503 ledger_unavailable


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    backend: LedgerBackend = LedgerBackend.SQLITE
    path: str | None = None  # sqlite: the file; None -> <state dir>/ledger.sqlite3
    url: str | None = None  # redis: redis://host:6379/0 or rediss:// for TLS
    prefix: str = "sidecar:"  # redis: namespace of every key
    ttl: float = 86400.0  # seconds a record lives after its claim
    max_stored_body: int = 1024 * 1024  # bytes of a response body kept for replay
    max_entries: int | None = None  # records kept, the oldest claims go first; None: DEFAULT_MAX_ENTRIES
    on_unavailable: OnUnavailable = OnUnavailable.FORWARD


# On disk (SQLite) and in Redis a day of a busy bot's jobs fits; in RAM a small cap keeps the
# memory store near 5 MiB.
DEFAULT_MAX_ENTRIES = {
    LedgerBackend.SQLITE: 100_000,
    LedgerBackend.REDIS: 100_000,
    LedgerBackend.MEMORY: MEMORY_MAX_ENTRIES,
}


def state_dir(
    environ: Mapping[str, str], *, default: Path = DEFAULT_STATE_DIR, tmp: Path | None = None
) -> Path:
    if environ.get("SIDECAR_STATE_DIR"):
        return Path(environ["SIDECAR_STATE_DIR"])
    if default.is_dir() and os.access(default, os.W_OK | os.X_OK):
        return default
    return (tmp or Path(tempfile.gettempdir())) / f"sidecar-{os.getuid()}"


def ledger_path(settings: LedgerSettings, environ: Mapping[str, str]) -> Path:
    return Path(settings.path) if settings.path else state_dir(environ) / LEDGER_FILE


def instance_id_from(environ: Mapping[str, str]) -> str:
    """``SIDECAR_INSTANCE_ID``, else ``HOSTNAME`` (the pod name in Kubernetes), else the host name.

    It must stay the same across restarts of one sidecar (so ``adopt_orphans`` finds the claims of
    its predecessor) and differ between sidecars sharing a Redis.
    """
    return environ.get("SIDECAR_INSTANCE_ID") or environ.get("HOSTNAME") or socket.gethostname()


def open_store(
    settings: LedgerSettings,
    *,
    instance_id: str,
    environ: Mapping[str, str],
    clock: Callable[[], float] = time.time,
    observer: StoreObserver = NULL_OBSERVER,
) -> LedgerStore:
    """The configured store, not started yet (``await store.start()`` in the app's cleanup context)."""
    ttl = settings.ttl
    cap = settings.max_entries or DEFAULT_MAX_ENTRIES[settings.backend]
    if settings.backend is LedgerBackend.MEMORY:
        return MemoryStore(
            instance_id=instance_id, ttl=ttl, max_entries=cap, clock=clock, observer=observer
        )
    if settings.backend is LedgerBackend.REDIS:
        if not settings.url:
            raise ValueError("ledger.url: required when ledger.backend is redis")
        return RedisStore(
            settings.url, prefix=settings.prefix, instance_id=instance_id, ttl=ttl, max_entries=cap,
            clock=clock, observer=observer,
        )
    return SqliteStore(
        ledger_path(settings, environ), instance_id=instance_id, ttl=ttl, max_entries=cap, clock=clock,
        observer=observer,
    )
