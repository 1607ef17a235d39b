"""Shares on a real redis-server: far from its limits a sidecar admits from places booked ahead,
and a pause, a lowering or a lost subscription ends them at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.fleet.client import redis_client
from sidecar.fleet.limiter import RedisBackend
from sidecar.limits.api import Completion, FleetUnavailable, RateLimited, Slot
from sidecar.limits.queue import QueuedLimiter
from sidecar.policy.admission import PROVIDER_SCOPE, RateLimitConfig, Reason, Scope
from sidecar.policy.gcra import micros
from sidecar.state.resp import RespClient, RespError
from tests.fleet.conftest import Sidecars
from tests.support.polling import eventually
from tests.support.rate_windows import assert_window_bound
from tests.support.redis_server import RedisServer

P = "replicate"
Clients = Callable[[], RespClient]
# Shares in these tests live 5 s (not 1) where a test needs one to last through its checks.
FAR = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(requests_per_minute=600_000, burst=10_000, concurrency=1000))]


def backend_of(limiter: QueuedLimiter) -> RedisBackend:
    backend = limiter.backend
    assert isinstance(backend, RedisBackend)
    return backend


async def scripts_run(admin: RespClient) -> int:
    stats = (await admin.execute("INFO", "commandstats")).decode()
    line = next((ln for ln in stats.splitlines() if ln.startswith("cmdstat_evalsha:")), "calls=0,")
    return int(line.split("calls=")[1].split(",")[0])


async def listening(admin: RespClient, backend: RedisBackend) -> None:
    """Wait until the sidecar's notice subscription is confirmed, on both ends."""
    channel = backend.keys.notices()
    await eventually(lambda: admin.execute("PUBSUB", "NUMSUB", channel),
                     until=lambda reply: reply[1] == 1, timeout=5, what="the notices subscribed")
    await eventually(lambda: backend.hearing_notices, timeout=5, what="the sidecar hearing them")


async def one_call(limiter: QueuedLimiter, scopes: list[Scope] = FAR) -> Slot:
    """The request path's way: at once when it can be, else through Redis."""
    return limiter.acquire_at_once(P, scopes) or await limiter.acquire(P, scopes, max_wait=0)


async def with_a_share(limiter: QueuedLimiter, admin: RespClient) -> None:
    """Start the limiter's notices, then take a share (the first call after they are live)."""
    await (await one_call(limiter)).release(Completion.OK)
    await listening(admin, backend_of(limiter))
    await (await one_call(limiter)).release(Completion.OK)


async def test_far_from_its_limits_a_sidecar_asks_redis_once_a_share(
    sidecars: Sidecars, clients: Clients
) -> None:
    """The first share holds 8 places; one used up asks for twice as many next time (up to 16 here)."""
    (limiter,) = sidecars(1, share_size=16, share_ttl=5)
    admin = clients()
    await with_a_share(limiter, admin)
    leases = backend_of(limiter).keys.leases(P, PROVIDER_SCOPE)
    assert await admin.zcard(leases) == 9  # the call's place and 8 more, booked in Redis
    for size in (8, 16, 16):
        before = await scripts_run(admin)
        for _ in range(size):
            slot = limiter.acquire_at_once(P, FAR)
            assert slot is not None  # from the share, without a coroutine
            await slot.release(Completion.OK)
        assert await scripts_run(admin) == before  # Redis was not asked
        assert limiter.acquire_at_once(P, FAR) is None  # used up: the next call asks Redis
        await (await limiter.acquire(P, FAR, max_wait=0)).release(Completion.OK)
        assert await scripts_run(admin) >= before + 1


async def test_near_a_limit_there_is_no_share(sidecars: Sidecars, clients: Clients) -> None:
    """Half of concurrency 4 is 2: a share (2 places at least) plus its call would pass it."""
    budget = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(concurrency=4))]
    (limiter,) = sidecars(1)
    admin = clients()
    await (await one_call(limiter, budget)).release(Completion.OK)
    await listening(admin, backend_of(limiter))
    leases = backend_of(limiter).keys.leases(P, PROVIDER_SCOPE)
    slots = [await one_call(limiter, budget) for _ in range(3)]
    assert await admin.zcard(leases) == 3  # no place booked ahead: the count is the calls'
    assert limiter.acquire_at_once(P, budget) is None
    for slot in slots:
        await slot.release(Completion.OK)


async def test_a_pause_set_by_another_sidecar_ends_the_share_at_once(
    sidecars: Sidecars, clients: Clients
) -> None:
    holder, pauser = sidecars(2, share_ttl=5)
    admin = clients()
    await with_a_share(holder, admin)
    assert limiter_has_a_share(holder)
    await pauser.pause(P, 5)
    # Redis wrote the notice to the holder before it answered anything asked after the pause: once
    # any later reply is back, the holder's loop has the notice too (as a request after the 429 would).
    await admin.ping()
    await asyncio.sleep(0)
    assert holder.acquire_at_once(P, FAR) is None
    with pytest.raises(RateLimited) as refused:
        await holder.acquire(P, FAR, max_wait=0)
    assert refused.value.reason is Reason.PROVIDER_PAUSE
    assert await admin.zcard(backend_of(holder).keys.leases(P, PROVIDER_SCOPE)) == 0  # given back


async def test_a_pause_this_sidecar_sets_ends_its_own_share_before_redis_answers(
    sidecars: Sidecars, clients: Clients
) -> None:
    (limiter,) = sidecars(1, share_ttl=5)
    await with_a_share(limiter, clients())
    pausing = asyncio.ensure_future(limiter.pause(P, 5))
    await asyncio.sleep(0)  # the pause is on its way to Redis, not yet answered
    assert not pausing.done()
    assert limiter.acquire_at_once(P, FAR) is None
    await pausing


def limiter_has_a_share(limiter: QueuedLimiter) -> bool:
    slot = limiter.acquire_at_once(P, FAR)
    if slot is None:
        return False
    slot.release_soon(Completion.OK)
    return True


async def test_a_concurrency_429_ends_the_share_and_lowers_from_the_configured_limit(
    sidecars: Sidecars, clients: Clients
) -> None:
    (limiter,) = sidecars(1, share_ttl=5)
    admin = clients()
    await with_a_share(limiter, admin)
    slots = [await one_call(limiter) for _ in range(3)]
    await slots[0].release(Completion.CONCURRENCY_LIMITED)
    assert await backend_of(limiter).lowered_limit(P) == 500  # half the configured 1000
    assert limiter.acquire_at_once(P, FAR) is None
    # the unused places went back first: only the two calls still running hold one
    leases = backend_of(limiter).keys.leases(P, PROVIDER_SCOPE)
    await eventually(lambda: admin.zcard(leases), until=lambda n: n == 2, timeout=2,
                     what="the share given back")
    for slot in slots[1:]:
        await slot.release(Completion.OK)


async def test_an_unused_share_is_given_back_when_it_ends(sidecars: Sidecars, clients: Clients) -> None:
    (limiter,) = sidecars(1, share_ttl=1.0)
    admin = clients()
    await with_a_share(limiter, admin)
    leases = backend_of(limiter).keys.leases(P, PROVIDER_SCOPE)
    assert await admin.zcard(leases) > 1
    await eventually(lambda: admin.zcard(leases), until=lambda n: n == 0, timeout=3,
                     what="the share's places given back once it ended")
    assert limiter.acquire_at_once(P, FAR) is None


async def test_no_share_is_used_while_the_notices_are_down(sidecars: Sidecars, clients: Clients) -> None:
    (limiter,) = sidecars(1, share_ttl=5)
    admin = clients()
    await with_a_share(limiter, admin)
    backend = backend_of(limiter)
    await admin.execute("CLIENT", "KILL", "TYPE", "pubsub")
    leases = backend.keys.leases(P, PROVIDER_SCOPE)
    await eventually(lambda: admin.zcard(leases), until=lambda n: n == 0, timeout=3,
                     what="the share given back when the subscription was lost")
    assert limiter.acquire_at_once(P, FAR) is None
    before = await scripts_run(admin)
    await (await limiter.acquire(P, FAR, max_wait=0)).release(Completion.OK)
    assert await scripts_run(admin) > before  # decided by Redis
    await listening(admin, backend)  # subscribed again: shares again

    async def shares_again() -> bool:
        await (await one_call(limiter)).release(Completion.OK)
        return limiter_has_a_share(limiter)

    await eventually(shares_again, timeout=5, what="a share once the notices were back")


async def test_sidecars_taking_shares_stay_within_the_rate_in_every_window(sidecars: Sidecars) -> None:
    """6000/min, burst 100: a share holds up to 24 places and lives 247 ms; three sidecars
    hammering the budget still book no more than it allows in any window."""
    rpm, burst = 6000.0, 100
    budget = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(requests_per_minute=rpm, burst=burst))]
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + 1.5
    starts: list[int] = []

    async def worker(limiter: QueuedLimiter) -> None:
        while loop.time() < stop_at:
            try:
                slot = limiter.acquire_at_once(P, budget) or await limiter.acquire(P, budget, max_wait=0.1)
            except RateLimited:
                await asyncio.sleep(0.005)
                continue
            starts.append(slot.booked_start)
            await asyncio.sleep(0.001)
            slot.release_soon(Completion.OK)

    fleet = sidecars(3)
    await asyncio.gather(*(worker(limiter) for limiter in fleet for _ in range(4)))
    assert_window_bound(starts, rpm, burst)
    assert len(starts) >= 120  # 100 a second, plus the burst: the budget was really used


async def test_a_share_used_late_never_adds_to_a_fresh_burst(
    sidecars: Sidecars, clients: Clients
) -> None:
    """6000/min, burst 100. A share's tokens count as used at the end of its life, and it ends
    before the bucket has refilled: a burst after the refill is the budget's, never more."""
    rpm, burst = 6000.0, 100
    budget = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(requests_per_minute=rpm, burst=burst))]
    (limiter,) = sidecars(1)
    admin = clients()
    backend = backend_of(limiter)
    await (await one_call(limiter, budget)).release(Completion.OK)
    await listening(admin, backend)
    loop = asyncio.get_running_loop()
    starts = [micros(loop.time())]
    (await one_call(limiter, budget)).release_soon(Completion.OK)
    assert await admin.zcard(backend.keys.leases(P, PROVIDER_SCOPE)) > 1  # a share was booked
    await asyncio.sleep(0.6)  # the scenario: the bucket refills meanwhile
    while True:
        try:
            slot = limiter.acquire_at_once(P, budget) or await limiter.acquire(P, budget, max_wait=0)
        except RateLimited:
            break
        starts.append(micros(loop.time()))  # when each call really went, not when it was booked
        slot.release_soon(Completion.OK)
    assert_window_bound(starts, rpm, burst + 1)  # + 1: the reply's own latency


async def test_a_grant_whose_answer_was_lost_gives_its_share_back(
    sidecars: Sidecars, clients: Clients, redis_server: RedisServer
) -> None:
    """Redis busy past the client's timeout: the script ran, its answer was lost; the call fails
    over, and what it booked is given back instead of holding half the budget for the lease time."""
    budget = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(concurrency=100))]
    (limiter,) = sidecars(1)
    admin = clients()
    backend = backend_of(limiter)
    await (await one_call(limiter, budget)).release(Completion.OK)
    await listening(admin, backend)
    slow = redis_client(redis_server.url, timeout=5)
    await slow.ping()  # connected: the script below goes out at the next turn of the loop
    busy = asyncio.ensure_future(slow.execute("EVAL", _BUSY_600_MS, 0))
    for _ in range(3):  # its bytes are on the wire before the acquisition's: Redis runs it first
        await asyncio.sleep(0)
    with pytest.raises(FleetUnavailable):
        await limiter.acquire(P, budget, max_wait=0)
    await busy
    await slow.aclose()
    leases = backend.keys.leases(P, PROVIDER_SCOPE)
    await eventually(lambda: admin.zcard(leases), until=lambda n: n == 0, timeout=3,
                     retry_on=(RespError,), what="the lost grant's places given back")


_BUSY_600_MS = """
local t = redis.call('TIME') local s = t[1] * 1e6 + t[2]
while true do local u = redis.call('TIME') if u[1] * 1e6 + u[2] - s > 600000 then break end end
return 1
"""


async def test_a_pause_heard_before_the_grant_comes_back_ends_that_share(
    sidecars: Sidecars, clients: Clients
) -> None:
    """The grant ran in Redis before another sidecar's pause, but its answer comes back after the
    notice: the share it brings is ended at once."""
    holder, pauser = sidecars(2, share_ttl=5)
    admin = clients()
    await (await one_call(holder)).release(Completion.OK)
    backend = backend_of(holder)
    await listening(admin, backend)
    acquire = backend._acquire

    async def answer_after_a_pause(keys: Any, args: Any) -> Any:  # one slow segment on the wire
        reply = await acquire(keys, args)
        await pauser.pause(P, 5)
        await admin.ping()  # the notice has reached the holder too (see the test above)
        return reply

    backend._acquire = answer_after_a_pause  # type: ignore[method-assign]
    try:
        (await holder.acquire(P, FAR, max_wait=0)).release_soon(Completion.OK)
    finally:
        backend._acquire = acquire  # type: ignore[method-assign]
    assert holder.acquire_at_once(P, FAR) is None


async def test_callers_arriving_while_a_share_is_asked_for_wait_for_it(
    sidecars: Sidecars, clients: Clients
) -> None:
    """Five calls that come while the first one's share is on its way take their places from it:
    one script run for the six, not one each."""
    (limiter,) = sidecars(1, share_ttl=5)
    admin = clients()
    await (await one_call(limiter)).release(Completion.OK)
    await listening(admin, backend_of(limiter))
    before = await scripts_run(admin)
    first = asyncio.ensure_future(limiter.acquire(P, FAR, max_wait=0))
    for _ in range(3):  # its script is on the wire, not yet answered
        await asyncio.sleep(0)
    assert not first.done()
    others = [asyncio.ensure_future(limiter.acquire(P, FAR, max_wait=0)) for _ in range(5)]
    for slot in await asyncio.gather(first, *others):
        await slot.release(Completion.OK)
    assert await scripts_run(admin) == before + 1


async def test_a_share_running_low_asks_for_the_next_one_ahead(
    sidecars: Sidecars, clients: Clients
) -> None:
    """Half used, a share asks Redis for the next one (twice as large) in the background, which
    waits its turn: the calls after the first one's last place take places at once instead of
    waiting for a round trip."""
    (limiter,) = sidecars(1, share_size=16, share_ttl=5)
    admin = clients()
    await with_a_share(limiter, admin)
    leases = backend_of(limiter).keys.leases(P, PROVIDER_SCOPE)
    assert await admin.zcard(leases) == 9  # the share's 8 and its call's place, given back to it
    held = [limiter.acquire_at_once(P, FAR) for _ in range(4)]  # 4 of its 8 calls left
    assert all(slot is not None for slot in held)
    # The next share comes with nobody waiting: 16 places and the asking call's own.
    await eventually(lambda: admin.zcard(leases), until=lambda n: n == 9 + 17, timeout=3,
                     what="the next share booked ahead")
    before = await scripts_run(admin)
    more = [limiter.acquire_at_once(P, FAR) for _ in range(4 + 8)]  # the first's 4, the next's 8
    assert all(slot is not None for slot in more)  # without a coroutine, and without Redis
    assert await scripts_run(admin) == before
    for slot in held + more:
        assert slot is not None
        slot.release_soon(Completion.OK)


@pytest.mark.parametrize("turns", [0, 3], ids=["not yet sent", "on the wire"])
async def test_a_concurrency_429_while_the_next_share_is_coming_counts_only_the_calls_in_flight(
    sidecars: Sidecars, clients: Clients, turns: int
) -> None:
    """A lowering is based on the calls in flight: a share asked for ahead and still on its way
    when a concurrency 429 comes is ended on arrival and given back before the lowering is
    decided, like the share in use (whether its script has gone to Redis yet or not)."""
    rates_only = [Scope.of(PROVIDER_SCOPE, RateLimitConfig(requests_per_minute=600_000, burst=10_000))]
    (limiter,) = sidecars(1, share_size=16, share_ttl=5)
    admin = clients()
    backend = backend_of(limiter)
    await (await one_call(limiter, rates_only)).release(Completion.OK)
    await listening(admin, backend)
    await (await one_call(limiter, rates_only)).release(Completion.OK)  # a share of 8
    held = [limiter.acquire_at_once(P, rates_only) for _ in range(6)]  # the next one is asked for
    assert all(slot is not None for slot in held)
    assert held[0] is not None
    for _ in range(turns):
        await asyncio.sleep(0)
    held[0].release_soon(Completion.CONCURRENCY_LIMITED)  # before the next share has come
    lowered = await eventually(lambda: backend.lowered_limit(P), until=lambda limit: limit is not None,
                               timeout=3, what="the lowering")
    assert lowered == 3  # half of the six calls in flight, not of them and the 17 places coming
    leases = backend.keys.leases(P, PROVIDER_SCOPE)
    await eventually(lambda: admin.zcard(leases), until=lambda n: n == 5, timeout=3,
                     what="every place but the five calls' given back")
    for slot in held[1:]:
        assert slot is not None
        slot.release_soon(Completion.OK)
