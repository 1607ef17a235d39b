"""What only the in-process ledger has: a byte budget for stored bodies, and bounded bookkeeping."""

from __future__ import annotations

from sidecar.state import MemoryStore, StoredResponse
from tests.support.fakes import FakeClock
from tests.support.ledger_backends import EPOCH

FP = "f" * 64


async def test_stored_bodies_stay_within_the_byte_budget() -> None:
    """Bodies over max_bytes in total evict the oldest records; the byte count stays exact."""
    store = MemoryStore(instance_id="pod-a", clock=FakeClock(EPOCH), max_bytes=1000)
    for i in range(5):
        claim = await store.claim("replicate", f"k{i}", FP)
        answer = StoredResponse(200, (), b"x" * 300)
        await store.complete("replicate", f"k{i}", claim.record.claim_id, answer)
    assert store.stored_bytes == 900
    kept = [k for k in ("k0", "k1", "k2", "k3", "k4") if await store.get("replicate", k)]
    assert kept == ["k2", "k3", "k4"]
    assert store.evictions == 2
    await store.release("replicate", "k2")
    assert store.stored_bytes == 600


async def test_churn_does_not_grow_the_expiry_index() -> None:
    """Ten thousand claim/release cycles on a few keys leave the expiry heap small."""
    store = MemoryStore(instance_id="pod-a", clock=FakeClock(EPOCH), max_entries=10)
    for i in range(10_000):
        claim = await store.claim("replicate", f"k{i % 5}", FP)
        await store.release("replicate", f"k{i % 5}", claim_id=claim.record.claim_id)
    await store.claim("replicate", "last", FP)
    assert len(store._expiry) <= 2 * 1 + 64
    assert (await store.health()).entries == 1
