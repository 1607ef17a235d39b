"""The seam between the ledger and its storage: every backend implements ``LedgerStore`` identically.

A store belongs to one sidecar process (``instance_id``) and holds records keyed by (provider, key).
Claims are atomic across every process sharing the backend. Records carry a ``claim_id`` that the
settling calls must present, so a late or repeated call can never settle somebody else's claim.
Every operation raises ``StoreUnavailable`` when the backend can't answer in bounded time, and
``InvalidName`` for a provider or key outside 1..255 printable ASCII characters.
"""

from __future__ import annotations

import builtins
from typing import Protocol

from .records import Claim, LedgerRecord, StoredResponse, StoreHealth

__all__ = ["LedgerStore"]


class LedgerStore(Protocol):
    @property
    def backend(self) -> str:
        """``memory``, ``sqlite`` or ``redis``: the label for metrics and health."""
        ...

    @property
    def instance_id(self) -> str: ...

    async def start(self) -> None:
        """Open connections, create the schema, start background purging. Idempotent."""
        ...

    async def close(self) -> None:
        """Stop background work and release connections. Idempotent."""
        ...

    async def claim(
        self, provider: str, key: str, fingerprint: str, *, ttl: float | None = None
    ) -> Claim:
        """Create an ``in_flight`` record owned by this instance, unless a live one exists.

        ``ttl`` (seconds) overrides the store's default lifetime for this record (a keyless
        repeat window, say). The record expires ``ttl`` after the claim, whatever its state.
        """
        ...

    async def get(self, provider: str, key: str) -> LedgerRecord | None:
        """The live record, with its stored body; None when absent or expired."""
        ...

    async def complete(
        self,
        provider: str,
        key: str,
        claim_id: str,
        response: StoredResponse,
        *,
        sent_at: float | None = None,
    ) -> bool:
        """``in_flight``/``unknown`` -> ``done`` with the answer; False if ``claim_id`` doesn't hold it."""
        ...

    async def mark_unknown(
        self, provider: str, key: str, claim_id: str, *, sent_at: float | None = None
    ) -> bool:
        """``in_flight`` -> ``unknown``; False if ``claim_id`` doesn't hold an ``in_flight`` record."""
        ...

    async def release(self, provider: str, key: str, *, claim_id: str | None = None) -> bool:
        """Forget the key. With ``claim_id`` (a claim dropped): only that ``in_flight``/``unknown``
        claim. Without (an operator's release): whatever it holds. True when a record went."""
        ...

    async def list(self, provider: str | None = None, limit: int = 100) -> builtins.list[LedgerRecord]:
        """Live records, newest claim first, at most ``limit``; stored bodies are left out (None)."""
        ...

    async def adopt_orphans(self, instance_id: str) -> int:
        """Turn the ``in_flight`` records a previous process with this id left into ``unknown``."""
        ...

    async def wait(self, provider: str, key: str, max_wait: float) -> LedgerRecord | None:
        """Wait until the record leaves ``in_flight``; see ``waiting.wait_settled`` for the result."""
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the backend answers."""
        ...

    async def health(self) -> StoreHealth:
        """Never raises: an unreachable backend is ``ok=False`` with the error."""
        ...
