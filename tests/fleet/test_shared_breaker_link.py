"""The link between a local breaker and the fleet's record, on a real redis-server that goes away."""

from __future__ import annotations

from collections.abc import Callable

from sidecar.config import BreakerConfig, RouteConfig
from sidecar.fleet.breaker import SharedBreakers
from sidecar.policy.breaker import BreakerState, CircuitBreaker, Outcome, Permit
from sidecar.providers.shared_breaker import Go, SharedBreaker
from sidecar.state.resp import RespClient
from tests.support.redis_server import RedisServer

from ..support.fakes import FakeClock

Clients = Callable[[], RespClient]  # a factory of separate clients, as separate sidecars have

ROUTE = RouteConfig(name="other", path="")
CONFIG = BreakerConfig(failure_threshold=1, minimum_calls=0, recovery_timeout=10.0, shared=True)


def _open(breaker: CircuitBreaker) -> None:
    permit = breaker.acquire()
    assert isinstance(permit, Permit)
    breaker.record(permit, Outcome.FAILURE)


async def test_an_opening_is_followed_by_the_other_sidecar(clients: Clients) -> None:
    """Sidecar one opens and publishes; sidecar two's next request follows the record."""
    clock = FakeClock()
    one = CircuitBreaker("p", CONFIG, clock=clock)
    two = CircuitBreaker("p", CONFIG, clock=clock)
    link_one = SharedBreaker("p", one, SharedBreakers(clients()), clock=clock, on_reachable=print)
    link_two = SharedBreaker("p", two, SharedBreakers(clients()), clock=clock, on_reachable=print)
    _open(one)
    await link_one.after(Go(), None)
    assert await link_two.before(ROUTE) == Go()
    assert two.state is BreakerState.OPEN


async def test_redis_gone_leaves_the_local_breaker_in_charge_with_a_backoff(
    clients: Clients, redis_server: RedisServer
) -> None:
    """Unreachable: requests go on with the local breaker, reported once; Redis is not asked again
    before the backoff ends, and its first answer is reported as restored."""
    clock = FakeClock()
    seen: list[bool] = []
    breaker = CircuitBreaker("p", CONFIG, clock=clock)
    link = SharedBreaker("p", breaker, SharedBreakers(clients()), clock=clock, on_reachable=seen.append)
    redis_server.kill()
    assert await link.before(ROUTE) == Go()
    assert await link.before(ROUTE) == Go()
    assert seen == [False]
    await redis_server.start()
    assert await link.before(ROUTE) == Go()  # within the 1 s backoff: Redis is not asked
    assert seen == [False]
    clock.advance(1.0)
    assert await link.before(ROUTE) == Go()
    assert seen == [False, True]
