"""The shared breaker record on a real redis-server: opened once for all, one trial fleet-wide."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from sidecar.fleet.breaker import SharedBreakers, SharedBreakerView, SharedState, Trial
from sidecar.limits.api import FleetUnavailable
from sidecar.state.resp import RespClient
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer

Clients = Callable[[], RespClient]  # a factory of separate clients, as separate sidecars have

P = "bfl"
VERDICT = {"success_threshold": 2, "recovery_timeout": 0.3, "max_recovery_timeout": 1.0}


def fleet(clients: Clients, n: int) -> list[SharedBreakers]:
    """n sidecars' stores, each on its own client."""
    return [SharedBreakers(clients()) for _ in range(n)]


async def _until_half_open(store: SharedBreakers, within: float = 3.0) -> SharedBreakerView:
    return await eventually(lambda: store.read(P), until=lambda view: view.state is SharedState.HALF_OPEN,
                            timeout=within, interval=0.02)


async def _the_one_trial(stores: list[SharedBreakers], lease: float = 5.0) -> Trial:
    answers = await asyncio.gather(*(s.try_trial(P, lease=lease) for s in stores for _ in range(3)))
    trials = [a for a in answers if isinstance(a, Trial)]
    assert len(trials) == 1
    assert all(a.state is SharedState.HALF_OPEN for a in answers if not isinstance(a, Trial))
    return trials[0]


async def test_an_open_by_one_sidecar_is_seen_by_all(clients: Clients) -> None:
    """Opened by one for 2 s: every other sidecar reads it open, for the same remaining time."""
    opener, *others = fleet(clients, 3)
    assert (await opener.read(P)).state is SharedState.CLOSED
    opened = await opener.open(P, 2.0)
    assert opened.state is SharedState.OPEN
    for other in others:
        view = await other.read(P)
        assert view.state is SharedState.OPEN
        assert view.generation == opened.generation
        assert 1.8 < view.retry_after <= 2.0


async def test_a_second_opener_follows_and_does_not_extend(clients: Clients) -> None:
    """A sidecar whose breaker trips while the record is open follows it as it is."""
    first, second = fleet(clients, 2)
    opened = await first.open(P, 1.0)
    again = await second.open(P, 30.0)
    assert again.generation == opened.generation
    assert again.retry_after <= 1.0


async def test_exactly_one_trial_runs_for_the_whole_fleet(clients: Clients) -> None:
    """Half-open: of nine concurrent askers on three sidecars, one gets the trial; none while open."""
    stores = fleet(clients, 3)
    await stores[0].open(P, 0.2)
    early = await stores[1].try_trial(P, lease=5)
    assert isinstance(early, SharedBreakerView) and early.state is SharedState.OPEN
    await _until_half_open(stores[2])
    await _the_one_trial(stores)


async def test_a_failed_trial_reopens_everyone_with_the_doubled_time(clients: Clients) -> None:
    """The trial's failure re-opens the record for 0.6 s (twice 0.3 s), seen by every sidecar."""
    stores = fleet(clients, 3)
    opened = await stores[0].open(P, 0.3)
    await _until_half_open(stores[1])
    trial = await _the_one_trial(stores)
    view = await stores[2].report_trial(P, trial, success=False, **VERDICT)  # type: ignore[arg-type]
    assert view.state is SharedState.OPEN
    assert view.generation == opened.generation + 1
    assert view.open_for == pytest.approx(0.6)
    seen = await stores[1].read(P)
    assert seen.state is SharedState.OPEN and 0.4 < seen.retry_after <= 0.6
    await _until_half_open(stores[0])
    trial = await _the_one_trial(stores)
    view = await stores[0].report_trial(P, trial, success=False, **VERDICT)  # type: ignore[arg-type]
    assert view.open_for == pytest.approx(1.0)  # doubled again, capped by max_recovery_timeout


async def test_successful_trials_close_it_for_everyone(clients: Clients) -> None:
    """Each success frees the trial for the next one; at the threshold every sidecar reads closed."""
    stores = fleet(clients, 3)
    await stores[0].open(P, 0.1)
    await _until_half_open(stores[0])
    first = await _the_one_trial(stores)
    view = await stores[1].report_trial(P, first, success=True, **VERDICT)  # type: ignore[arg-type]
    assert view.state is SharedState.HALF_OPEN and view.trial_successes == 1
    second = await _the_one_trial(stores)
    await stores[2].report_trial(P, second, success=True, **VERDICT)  # type: ignore[arg-type]
    for store in stores:
        assert (await store.read(P)).state is SharedState.CLOSED


async def test_a_late_verdict_from_an_older_generation_changes_nothing(clients: Clients) -> None:
    """A trial that reports after the record moved on (an operator reset) is ignored."""
    first, second = fleet(clients, 2)
    await first.open(P, 0.1)
    await _until_half_open(first)
    trial = await _the_one_trial([first, second])
    reset = await second.reset(P)
    late = await first.report_trial(P, trial, success=False, **VERDICT)  # type: ignore[arg-type]
    assert late == reset
    assert late.state is SharedState.CLOSED


async def test_a_vanished_trial_holder_frees_the_trial_after_its_lease(clients: Clients) -> None:
    """The winner never reports (its pod died): after the lease another sidecar runs the trial."""
    stores = fleet(clients, 2)
    await stores[0].open(P, 0.1)
    await _until_half_open(stores[0])
    await _the_one_trial(stores, lease=0.3)
    assert isinstance(await stores[1].try_trial(P, lease=0.3), SharedBreakerView)
    await eventually(lambda: stores[1].try_trial(P, lease=5), until=lambda answer: isinstance(answer, Trial),
                     timeout=2.0, interval=0.02, what="the trial free again")


async def test_reads_can_be_cached_for_a_short_while(clients: Clients) -> None:
    """With max_age, a recent read is reused; past it, the record is read again."""
    loop = asyncio.get_running_loop()
    reader = SharedBreakers(clients(), clock=loop.time)
    opener = SharedBreakers(clients())
    assert (await reader.read(P, max_age=0.3)).state is SharedState.CLOSED
    await opener.open(P, 5)
    assert (await reader.read(P, max_age=0.3)).state is SharedState.CLOSED
    await asyncio.sleep(0.35)
    assert (await reader.read(P, max_age=0.3)).state is SharedState.OPEN


async def test_redis_down_is_a_typed_fast_failure(
    clients: Clients, redis_server: RedisServer
) -> None:
    """With Redis gone every operation raises FleetUnavailable within the timeout."""
    (store,) = fleet(clients, 1)
    await store.open(P, 1)
    redis_server.kill()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(FleetUnavailable):
        await store.read(P)
    with pytest.raises(FleetUnavailable):
        await store.try_trial(P, lease=1)
    assert loop.time() - started < 1.0


async def test_after_a_redis_restart_one_failure_retires_every_stale_connection(
    clients: Clients, redis_server: RedisServer
) -> None:
    """The connection dies with Redis: one read fails, then four reads at once all succeed."""
    store = SharedBreakers(clients())
    await asyncio.gather(*(store.read(P) for _ in range(4)))  # the connection is up and idle
    redis_server.kill()
    with pytest.raises(FleetUnavailable):
        await store.read(P)
    await redis_server.start()
    views = await asyncio.gather(*(store.read(P) for _ in range(4)), return_exceptions=True)
    assert [type(v).__name__ for v in views] == ["SharedBreakerView"] * 4
