"""The ledger's decisions, pure: fingerprints, key checks, what a provider's status means, repeats.

The fingerprint is SHA-256 over one canonical byte string, so that no two different requests can
share it by moving bytes between fields::

    b"sidecar-ledger-fingerprint/1\\n"
    u64be(len(method)) method      method upper-cased, ASCII
    u64be(len(path))   path        the path exactly as received (UTF-8, no normalising)
    u64be(len(query))  query       the raw query string without "?" (UTF-8), "" when absent
    body                           every body byte, to the end

Every field but the last carries its length, and the body runs to the end, so the encoding is
injective; the body can be hashed while it streams (``Fingerprinter``).
"""

from __future__ import annotations

import enum
import hashlib

from .records import LedgerRecord, RecordState

__all__ = [
    "FINGERPRINT_TAG",
    "MAX_KEY_LENGTH",
    "WINDOW_SCOPE_SUFFIX",
    "Fingerprinter",
    "InvalidIdempotencyKey",
    "Outcome",
    "Repeat",
    "classify_repeat",
    "fingerprint",
    "fingerprint_prefix",
    "in_flight_is_stale",
    "settle",
    "validate_idempotency_key",
    "window_scope",
]

FINGERPRINT_TAG = b"sidecar-ledger-fingerprint/1\n"
MAX_KEY_LENGTH = 255
# Keyless repeats are recorded under "<provider>#window" with the fingerprint as key: provider names
# can't hold "#", so these records never meet a client's Idempotency-Key, whatever it is.
WINDOW_SCOPE_SUFFIX = "#window"


class InvalidIdempotencyKey(ValueError):
    """The ``Idempotency-Key`` header is not 1 to 255 printable ASCII characters (400 bad_request)."""


def validate_idempotency_key(value: str) -> str:
    """Return the key unchanged, or raise ``InvalidIdempotencyKey`` saying what is wrong."""
    if not value:
        raise InvalidIdempotencyKey("Idempotency-Key must not be empty")
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters, got {len(value)}"
        )
    bad = next((c for c in value if not " " <= c <= "~"), None)
    if bad is not None:
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be printable ASCII (0x20-0x7E), got character U+{ord(bad):04X}"
        )
    return value


def _field(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")  # total on str, and still one-to-one
    return len(raw).to_bytes(8, "big") + raw


def fingerprint_prefix(method: str, path: str, query: str) -> bytes:
    """The canonical bytes before the body (see the module docstring)."""
    return FINGERPRINT_TAG + _field(method.upper()) + _field(path) + _field(query)


class Fingerprinter:
    """Hash a request whose body arrives in chunks: ``update`` each, then ``hexdigest``."""

    def __init__(self, method: str, path: str, query: str) -> None:
        self._hash = hashlib.sha256(fingerprint_prefix(method, path, query))

    def update(self, chunk: bytes) -> None:
        self._hash.update(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    """SHA-256 hex of the canonical encoding of one request."""
    hasher = Fingerprinter(method, path, query)
    hasher.update(body)
    return hasher.hexdigest()


def window_scope(provider: str) -> str:
    """The store's provider for keyless repeat records (key: the fingerprint, ttl: the window)."""
    return provider + WINDOW_SCOPE_SUFFIX


class Outcome(enum.Enum):
    """What to do with a claim once the attempt is over."""

    DONE = "done"  # the provider settled the job: store its answer
    RELEASE = "release"  # no job was taken: drop the claim, the key is free
    UNKNOWN = "unknown"  # a job may exist: mark the record unknown


_NOT_NOW = frozenset({429, 503})
_UNSETTLED_4XX = frozenset({408, 409, 425, 429})


def settle(status: int | None, *, request_sent: bool) -> Outcome:
    """Decide from the provider's status (None: no response head came back).

    2xx and 4xx but 408/409/425/429 settle the job. 429 and 503 say "not now": nothing was taken.
    Any other status (408, 409, 425, 5xx, and anything else) may hide a created job. Without a
    status, it all turns on whether any byte of the request went out.
    """
    if status is None:
        return Outcome.UNKNOWN if request_sent else Outcome.RELEASE
    if status in _NOT_NOW:
        return Outcome.RELEASE
    if 200 <= status < 300 or (400 <= status < 500 and status not in _UNSETTLED_4XX):
        return Outcome.DONE
    return Outcome.UNKNOWN


class Repeat(enum.Enum):
    """What a request meets when its key is already held."""

    REUSED = "reused"  # same key, another request: 422 idempotency_key_reused
    REPLAY = "replay"  # the stored answer, byte for byte
    REPLAY_UNAVAILABLE = "replay_unavailable"  # settled, but the body was over the limit: 409
    IN_FLIGHT = "in_flight"  # wait for the first (coalesce), else 409 idempotency_in_flight
    UNKNOWN = "unknown"  # reconcile if the provider can be asked, else 409 outcome_unknown


def classify_repeat(record: LedgerRecord, fingerprint: str) -> Repeat:
    if record.fingerprint != fingerprint:
        return Repeat.REUSED
    if record.state is RecordState.IN_FLIGHT:
        return Repeat.IN_FLIGHT
    if record.state is RecordState.UNKNOWN:
        return Repeat.UNKNOWN
    response = record.response
    if response is None or response.body_too_large or response.body is None:
        return Repeat.REPLAY_UNAVAILABLE
    return Repeat.REPLAY


def in_flight_is_stale(record: LedgerRecord, now: float, max_in_flight: float) -> bool:
    """An ``in_flight`` record older than any request can last: its owner died or lost the reply.

    The owner would have settled it within its ``timeouts.total``; past that (plus a margin chosen by
    the caller) the outcome is unknown, and ``mark_unknown(record.claim_id)`` says so. This covers a
    pod that died with claims on a shared Redis, which no ``adopt_orphans`` under its id will meet.
    """
    return record.state is RecordState.IN_FLIGHT and now - record.claimed_at > max_in_flight
