"""The fleet limiter on a real redis-server: separate sidecars (clients, limiters) share one budget."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs

from sidecar.fleet import limiter_scripts as lua
from sidecar.fleet.keys import FleetKeys
from sidecar.fleet.limiter import RedisBackend, fleet_limiter
from sidecar.limits.api import Completion, FleetUnavailable, RateLimited, Slot
from sidecar.limits.queue import QueuedLimiter
from sidecar.policy.admission import PROVIDER_SCOPE, RateLimitConfig, Reason, Scope
from sidecar.policy.gcra import MICROS
from sidecar.state.resp import RespClient
from tests.fleet.conftest import Sidecars
from tests.support.polling import eventually
from tests.support.rate_windows import assert_window_bound
from tests.support.redis_server import RedisServer

Clients = Callable[[], RespClient]  # a factory of separate clients, as separate sidecars have

P = "replicate"


def scope(name: str = PROVIDER_SCOPE, **limit: float) -> Scope:
    return Scope.of(name, RateLimitConfig(**limit))  # type: ignore[arg-type]


async def test_sidecars_sharing_a_rate_never_exceed_it_together(sidecars: Sidecars) -> None:
    """Three sidecars hammering one 1200/min budget, burst 3, stay within it in every window."""
    rpm, burst = 1200.0, 3
    budget = [scope(requests_per_minute=rpm, burst=burst)]
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + 1.0
    starts: list[int] = []

    async def worker(limiter: QueuedLimiter, max_wait: float) -> None:
        while loop.time() < stop_at:
            try:
                slot = await limiter.acquire(P, budget, max_wait=max_wait)
            except RateLimited as refused:
                assert refused.reason is Reason.RATE
                await asyncio.sleep(min(refused.retry_after, 0.01))
                continue
            starts.append(slot.booked_start)
            await slot.release(Completion.OK)

    fleet = sidecars(3)
    await asyncio.gather(*(worker(limiter, wait) for limiter in fleet for wait in (0.0, 0.0, 0.2)))
    assert_window_bound(starts, rpm, burst)
    assert len(starts) >= 15  # ~20 in the second, plus the burst: the budget was really used


async def test_sidecars_sharing_a_concurrency_never_run_more_calls_together(sidecars: Sidecars) -> None:
    """concurrency 3 across three sidecars of three callers each: never more than 3 in flight."""
    budget = [scope(concurrency=3)]
    live, peak, done = [0], [0], [0]

    async def worker(limiter: QueuedLimiter) -> None:
        for _ in range(4):
            async with await limiter.acquire(P, budget, max_wait=5) as slot:
                live[0] += 1
                peak[0] = max(peak[0], live[0])
                await asyncio.sleep(0.02)
                live[0] -= 1
                slot.complete(Completion.OK)
            done[0] += 1

    await asyncio.gather(*(worker(limiter) for limiter in sidecars(3) for _ in range(3)))
    assert peak[0] == 3
    assert done[0] == 36


async def test_a_dead_sidecars_slots_come_back_after_the_lease_time(sidecars: Sidecars) -> None:
    """Slots never given back (the pod was killed) are free again once their 0.5 s lease runs out."""
    budget = [scope(concurrency=3)]
    dead, alive = sidecars(2, lease_ttl=0.5)
    loop = asyncio.get_running_loop()
    kept = await alive.acquire(P, budget, max_wait=0)  # renewed all along: the lease set stays
    for _ in range(2):
        await dead.acquire(P, budget, max_wait=0)
    died_at = loop.time()
    await dead.aclose()  # no release, no renewal: as after SIGKILL
    with pytest.raises(RateLimited) as refused:
        await alive.acquire(P, budget, max_wait=0)
    assert refused.value.reason is Reason.CONCURRENCY
    slots = [await alive.acquire(P, budget, max_wait=3) for _ in range(2)]
    assert 0.4 <= loop.time() - died_at <= 1.0
    for slot in [kept, *slots]:
        await slot.release()


async def test_renewal_keeps_a_long_call_its_slot(sidecars: Sidecars) -> None:
    """A call running four lease times keeps its slot: the other sidecar is refused all along."""
    budget = [scope(concurrency=1)]
    holder, other = sidecars(2, lease_ttl=0.3)
    slot = await holder.acquire(P, budget, max_wait=0)
    for _ in range(6):
        await asyncio.sleep(0.2)
        with pytest.raises(RateLimited):
            await other.acquire(P, budget, max_wait=0)
    await slot.release()
    await (await other.acquire(P, budget, max_wait=0)).release()


async def test_a_release_wakes_a_waiter_of_another_sidecar(sidecars: Sidecars) -> None:
    """A caller waiting on one sidecar gets the slot soon after another sidecar gives it back."""
    budget = [scope(concurrency=1)]
    first, second = sidecars(2)
    held = await first.acquire(P, budget, max_wait=0)
    waiting = asyncio.ensure_future(second.acquire(P, budget, max_wait=3))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await held.release()
    slot = await asyncio.wait_for(waiting, 1.0)
    assert 0.2 <= slot.waited < 0.5
    await slot.release()


async def test_a_pause_set_by_one_sidecar_holds_them_all(sidecars: Sidecars) -> None:
    """One sidecar's pause refuses short waits everywhere and lets longer ones go when it ends."""
    setter, refused_one, waiter = sidecars(3)
    assert await setter.pause(P, 0.6) == pytest.approx(0.6, abs=0.01)
    assert 0.3 < await refused_one.paused_for(P) <= 0.6
    with pytest.raises(RateLimited) as refused:
        await refused_one.acquire(P, [scope()], max_wait=0.1)
    assert refused.value.reason is Reason.PROVIDER_PAUSE
    assert 0.3 < refused.value.retry_after <= 0.6
    slot = await waiter.acquire(P, [scope()], max_wait=2)
    assert 0.3 < slot.waited < 0.8
    await slot.release()
    assert await setter.pause(P, 5) == pytest.approx(5, abs=0.01)
    assert await waiter.pause(P, 1) == pytest.approx(5, abs=0.05)  # never shortened


async def test_a_concurrency_429_lowers_the_fleets_concurrency(sidecars: Sidecars) -> None:
    """One sidecar's concurrency 429 halves the limit that every sidecar then applies."""
    budget = [scope(concurrency=4)]
    one, other = sidecars(2)
    slots = [await one.acquire(P, budget, max_wait=0) for _ in range(4)]
    await slots[0].release(Completion.CONCURRENCY_LIMITED)
    backend = other.backend
    assert isinstance(backend, RedisBackend)
    assert await backend.lowered_limit(P) == 2
    await slots[1].release(Completion.CONCURRENCY_LIMITED)  # admitted before: not halved again
    assert await backend.lowered_limit(P) == 2
    with pytest.raises(RateLimited):
        await other.acquire(P, budget, max_wait=0)  # 2 still in flight
    await slots[2].release(Completion.ABANDONED)
    extra = await other.acquire(P, budget, max_wait=0)
    with pytest.raises(RateLimited):
        await other.acquire(P, budget, max_wait=0)
    await extra.release()
    await slots[3].release()


async def test_a_route_budget_is_shared_on_top_of_the_providers(sidecars: Sidecars) -> None:
    """A full route refuses its callers on every sidecar; other routes of the provider still go."""
    provider = scope(concurrency=10)
    create, other = [provider, scope("create", concurrency=1)], [provider, scope("get")]
    first, second = sidecars(2)
    held = await first.acquire(P, create, max_wait=0)
    with pytest.raises(RateLimited):
        await second.acquire(P, create, max_wait=0)
    await (await second.acquire(P, other, max_wait=0)).release()
    await held.release()


async def _until_it_works(limiter: QueuedLimiter, budget: list[Scope], within: float) -> Slot:
    return await eventually(lambda: limiter.acquire(P, budget, max_wait=0), timeout=within, interval=0.05,
                            retry_on=(FleetUnavailable,), what="a slot from the fleet limiter")


async def test_redis_down_fails_fast_and_up_again_works(
    sidecars: Sidecars, redis_server: RedisServer
) -> None:
    """Redis killed: every call, waiting ones included, fails fast and typed; restarted: it works."""
    budget = [scope(concurrency=1)]
    (limiter,) = sidecars(1)
    loop = asyncio.get_running_loop()
    held = await limiter.acquire(P, budget, max_wait=0)
    waiting = asyncio.ensure_future(limiter.acquire(P, budget, max_wait=30))
    await asyncio.sleep(0.1)
    redis_server.kill()
    with pytest.raises(FleetUnavailable):
        await asyncio.wait_for(waiting, 1.0)
    for call in (lambda: limiter.acquire(P, budget, max_wait=10), lambda: limiter.pause(P, 1)):
        started = loop.time()
        with pytest.raises(FleetUnavailable):
            await call()
        assert loop.time() - started < 0.6
    await held.release()  # the lease can't be given back: logged, left to expire
    await redis_server.start()
    slot = await _until_it_works(limiter, budget, within=3)
    await slot.release(Completion.OK)


async def test_successes_give_the_fleets_slots_back_one_by_one(
    sidecars: Sidecars, clients: Clients
) -> None:
    """After a halving, a success once the increase interval has passed adds one slot, up to the top."""
    budget = [scope(concurrency=4)]
    (limiter,) = sidecars(1)
    backend = limiter.backend
    assert isinstance(backend, RedisBackend)
    slots = [await limiter.acquire(P, budget, max_wait=0) for _ in range(4)]
    await slots[0].release(Completion.CONCURRENCY_LIMITED)
    for slot in slots[1:]:
        await slot.release(Completion.ABANDONED)
    key, admin = backend.keys.aimd(P), clients()

    async def age_the_last_change() -> None:  # as if the increase interval (5 s) had passed
        changed = int(await admin.hget(key, "changed_at"))
        await admin.execute("HSET", key, "changed_at", changed - 5 * MICROS)

    for expected in (3, None):
        await (await limiter.acquire(P, budget, max_wait=0)).release(Completion.OK)  # too soon
        assert await backend.lowered_limit(P) == (2 if expected == 3 else 3)
        await age_the_last_change()
        await (await limiter.acquire(P, budget, max_wait=0)).release(Completion.OK)
        assert await backend.lowered_limit(P) == expected


async def test_a_caller_giving_up_mid_decision_leaves_no_slot_behind(sidecars: Sidecars) -> None:
    """Cancelled while Redis decides: the slot granted to nobody is given back, not left to expire."""
    budget = [scope(concurrency=1)]
    quitter, other = sidecars(2)  # leases last 30 s: only an explicit release frees the slot soon
    for _ in range(5):
        gives_up = asyncio.ensure_future(quitter.acquire(P, budget, max_wait=0))
        await asyncio.sleep(0)  # the script is on its way
        gives_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gives_up
        slot = await other.acquire(P, budget, max_wait=1)
        assert slot.waited < 0.5
        await slot.release()


async def _script_runs(admin: RespClient) -> int:
    """EVALSHA and EVAL commands the server has run so far."""
    stats = (await admin.execute("INFO", "commandstats")).decode()
    runs = 0
    for line in stats.splitlines():
        if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")):
            runs += int(line.split("calls=")[1].split(",")[0])
    return runs


@pytest.mark.parametrize(
    ("limit", "granted", "reason"),
    [({"concurrency": 3}, 3, Reason.CONCURRENCY),
     ({"requests_per_minute": 60, "burst": 4}, 4, Reason.RATE)],
)
async def test_one_turns_calls_go_as_one_script_run_and_decide_as_one_by_one(
    sidecars: Sidecars, clients: Clients, limit: dict[str, float], granted: int, reason: Reason
) -> None:
    """Ten callers asking in the same loop turn cost Redis one script run, and exactly the budget's
    worth of them get a slot, as ten runs one after the other would decide."""
    (limiter,) = sidecars(1)
    await (await limiter.acquire("warm-up", [scope()], max_wait=0)).release()  # the script is loaded
    admin = clients()
    before = await _script_runs(admin)
    results = await asyncio.gather(
        *(limiter.acquire(P, [scope(**limit)], max_wait=0) for _ in range(10)), return_exceptions=True
    )
    assert await _script_runs(admin) - before == 1
    slots = [r for r in results if isinstance(r, Slot)]
    refusals = [r for r in results if isinstance(r, RateLimited)]
    assert len(slots) == granted
    assert len(refusals) == 10 - granted
    assert {r.reason for r in refusals} == {reason}
    await asyncio.gather(*(slot.release() for slot in slots))


async def test_a_concurrency_429_released_with_others_counts_only_the_calls_still_running(
    sidecars: Sidecars,
) -> None:
    """Releases of one turn go as one batch: a concurrency 429 after four others have ended bases
    the lowering on the four calls still in flight, as it would released on its own."""
    (limiter,) = sidecars(1)
    backend = limiter.backend
    assert isinstance(backend, RedisBackend)
    budget = [scope()]  # no configured concurrency: the lowering starts from the calls in flight
    slots = [await limiter.acquire(P, budget, max_wait=0) for _ in range(8)]
    endings = [Completion.OK] * 4 + [Completion.CONCURRENCY_LIMITED]
    await asyncio.gather(*(slot.release(how) for slot, how in zip(slots, endings, strict=False)))
    assert await backend.lowered_limit(P) == 2  # half of the 4 in flight, not of the 8 admitted
    await asyncio.gather(*(slot.release() for slot in slots[5:]))


async def test_a_release_nobody_waits_for_is_logged_when_redis_is_gone(
    sidecars: Sidecars, redis_server: RedisServer
) -> None:
    """The request path's release does not wait for Redis; when Redis is gone it is logged, and
    the lease is left to expire."""
    with capture_logs() as logs:
        (limiter,) = sidecars(1)
        slot = await limiter.acquire(P, [scope(concurrency=2)], max_wait=0)
        redis_server.kill()
        slot.release_soon(Completion.OK)
        await eventually(
            lambda: [e for e in logs if e["event"] == "fleet_lease_not_released"], timeout=3,
            what="the failed release logged",
        )
    await redis_server.start()


class _CancelsOnAnswer(RedisBackend):
    """Cancels ``victim`` in the very callback that hands it Redis's answer: a client gone just then."""

    victim: asyncio.Task[Slot] | None = None

    def _answered(self, calls: Any, what: str, provider: str, run: Any) -> None:
        super()._answered(calls, what, provider, run)
        if what == "acquire" and self.victim is not None:
            self.victim.cancel()


async def test_a_caller_gone_just_as_its_slot_came_leaves_no_slot_behind(clients: Clients) -> None:
    """The answer was handed over, then the caller was cancelled before it ran: the slot goes back."""
    loop = asyncio.get_running_loop()
    backend = _CancelsOnAnswer(clients())
    limiter = QueuedLimiter(backend, clock=loop.time, sleep=asyncio.sleep)
    admin, leases = clients(), backend.keys.leases(P, PROVIDER_SCOPE)
    try:
        backend.victim = asyncio.ensure_future(limiter.acquire(P, [scope(concurrency=1)], max_wait=0))
        with pytest.raises(asyncio.CancelledError):
            await backend.victim
        await eventually(lambda: admin.zcard(leases), until=lambda held: held == 0, timeout=2,
                         what="the unclaimed slot given back")
    finally:
        await limiter.aclose()


async def test_a_release_whose_caller_stopped_waiting_is_still_sent(
    sidecars: Sidecars, clients: Clients
) -> None:
    """Cancelled while its give-back was queued: the give-back still reaches Redis."""
    (limiter,) = sidecars(1)
    backend = limiter.backend
    assert isinstance(backend, RedisBackend)
    slot = await limiter.acquire(P, [scope(concurrency=1)], max_wait=0)
    giving_back = asyncio.ensure_future(slot.release())
    await asyncio.sleep(0)  # queued, not yet sent
    giving_back.cancel()
    with pytest.raises(asyncio.CancelledError):
        await giving_back
    admin = clients()
    await eventually(lambda: admin.zcard(backend.keys.leases(P, PROVIDER_SCOPE)),
                     until=lambda held: held == 0, timeout=2, what="the slot given back")


async def test_closing_sends_the_give_backs_still_queued(sidecars: Sidecars, clients: Clients) -> None:
    """A graceful stop right after the last request: its give-back reaches Redis before the client
    closes, so the place is free at once, not after the lease time."""
    (limiter,) = sidecars(1)
    backend = limiter.backend
    assert isinstance(backend, RedisBackend)
    slot = await limiter.acquire(P, [scope(concurrency=1)], max_wait=0)
    slot.release_soon(Completion.OK)
    await limiter.aclose()
    await backend.redis.aclose()
    assert await clients().zcard(backend.keys.leases(P, PROVIDER_SCOPE)) == 0


async def test_one_turns_releases_free_every_slot_and_a_failure_counts_every_lease(
    sidecars: Sidecars, clients: Clients, redis_server: RedisServer
) -> None:
    """The give-backs of one turn nobody waits for go as one call per shape (``_merged``): every
    slot still comes back, and when Redis is gone the log counts each lease, not each call."""
    (limiter,) = sidecars(1, share_size=0)  # every slot decided by Redis: 40 leases in the set
    budget = [scope(concurrency=100)]
    backend = limiter.backend
    assert isinstance(backend, RedisBackend)
    leases = backend.keys.leases(P, PROVIDER_SCOPE)
    admin = clients()
    slots = [await limiter.acquire(P, budget, max_wait=0) for _ in range(40)]
    assert await admin.zcard(leases) == 40
    for slot in slots:
        slot.release_soon(Completion.OK)
    await eventually(lambda: admin.zcard(leases), until=lambda held: held == 0, timeout=2,
                     what="every slot given back")
    slots = [await limiter.acquire(P, budget, max_wait=0) for _ in range(5)]
    with capture_logs() as logs:
        redis_server.kill()
        for slot in slots:
            slot.release_soon(Completion.ABANDONED)
        failed = await eventually(
            lambda: [e for e in logs if e["event"] == "fleet_lease_not_released"], timeout=3,
            what="the failed give-back logged",
        )
    assert [e["leases"] for e in failed] == [5]
    await redis_server.start()


async def test_a_batch_of_releases_carrying_thousands_of_leases_frees_them_all(clients: Clients) -> None:
    """The release script takes a lease set's ids out a thousand at a time: Lua's ``unpack`` has a
    bounded stack (about 8,000), and one run may carry more ids than that for one set (64 calls of
    up to 128 merged give-backs each)."""
    admin = clients()
    release = admin.register_script(lua.RELEASE)
    keys = FleetKeys()
    aimd, leases = keys.aimd(P), keys.leases(P, PROVIDER_SCOPE)
    ids = [f"lease-{i}" for i in range(64 * 128)]
    for first in range(0, len(ids), 512):
        chunk = ids[first:first + 512]
        await admin.execute("ZADD", leases, *[x for lease in chunk for x in (10**15, lease)])
    assert await admin.zcard(leases) == len(ids)
    run: list[object] = []
    for first in range(0, len(ids), 128):
        call = [ids[first], "abandoned", 0, 1, 0, *ids[first + 1:first + 128]]
        run += [2, len(call), *call]
    replies = await release([aimd, leases] * 64, run)
    assert replies == [0] * 64
    assert await admin.zcard(leases) == 0


@pytest.mark.parametrize(("calls", "zadds"), [(40, 1), (1200, 3)])
async def test_a_renewal_tick_pushes_out_every_held_lease_in_a_few_script_runs(
    clients: Clients, calls: int, zadds: int
) -> None:
    """Calls in flight: one tick renews every lease with one ZADD per 500 leases, not one each."""
    ticks: asyncio.Queue[None] = asyncio.Queue()
    asleep = [0]

    async def sleep(seconds: float) -> None:  # the renewer's tick, given by the test
        asleep[0] += 1
        await ticks.get()

    loop = asyncio.get_running_loop()
    limiter = fleet_limiter(clients(), clock=loop.time, sleep=sleep, lease_ttl=30.0, share_size=0)
    admin = clients()
    budget = [scope(concurrency=2000)]
    key = FleetKeys().leases(P, PROVIDER_SCOPE)
    try:
        slots = await asyncio.gather(*(limiter.acquire(P, budget, max_wait=0) for _ in range(calls)))
        before = dict(_pairs(await admin.execute("ZRANGE", key, 0, -1, "WITHSCORES")))
        assert len(before) == calls
        done_before = await _calls(admin, "zadd")
        await asyncio.sleep(0.01)  # Redis's clock moves on: a renewal shows as a later expiry
        ticks.put_nowait(None)
        await eventually(lambda: asleep[0] == 2)  # the tick's renewals are answered
        assert await _calls(admin, "zadd") == done_before + zadds
        after = dict(_pairs(await admin.execute("ZRANGE", key, 0, -1, "WITHSCORES")))
        assert after.keys() == before.keys()
        assert all(float(after[lease]) > float(before[lease]) for lease in before)
        for slot in slots:
            await slot.release()
    finally:
        await limiter.aclose()


async def _calls(admin: RespClient, command: str) -> int:
    """Calls of ``command`` the server has run so far, scripts' included."""
    stats = (await admin.execute("INFO", "commandstats")).decode()
    for line in stats.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def _pairs(flat: list[bytes]) -> list[tuple[bytes, bytes]]:
    return list(zip(flat[::2], flat[1::2], strict=True))
