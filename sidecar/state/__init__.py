"""The sidecar's shared state: the job ledger's stores (memory, SQLite, Redis) and its pure core.

``LedgerStore`` is the seam; ``open_store`` builds the configured backend. The decisions about
requests (fingerprints, key checks, what a status means, Replicate reconciliation) live beside it
and do no I/O of their own.
"""

from .capture import BodyCapture
from .errors import InvalidName, StoreError, StoreUnavailable
from .ledger import (
    Fingerprinter,
    InvalidIdempotencyKey,
    Outcome,
    Repeat,
    classify_repeat,
    fingerprint,
    in_flight_is_stale,
    settle,
    validate_idempotency_key,
    window_scope,
)
from .memory_store import MemoryStore
from .observe import NULL_OBSERVER, OperationEvent, StoreObserver
from .reconcile import (
    ReconcileOutcome,
    Reconciliation,
    ReplicateJob,
    ReplicateMatcher,
    reconcile_replicate,
    replayable_job,
    replicate_job,
)
from .records import Claim, LedgerRecord, RecordState, StoredResponse, StoreHealth
from .redis_store import RedisStore
from .settings import LedgerBackend, LedgerSettings, OnUnavailable, instance_id_from, ledger_path, open_store
from .sqlite_store import SqliteStore
from .store import LedgerStore

__all__ = [
    "NULL_OBSERVER",
    "BodyCapture",
    "Claim",
    "Fingerprinter",
    "InvalidIdempotencyKey",
    "InvalidName",
    "LedgerBackend",
    "LedgerRecord",
    "LedgerSettings",
    "LedgerStore",
    "MemoryStore",
    "OnUnavailable",
    "OperationEvent",
    "Outcome",
    "ReconcileOutcome",
    "Reconciliation",
    "RecordState",
    "RedisStore",
    "Repeat",
    "ReplicateJob",
    "ReplicateMatcher",
    "SqliteStore",
    "StoreError",
    "StoreHealth",
    "StoreObserver",
    "StoreUnavailable",
    "StoredResponse",
    "classify_repeat",
    "fingerprint",
    "in_flight_is_stale",
    "instance_id_from",
    "ledger_path",
    "open_store",
    "reconcile_replicate",
    "replayable_job",
    "replicate_job",
    "settle",
    "validate_idempotency_key",
    "window_scope",
]
