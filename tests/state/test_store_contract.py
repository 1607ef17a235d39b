"""One suite for every ledger backend (memory, sqlite, redis), so no backend can drift from the others."""

from __future__ import annotations

import asyncio
import string

import pytest

from sidecar.state import (
    InvalidName,
    LedgerRecord,
    LedgerStore,
    RecordState,
    StoredResponse,
)
from tests.support.ledger_backends import EPOCH, Backend

FP = "a" * 64
OTHER_FP = "b" * 64
ANSWER = StoredResponse(
    201,
    (("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")),
    bytes(range(256)) + b'{"id": "p1"}',
)


async def claimed(
    store: LedgerStore, key: str = "k1", provider: str = "replicate", **kw: float
) -> LedgerRecord:
    """Claim a key that must be free; the new record."""
    claim = await store.claim(provider, key, FP, **kw)
    assert claim.claimed
    return claim.record


async def test_claim_creates_an_in_flight_record_owned_by_the_instance(backend: Backend) -> None:
    """A first claim wins and stores an in_flight record stamped with the instance, clock and ttl."""
    store = await backend.store("pod-a", ttl=3600)
    record = await claimed(store)
    assert (record.provider, record.key, record.fingerprint) == ("replicate", "k1", FP)
    assert record.state is RecordState.IN_FLIGHT
    assert record.owner == "pod-a"
    assert (record.claimed_at, record.expires_at, record.sent_at) == (EPOCH, EPOCH + 3600, None)
    assert record.response is None
    assert await store.get("replicate", "k1") == record


async def test_second_claim_returns_the_existing_record(backend: Backend) -> None:
    """A claim on a held key does not win and gets the holder's record (its fingerprint included)."""
    store = await backend.store()
    first = await claimed(store)
    again = await store.claim("replicate", "k1", OTHER_FP)
    assert not again.claimed
    assert again.record == first


async def test_concurrent_claims_have_exactly_one_winner(backend: Backend) -> None:
    """Fifty simultaneous claims (over several stores when the backend is shared): one wins."""
    stores = [await backend.store(f"pod-{i}") for i in range(4 if backend.shared else 1)]
    claims = await asyncio.gather(
        *(stores[i % len(stores)].claim("replicate", "race", FP) for i in range(50))
    )
    winners = [c for c in claims if c.claimed]
    assert len(winners) == 1
    assert {c.record.claim_id for c in claims} == {winners[0].record.claim_id}


async def test_racing_stores_agree_on_one_winner_per_key(backend: Backend) -> None:
    """Eight stores claim the same 25 keys at once: one winner per key, no errors, all agree on it."""
    stores = [await backend.store(f"pod-{i}") for i in range(8 if backend.shared else 1)]
    keys = [f"job-{k}" for k in range(25)]
    claims = await asyncio.gather(*(s.claim("replicate", k, FP) for k in keys for s in stores))
    for k in keys:
        mine = [c for c in claims if c.record.key == k]
        assert len(mine) == len(stores)
        assert sum(c.claimed for c in mine) == 1
        assert len({c.record.claim_id for c in mine}) == 1


async def test_complete_stores_the_answer_byte_for_byte(backend: Backend) -> None:
    """The owner's complete turns the record done with status, repeated headers and binary body intact."""
    store = await backend.store()
    record = await claimed(store)
    assert await store.complete("replicate", "k1", record.claim_id, ANSWER, sent_at=EPOCH + 0.5)
    done = await store.get("replicate", "k1")
    assert done is not None
    assert done.state is RecordState.DONE
    assert done.response == ANSWER
    assert done.sent_at == EPOCH + 0.5
    assert done.claim_id == record.claim_id


async def test_complete_needs_the_claim_id_and_an_open_record(backend: Backend) -> None:
    """Another claim id can't settle a record, and a done record can't be settled again."""
    store = await backend.store()
    record = await claimed(store)
    assert not await store.complete("replicate", "k1", "not-the-claim", ANSWER)
    assert (await store.get("replicate", "k1")) == record
    assert await store.complete("replicate", "k1", record.claim_id, ANSWER)
    other = StoredResponse(500, (), b"late")
    assert not await store.complete("replicate", "k1", record.claim_id, other)
    assert not await store.mark_unknown("replicate", "k1", record.claim_id)
    done = await store.get("replicate", "k1")
    assert done is not None and done.response == ANSWER
    assert not await store.complete("replicate", "absent", record.claim_id, ANSWER)


async def test_unknown_outcome_can_be_settled_later(backend: Backend) -> None:
    """in_flight -> unknown (once) keeps sent_at; complete then settles the unknown record."""
    store = await backend.store()
    record = await claimed(store)
    assert await store.mark_unknown("replicate", "k1", record.claim_id, sent_at=EPOCH + 1)
    assert not await store.mark_unknown("replicate", "k1", record.claim_id)
    unknown = await store.get("replicate", "k1")
    assert unknown is not None
    assert (unknown.state, unknown.sent_at) == (RecordState.UNKNOWN, EPOCH + 1)
    assert await store.complete("replicate", "k1", record.claim_id, ANSWER)
    done = await store.get("replicate", "k1")
    assert done is not None
    assert (done.state, done.sent_at) == (RecordState.DONE, EPOCH + 1)


async def test_a_body_over_the_limit_is_remembered_as_such(backend: Backend) -> None:
    """A response stored without its body keeps the flag, so a replay can say why it can't."""
    store = await backend.store()
    record = await claimed(store)
    big = StoredResponse(200, (("Content-Type", "image/png"),), None, body_too_large=True)
    assert await store.complete("replicate", "k1", record.claim_id, big)
    done = await store.get("replicate", "k1")
    assert done is not None and done.response == big


async def test_an_empty_body_is_not_a_missing_body(backend: Backend) -> None:
    """b"" round-trips as b"", not as None."""
    store = await backend.store()
    record = await claimed(store)
    empty = StoredResponse(204, (), b"")
    assert await store.complete("replicate", "k1", record.claim_id, empty)
    done = await store.get("replicate", "k1")
    assert done is not None and done.response == empty


async def test_release_by_claim_id_drops_only_an_open_claim(backend: Backend) -> None:
    """A claim drop needs the claim id and never removes a settled answer; the key is free after."""
    store = await backend.store()
    record = await claimed(store)
    assert not await store.release("replicate", "k1", claim_id="someone-else")
    assert await store.release("replicate", "k1", claim_id=record.claim_id)
    assert await store.get("replicate", "k1") is None
    again = await claimed(store)
    assert again.claim_id != record.claim_id
    assert await store.complete("replicate", "k1", again.claim_id, ANSWER)
    assert not await store.release("replicate", "k1", claim_id=again.claim_id)
    assert await store.get("replicate", "k1") is not None


async def test_operator_release_forgets_any_record(backend: Backend) -> None:
    """An operator's release (no claim id) removes a done record too; releasing nothing says False."""
    store = await backend.store()
    record = await claimed(store)
    await store.complete("replicate", "k1", record.claim_id, ANSWER)
    assert await store.release("replicate", "k1")
    assert await store.get("replicate", "k1") is None
    assert not await store.release("replicate", "k1")
    assert (await store.claim("replicate", "k1", OTHER_FP)).claimed


async def test_list_is_newest_first_filtered_limited_and_without_bodies(backend: Backend) -> None:
    """list returns live records newest claim first, by provider, at most limit, bodies left out."""
    store = await backend.store()
    for i in range(5):
        await claimed(store, f"r{i}", "replicate")
        await claimed(store, f"b{i}", "bfl")
        backend.clock.advance(1)
    done = await store.get("replicate", "r4")
    assert done is not None
    await store.complete("replicate", "r4", done.claim_id, ANSWER)
    listed = await store.list("replicate", limit=3)
    assert [r.key for r in listed] == ["r4", "r3", "r2"]
    assert listed[0].response is not None
    assert listed[0].response.status == 201
    assert listed[0].response.body is None
    assert listed[0].response.headers == ANSWER.headers
    everything = await store.list(limit=100)
    assert len(everything) == 10
    assert {r.provider for r in everything} == {"replicate", "bfl"}
    assert await store.list("nobody") == []


async def test_records_expire_on_the_injected_clock(backend: Backend) -> None:
    """A record lives exactly ttl after its claim: then get, list and settling calls don't see it."""
    store = await backend.store(ttl=10)
    record = await claimed(store)
    backend.clock.advance(9.9)
    assert await store.get("replicate", "k1") == record
    backend.clock.advance(0.1)
    assert await store.get("replicate", "k1") is None
    assert await store.list() == []
    assert not await store.complete("replicate", "k1", record.claim_id, ANSWER)
    assert not await store.mark_unknown("replicate", "k1", record.claim_id)
    assert await store.adopt_orphans("pod-a") == 0
    fresh = await store.claim("replicate", "k1", OTHER_FP)
    assert fresh.claimed
    assert fresh.record.expires_at == backend.clock() + 10


async def test_a_claim_may_carry_its_own_lifetime(backend: Backend) -> None:
    """claim(ttl=...) overrides the store's ttl for that record only (keyless repeat windows)."""
    store = await backend.store(ttl=3600)
    short = await claimed(store, "window", ttl=10)
    long = await claimed(store, "keyed")
    assert short.expires_at == EPOCH + 10
    backend.clock.advance(11)
    assert await store.get("replicate", "window") is None
    assert await store.get("replicate", "keyed") == long


async def test_cap_evicts_the_oldest_claims_and_counts_them(backend: Backend) -> None:
    """Over max_entries the oldest claims go first; the newest stay; evictions are counted."""
    store = await backend.store(max_entries=5)
    for i in range(8):
        await claimed(store, f"k{i}")
    present = [i for i in range(8) if await store.get("replicate", f"k{i}") is not None]
    assert present == [3, 4, 5, 6, 7]
    health = await store.health()
    assert (health.ok, health.entries, health.evictions) == (True, 5, 3)


async def test_expired_records_make_room_before_live_ones_are_evicted(backend: Backend) -> None:
    """At the cap, expired records are purged first, so no live record is evicted for nothing."""
    store = await backend.store(max_entries=3)
    await claimed(store, "old", ttl=1)
    await claimed(store, "b")
    await claimed(store, "c")
    backend.clock.advance(2)
    await claimed(store, "d")
    assert [await store.get("replicate", k) is not None for k in ("b", "c", "d")] == [True] * 3
    assert (await store.health()).evictions == 0


async def test_thousands_of_distinct_keys_stay_bounded(backend: Backend) -> None:
    """2000 distinct keys against max_entries=100 leave 100 records and 1900 evictions."""
    store = await backend.store(max_entries=100)
    for i in range(2000):
        await store.claim("replicate", f"key-{i}", FP)
    health = await store.health()
    assert (health.entries, health.evictions) == (100, 1900)
    assert len(await store.list(limit=1000)) == 100


HOSTILE = [
    ":", "/", "%", "%2F", "a/b", "a%2Fb", "*", "?", "[x]", "{tag}", "sidecar:r:x", "' OR 1=1; --",
    '"quoted"', "back\\slash", " ", " leading and trailing ", "~!@#$^&()_+=`|<>,.", "x" * 255,
    string.printable.strip(" \t\n\r\x0b\x0c")[:255],
]


@pytest.mark.parametrize("key", HOSTILE)
async def test_hostile_printable_keys_round_trip_exactly(backend: Backend, key: str) -> None:
    """Any 1..255 printable ASCII key is stored, found, listed and released as itself, and no other."""
    store = await backend.store()
    neighbour = key[:-1] + ("#" if key[-1] != "#" else "!")  # one character apart: must stay apart
    record = await claimed(store, key, provider="p")
    await claimed(store, neighbour, provider="p")
    assert await store.complete("p", key, record.claim_id, ANSWER)
    got = await store.get("p", key)
    assert got is not None and got.key == key and got.response == ANSWER
    assert key in [r.key for r in await store.list("p")]
    assert await store.release("p", key)
    assert await store.get("p", key) is None
    assert await store.get("p", neighbour) is not None


async def test_provider_and_key_never_run_into_each_other(backend: Backend) -> None:
    """("a/b", "c") and ("a", "b/c") are two records, whatever separator a backend uses inside."""
    store = await backend.store()
    one = await claimed(store, "c", provider="a/b")
    two = await claimed(store, "b/c", provider="a")
    assert one.claim_id != two.claim_id
    assert (await store.get("a/b", "c")) == one
    assert (await store.get("a", "b/c")) == two


@pytest.mark.parametrize(
    "key",
    ["", "x" * 256, "new\nline", "nul\x00", "tab\there", "del\x7f", "ключ", "café", "emoji\U0001f600"],
)
async def test_keys_outside_printable_ascii_are_refused(backend: Backend, key: str) -> None:
    """Refused before reaching storage (empty, over 255, control, non-ASCII), and not a ledger error."""
    store = await backend.store()
    for call in (
        store.claim("replicate", key, FP),
        store.get("replicate", key),
        store.release("replicate", key),
        store.claim(key or "\n", "k", FP),
    ):
        with pytest.raises(InvalidName):
            await call
    assert await store.list() == []
    assert [e for e in backend.observer.events if e.error] == []  # a client's junk, not a backend fault


async def test_adopt_orphans_turns_the_instances_in_flight_claims_unknown(backend: Backend) -> None:
    """Only in_flight records of that instance id become unknown; done and unknown ones stay."""
    store = await backend.store("pod-a")
    await claimed(store, "inflight-1")
    await claimed(store, "inflight-2")
    done = await claimed(store, "done")
    await store.complete("replicate", "done", done.claim_id, ANSWER)
    unknown = await claimed(store, "unknown")
    await store.mark_unknown("replicate", "unknown", unknown.claim_id)
    assert await store.adopt_orphans("pod-b") == 0
    assert await store.adopt_orphans("pod-a") == 2
    states = {r.key: r.state for r in await store.list()}
    assert states == {
        "inflight-1": RecordState.UNKNOWN, "inflight-2": RecordState.UNKNOWN,
        "done": RecordState.DONE, "unknown": RecordState.UNKNOWN,
    }
    assert await store.adopt_orphans("pod-a") == 0


async def test_a_successor_adopts_what_its_predecessor_left(backend: Backend) -> None:
    """A store with the same instance id (a restarted sidecar) adopts the old claims, not others'."""
    if not backend.shared:
        pytest.skip("memory records live and die with their process: there is no successor to adopt them")
    old = await backend.store("pod-a")
    neighbour = await backend.store("pod-b")
    mine = await claimed(old, "mine")
    theirs = await claimed(neighbour, "theirs")
    successor = await backend.store("pod-a")
    assert await successor.adopt_orphans("pod-a") == 1
    adopted = await successor.get("replicate", "mine")
    assert adopted is not None and adopted.state is RecordState.UNKNOWN
    assert (await successor.get("replicate", "theirs")) == theirs
    assert mine.owner == "pod-a"


async def test_waiters_get_the_settled_record_when_it_completes(backend: Backend) -> None:
    """Twenty waiters coalesce on one in-flight claim and all get the done record when it completes."""
    store = await backend.store()
    record = await claimed(store)
    waiters = [asyncio.create_task(store.wait("replicate", "k1", max_wait=30)) for _ in range(20)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    await store.complete("replicate", "k1", record.claim_id, ANSWER)
    results = await asyncio.wait_for(asyncio.gather(*waiters), 5)
    assert all(r is not None and r.state is RecordState.DONE and r.response == ANSWER for r in results)


@pytest.mark.parametrize("settle", ["complete", "mark_unknown", "release", "adopt_orphans"])
async def test_waiters_in_the_process_are_woken_not_polled(backend: Backend, settle: str) -> None:
    """With re-reads a minute apart, a waiter still returns at once when this process settles the key."""
    store = await backend.store(poll=(60.0, 60.0))
    record = await claimed(store)
    waiter = asyncio.create_task(store.wait("replicate", "k1", max_wait=120))
    await asyncio.sleep(0.05)  # the waiter has read in_flight and sleeps on its bell
    assert not waiter.done()
    if settle == "complete":
        await store.complete("replicate", "k1", record.claim_id, ANSWER)
    elif settle == "mark_unknown":
        await store.mark_unknown("replicate", "k1", record.claim_id)
    elif settle == "release":
        await store.release("replicate", "k1", claim_id=record.claim_id)
    else:
        await store.adopt_orphans("pod-a")
    result = await asyncio.wait_for(waiter, 5)
    assert (result is None) == (settle == "release")


async def test_wait_ends_with_none_when_the_claim_is_dropped(backend: Backend) -> None:
    """A released claim wakes its waiters with None: the key is free for them."""
    store = await backend.store()
    record = await claimed(store)
    waiter = asyncio.create_task(store.wait("replicate", "k1", max_wait=30))
    await asyncio.sleep(0)
    await store.release("replicate", "k1", claim_id=record.claim_id)
    assert await asyncio.wait_for(waiter, 5) is None


async def test_wait_gives_up_after_max_wait_with_the_in_flight_record(backend: Backend) -> None:
    """Nobody settles it: wait returns the still in_flight record once max_wait has passed."""
    store = await backend.store()
    record = await claimed(store)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await store.wait("replicate", "k1", max_wait=0.1)
    assert result == record
    assert 0.1 <= loop.time() - started < 2.0


async def test_wait_returns_at_once_for_settled_or_absent_keys(backend: Backend) -> None:
    """No waiting on a key that is free or already settled."""
    store = await backend.store()
    assert await store.wait("replicate", "nothing", max_wait=30) is None
    record = await claimed(store)
    await store.mark_unknown("replicate", "k1", record.claim_id)
    unknown = await asyncio.wait_for(store.wait("replicate", "k1", max_wait=30), 5)
    assert unknown is not None and unknown.state is RecordState.UNKNOWN


async def test_a_waiter_sees_another_instance_settle_the_claim(backend: Backend) -> None:
    """Across stores (other processes) the waiter finds the settled record by polling."""
    if not backend.shared:
        pytest.skip("memory records are not shared between stores")
    first = await backend.store("pod-a")
    second = await backend.store("pod-b")
    record = await claimed(first)
    waiter = asyncio.create_task(second.wait("replicate", "k1", max_wait=30))
    await asyncio.sleep(0.05)
    await first.complete("replicate", "k1", record.claim_id, ANSWER)
    result = await asyncio.wait_for(waiter, 5)
    assert result is not None and result.response == ANSWER


async def test_ping_health_and_observed_operations(backend: Backend) -> None:
    """ping answers, health is ok, and every operation is reported with its backend and name."""
    store = await backend.store()
    await store.ping()
    record = await claimed(store)
    await store.get("replicate", "k1")
    await store.complete("replicate", "k1", record.claim_id, ANSWER)
    health = await store.health()
    assert (health.backend, health.ok, health.entries, health.error) == (backend.name, True, 1, None)
    ops = [(e.backend, e.op, e.error) for e in backend.observer.events if e.op != "open"]
    assert ops[:4] == [(backend.name, op, None) for op in ("ping", "claim", "get", "complete")]
    assert all(e.duration >= 0 for e in backend.observer.events)
