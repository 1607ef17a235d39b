"""The ledger's values: one record per (provider, key), and the answers the stores give back.

Times are wall-clock epoch seconds from the store's injected clock: records are shared between
processes (a file, a Redis), where a monotonic clock means nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .errors import InvalidName

__all__ = [
    "MAX_NAME_LENGTH",
    "Claim",
    "LedgerRecord",
    "RecordState",
    "StoreHealth",
    "StoredResponse",
    "check_name",
]

MAX_NAME_LENGTH = 255


class RecordState(enum.Enum):
    """Where a paid job stands in the ledger."""

    IN_FLIGHT = "in_flight"  # claimed, the request is (about to be) on its way
    DONE = "done"  # the provider's answer settled it; the answer is stored
    UNKNOWN = "unknown"  # the request went out but no settling answer came back


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The provider's answer as it will be replayed: ``body`` is None when it was over the limit."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    body_too_large: bool = False


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One claimed key. ``response`` is set only for ``DONE`` records."""

    provider: str
    key: str
    fingerprint: str  # SHA-256 hex of the request (see ``ledger.fingerprint``)
    state: RecordState
    owner: str  # instance id of the sidecar that claimed it
    claim_id: str  # unique per claim: the token that ``complete``/``mark_unknown``/``release`` check
    claimed_at: float
    sent_at: float | None  # when the request was sent, once the owner reported it
    expires_at: float
    response: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to ``claim``: ``claimed`` with the new record, or the record that already holds the key."""

    claimed: bool
    record: LedgerRecord


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """A store's health for ``/health/detailed``; ``entries`` may count records not yet purged."""

    backend: str
    ok: bool
    entries: int | None
    evictions: int  # records this store instance dropped to stay under ``max_entries``
    error: str | None = None


def check_name(what: str, value: str) -> str:
    """Refuse a provider or key outside 1..255 printable ASCII (0x20-0x7E); return it unchanged."""
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise InvalidName(f"{what} must be 1 to {MAX_NAME_LENGTH} characters, got {len(value)}")
    if not (value.isascii() and value.isprintable()):
        raise InvalidName(f"{what} must be printable ASCII (0x20-0x7E), got {value!r}")
    return value
