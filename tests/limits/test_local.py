"""The in-process limiter on a virtual clock: arrival order, deadlines, honest refusals, pauses, AIMD."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.limits.api import Completion, RateLimited, Slot
from sidecar.limits.local import LocalBackend
from sidecar.limits.queue import QueuedLimiter
from sidecar.policy.admission import PROVIDER_SCOPE, RateLimitConfig, Reason, Scope
from tests.support.virtual_time import run_virtual

P = "elevenlabs"


def scope(**limit: float) -> Scope:
    return Scope.of(PROVIDER_SCOPE, RateLimitConfig(**limit))  # type: ignore[arg-type]


def virtual(test: Callable[[QueuedLimiter, Callable[[], float]], Awaitable[None]]) -> None:
    """Run ``test(limiter, clock)`` on a fresh virtual-time loop with a local limiter."""

    async def main() -> None:
        clock = asyncio.get_running_loop().time
        limiter = QueuedLimiter(LocalBackend(clock=clock), clock=clock, sleep=asyncio.sleep)
        try:
            await test(limiter, clock)
        finally:
            await limiter.aclose()

    run_virtual(main())


def test_a_free_slot_is_given_at_once_and_taken_back_on_exit() -> None:
    """concurrency 1: the second caller gets in only after the first leaves its ``async with``."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        one = [scope(concurrency=1)]
        async with await limiter.acquire(P, one, max_wait=0) as slot:
            assert slot.waited == 0
            with pytest.raises(RateLimited) as refused:
                await limiter.acquire(P, one, max_wait=0)
            assert (refused.value.reason, refused.value.retry_after) == (Reason.CONCURRENCY, 1.0)
        async with await limiter.acquire(P, one, max_wait=0):
            pass

    virtual(test)


def test_waiters_are_served_in_arrival_order() -> None:
    """Five callers queue behind a 5 s call; each gets the slot in turn, in the order they came."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        one, starts, t0 = [scope(concurrency=1)], [], clock()

        async def call(name: str, delay: float, hold: float) -> None:
            await asyncio.sleep(delay)
            async with await limiter.acquire(P, one, max_wait=60):
                starts.append((name, clock() - t0))
                await asyncio.sleep(hold)

        await asyncio.gather(call("first", 0, 5), *(call(f"w{i}", 0.1 * (5 - i), 1) for i in range(5)))
        assert starts == [("first", 0), ("w4", 5), ("w3", 6), ("w2", 7), ("w1", 8), ("w0", 9)]

    virtual(test)


def test_a_waiter_is_refused_at_its_deadline() -> None:
    """Blocked on concurrency with max_wait 2 s: refused after exactly 2 s, told to retry in 1 s."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        one = [scope(concurrency=1)]
        holder = await limiter.acquire(P, one, max_wait=0)
        t0 = clock()
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire(P, one, max_wait=2)
        assert clock() - t0 == pytest.approx(2.0)
        assert (refused.value.reason, refused.value.retry_after) == (Reason.CONCURRENCY, 1.0)
        assert refused.value.waited == pytest.approx(2.0)
        await holder.release()

    virtual(test)


def test_a_rate_wait_within_max_wait_is_booked_and_slept() -> None:
    """60/min, burst 1: the second call waits exactly 1 s when allowed to, else is refused at once."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        rate = [scope(requests_per_minute=60)]
        await (await limiter.acquire(P, rate, max_wait=0)).release(Completion.OK)
        t0 = clock()
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire(P, rate, max_wait=0.5)
        assert clock() == t0  # no point waiting half a second for a start a second away
        assert (refused.value.reason, refused.value.retry_after) == (Reason.RATE, 1.0)
        slot = await limiter.acquire(P, rate, max_wait=2)
        assert slot.waited == pytest.approx(1.0)
        await slot.release()

    virtual(test)


def test_a_pause_holds_everyone_then_serves_them_in_order() -> None:
    """During a 3 s pause, short waits are refused at once and longer ones go, in order, when it ends."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        none, started, t0 = [scope()], [], clock()
        assert await limiter.pause(P, 3) == 3
        assert await limiter.pause(P, 1) == 3  # a shorter pause never shortens one in force
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire(P, none, max_wait=1)
        assert (refused.value.reason, refused.value.retry_after, clock()) == (
            Reason.PROVIDER_PAUSE, 3.0, t0)

        async def call(name: str) -> None:
            async with await limiter.acquire(P, none, max_wait=10):
                started.append((name, clock() - t0))

        await asyncio.gather(*(call(n) for n in "abc"))
        assert started == [("a", 3), ("b", 3), ("c", 3)]
        assert await limiter.paused_for(P) == 0

    virtual(test)


def test_a_full_route_does_not_hold_back_other_routes() -> None:
    """A caller waiting on its route's concurrency does not block a caller of another route."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        provider = scope(concurrency=10)
        route_x = [provider, Scope("x", concurrency=1)]
        route_y = [provider, Scope("y", concurrency=1)]
        holder = await limiter.acquire(P, route_x, max_wait=0)
        waiting = asyncio.ensure_future(limiter.acquire(P, route_x, max_wait=5))
        await asyncio.sleep(0.1)
        other = await limiter.acquire(P, route_y, max_wait=0)  # not behind the waiter on x
        assert not waiting.done()
        await holder.release()
        await (await waiting).release()
        await other.release()

    virtual(test)


def test_a_newcomer_never_overtakes_a_waiter() -> None:
    """When a slot frees, the caller already waiting gets it, not one arriving at that moment."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        one = [scope(concurrency=1)]
        holder = await limiter.acquire(P, one, max_wait=0)
        waiting = asyncio.ensure_future(limiter.acquire(P, one, max_wait=5))
        await asyncio.sleep(1)
        await holder.release()
        with pytest.raises(RateLimited):
            await limiter.acquire(P, one, max_wait=0)
        await (await waiting).release()

    virtual(test)


def test_a_cancelled_waiter_leaves_the_line_and_a_cancelled_booking_gives_back_its_slot() -> None:
    """Giving up while waiting, in line or during a booked rate wait, holds no slot afterwards."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        one = [scope(concurrency=1, requests_per_minute=60)]
        holder = await limiter.acquire(P, one, max_wait=0)
        in_line = asyncio.ensure_future(limiter.acquire(P, one, max_wait=30))
        await asyncio.sleep(0.5)
        in_line.cancel()
        await holder.release()
        booked = asyncio.ensure_future(limiter.acquire(P, one, max_wait=30))  # rate: starts at +1 s
        await asyncio.sleep(0.2)
        assert not booked.done()
        booked.cancel()
        await asyncio.sleep(0)
        slot = await limiter.acquire(P, one, max_wait=5)  # the slot is free again
        assert slot.waited == pytest.approx(1.3)  # the cancelled booking still spent its rate turn
        await slot.release()

    virtual(test)


def test_a_concurrency_429_halves_the_limit_and_successes_grow_it_back() -> None:
    """concurrency 4 and a concurrency 429: 2 at a time, then one more per 5 s of successes."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        four = [scope(concurrency=4)]
        backend = limiter.backend
        assert isinstance(backend, LocalBackend)
        slots = [await limiter.acquire(P, four, max_wait=0) for _ in range(4)]
        await slots[0].release(Completion.CONCURRENCY_LIMITED)
        await slots[1].release(Completion.CONCURRENCY_LIMITED)  # admitted before the decrease
        assert backend.lowered_limit(P) == 2
        with pytest.raises(RateLimited):
            await limiter.acquire(P, four, max_wait=0)  # 2 in flight: full at the lowered limit
        await slots[2].release(Completion.OK)
        await slots[3].release(Completion.OK)
        await asyncio.sleep(5)
        await (await limiter.acquire(P, four, max_wait=0)).release(Completion.OK)
        assert backend.lowered_limit(P) == 3
        await asyncio.sleep(5)
        await (await limiter.acquire(P, four, max_wait=0)).release(Completion.OK)
        assert backend.lowered_limit(P) is None  # back at the configured 4

    virtual(test)


def test_a_slot_is_given_at_once_only_when_no_wait_is_needed() -> None:
    """``acquire_at_once``: the same slot and lease ``acquire`` would give without waiting (it counts
    for AIMD); None, with nothing booked, while a pause, a lowered concurrency, a rate wait or a line
    would hold the call back: then ``acquire`` decides as before."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        free = [scope()]
        backend = limiter.backend
        assert isinstance(backend, LocalBackend)
        slots = [limiter.acquire_at_once(P, free) for _ in range(4)]
        assert all(s is not None and s.waited == 0 for s in slots)
        assert backend.usage(P, free[0])[0] == 4
        first = slots[0]
        assert first is not None
        await first.release(Completion.CONCURRENCY_LIMITED)  # 4 were in flight: lowered to 2
        assert backend.lowered_limit(P) == 2
        assert limiter.acquire_at_once(P, free) is None
        with pytest.raises(RateLimited) as refused:
            await limiter.acquire(P, free, max_wait=0)  # 3 still in flight, over the lowered 2
        assert refused.value.reason is Reason.CONCURRENCY
        for slot in slots[1:]:
            assert slot is not None
            await slot.release(Completion.ABANDONED)
        assert backend.usage(P, free[0])[0] == 0
        await asyncio.sleep(600)  # a reduction with no news for 10 minutes is forgotten
        assert backend.lowered_limit(P) is None
        assert limiter.acquire_at_once(P, free) is not None
        await limiter.pause(P, 3)
        assert limiter.acquire_at_once(P, free) is None
        with pytest.raises(RateLimited) as paused:
            await limiter.acquire(P, free, max_wait=0)
        assert paused.value.reason is Reason.PROVIDER_PAUSE
        await asyncio.sleep(3)
        assert limiter.acquire_at_once(P, free) is not None

        rate = [scope(requests_per_minute=60, burst=1)]  # one start per second
        assert limiter.acquire_at_once(P, rate) is not None
        assert limiter.acquire_at_once(P, rate) is None  # the next start is 1 s away: not booked
        started = clock()
        slot = await limiter.acquire(P, rate, max_wait=2)  # booked by acquire, and slept
        assert (slot.waited, clock() - started) == (1.0, 1.0)

    virtual(test)


def test_an_unlimited_call_passes_at_once_unless_held_back_and_still_counts_for_aimd() -> None:
    """``pass_open``: a call whose budgets limit nothing goes at once with nothing booked, but it
    counts as in flight (the base of a lowering), a concurrency 429 it gets lowers the provider, and
    then (or during a pause, or while callers are in line) it is None and ``acquire`` decides. When
    an open call ends under a lowered concurrency, a caller waiting for that slot is let in."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        free = [scope()]
        backend = limiter.backend
        assert isinstance(backend, LocalBackend)
        opened = [limiter.pass_open(P) for _ in range(4)]
        assert all(isinstance(at, int) for at in opened)
        assert backend.usage(P, free[0])[0] == 4  # counted, not booked
        first, *others = [at for at in opened if at is not None]
        limiter.release_open(P, first, Completion.CONCURRENCY_LIMITED)  # 4 were in flight
        assert backend.lowered_limit(P) == 2
        assert limiter.pass_open(P) is None  # the lowered limit decides now
        waiter = asyncio.create_task(limiter.acquire(P, free, max_wait=10))
        await asyncio.sleep(1)
        assert not waiter.done()  # 3 in flight, over the lowered 2
        limiter.release_open(P, others[0], Completion.ABANDONED)
        await asyncio.sleep(1)
        assert not waiter.done()  # 2 in flight: still full
        limiter.release_open(P, others[1], Completion.ABANDONED)
        slot = await asyncio.wait_for(waiter, 1)  # woken by the open call that ended
        assert slot.waited == 2.0
        limiter.release_open(P, others[2], Completion.ABANDONED)
        await slot.release(Completion.ABANDONED)
        assert backend.usage(P, free[0])[0] == 0

        await asyncio.sleep(600)  # a reduction with no news for 10 minutes is forgotten
        assert limiter.pass_open(P) is not None
        await limiter.pause(P, 3)
        assert limiter.pass_open(P) is None
        await asyncio.sleep(3)
        assert limiter.pass_open(P) is not None

    virtual(test)


def test_an_unlimited_call_does_not_overtake_a_caller_in_line() -> None:
    """While a caller of the provider waits in line (here behind a pause), ``pass_open`` says None
    even once the pause is over: the caller in line goes first."""

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        free = [scope()]
        await limiter.pause(P, 2)
        waiter = asyncio.create_task(limiter.acquire(P, free, max_wait=5))
        await asyncio.sleep(0)
        assert limiter.pass_open(P) is None
        slot = await waiter
        assert slot.waited == 2.0
        await slot.release(Completion.OK)
        assert limiter.pass_open(P) is not None

    virtual(test)


class _ScriptedBackend(LocalBackend):
    """Like the fleet's backend (polled, other holders), it records asks and frees a slot mid-pass."""

    poll_interval = 0.05

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(clock=clock)
        self.asked: list[float] = []
        self.free_on_next_ask: Slot | None = None

    async def try_acquire(self, provider: str, scopes: Sequence[Scope], max_wait: float) -> Any:
        self.asked.append(max_wait)
        result = await super().try_acquire(provider, scopes, max_wait)
        if self.free_on_next_ask is not None:  # a slot freed by another sidecar while Redis answered
            slot, self.free_on_next_ask = self.free_on_next_ask, None
            await slot.release()
        return result


def test_a_waiter_behind_one_blocked_on_the_same_budget_is_not_asked_for() -> None:
    """A slot freed during a pass goes to the first waiter next pass, not to one further back."""

    async def main() -> None:
        clock = asyncio.get_running_loop().time
        backend = _ScriptedBackend(clock)
        limiter = QueuedLimiter(backend, clock=clock, sleep=asyncio.sleep)
        x = [scope(), Scope("x", concurrency=1)]
        holder = await limiter.acquire(P, x, max_wait=0)
        first = asyncio.ensure_future(limiter.acquire(P, x, max_wait=10))
        await asyncio.sleep(0.1)
        second = asyncio.ensure_future(limiter.acquire(P, x, max_wait=8))
        await asyncio.sleep(0.1)
        backend.asked.clear()
        backend.free_on_next_ask = holder
        await asyncio.sleep(0.1)
        assert first.done() and not second.done()
        assert backend.asked[:2] == pytest.approx([9.8, 9.8])  # the first waiter, twice; not the second
        await (await first).release()
        await (await second).release()
        await limiter.aclose()

    run_virtual(main())


_calls = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.01, 0.1, 0.4, 1.0, 2.5]),  # gap before arriving
        st.sampled_from([0.0, 0.3, 1.0, 4.0]),  # max_wait
        st.sampled_from([0.0, 0.2, 1.5, 6.0]),  # how long the call runs
    ),
    min_size=1,
    max_size=40,
)


@settings(deadline=None, max_examples=150)
@given(_calls, st.sampled_from([30.0, 120.0]), st.integers(1, 3), st.integers(1, 3))
def test_random_traffic_keeps_every_promise(
    calls: list[tuple[float, float, float]], rpm: float, burst: int, concurrency: int
) -> None:
    """Any traffic: rate bound per window, concurrency bound, waits within max_wait, arrival order."""
    limit = [scope(requests_per_minute=rpm, burst=burst, concurrency=concurrency)]
    starts: list[tuple[int, float]] = []  # (arrival rank, start time) in the order slots were given
    live, peak, arrivals = [0], [0], [0]

    async def test(limiter: QueuedLimiter, clock: Callable[[], float]) -> None:
        async def call(at: float, max_wait: float, hold: float) -> None:
            await asyncio.sleep(at)
            rank = arrivals[0]  # timers due at the same instant fire in any order: rank on arrival
            arrivals[0] += 1
            try:
                slot = await limiter.acquire(P, limit, max_wait=max_wait)
            except RateLimited as refused:
                assert refused.waited <= max_wait + 1e-6
                assert refused.retry_after > 0
                return
            assert slot.waited <= max_wait + 1e-6
            starts.append((rank, clock()))
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            await asyncio.sleep(hold)
            live[0] -= 1
            await slot.release(Completion.OK)

        at, tasks = 0.0, []
        for gap, max_wait, hold in calls:
            at += gap
            tasks.append(call(at, max_wait, hold))
        await asyncio.gather(*tasks)

    virtual(test)
    assert peak[0] <= concurrency
    assert [n for n, _ in starts] == sorted(n for n, _ in starts)  # admitted in arrival order
    times = [t for _, t in starts]
    for i in range(len(times)):
        for j in range(i, len(times)):
            assert j - i + 1 <= burst + (times[j] - times[i]) * rpm / 60 + 1e-6
