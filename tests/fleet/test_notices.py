"""The notices subscriber on a real redis-server: what is published reaches it, a lost
subscription is said at once and made again."""

from __future__ import annotations

import signal
from collections.abc import Callable

from sidecar.fleet.notices import Notices
from sidecar.state.resp import RespClient
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer

CHANNEL = "sidecar:notices"


async def test_a_published_key_is_heard_and_a_lost_subscription_said_and_made_again(
    redis_server: RedisServer, clients: Callable[[], RespClient]
) -> None:
    heard: list[str] = []
    downs: list[bool] = []
    notices = Notices(redis_server.url, CHANNEL, timeout=0.25, on_notice=heard.append,
                      on_down=lambda: downs.append(True), retry_every=0.05)
    admin = clients()
    try:
        assert not notices.live
        notices.start()
        await eventually(lambda: notices.live, timeout=3, what="subscribed")
        await admin.execute("PUBLISH", CHANNEL, "sidecar:{replicate}:pause")
        await eventually(lambda: heard, timeout=2, what="the notice heard")
        assert heard == ["sidecar:{replicate}:pause"]
        await admin.execute("CLIENT", "KILL", "TYPE", "pubsub")
        await eventually(lambda: downs, timeout=2, what="the lost subscription said")
        await eventually(lambda: notices.live, timeout=3, what="subscribed again")
        await admin.execute("PUBLISH", CHANNEL, "sidecar:{replicate}:aimd")
        await eventually(lambda: len(heard) == 2, timeout=2, what="heard again")
    finally:
        await notices.aclose()
    assert not notices.live


async def test_while_redis_is_down_it_is_not_live_and_comes_back_with_it(
    redis_server: RedisServer,
) -> None:
    notices = Notices(redis_server.url, CHANNEL, timeout=0.25, on_notice=lambda key: None,
                      on_down=lambda: None, retry_every=0.05)
    try:
        notices.start()
        await eventually(lambda: notices.live, timeout=3, what="subscribed")
        redis_server.kill()
        await eventually(lambda: not notices.live, timeout=2, what="down with Redis")
        await redis_server.start()
        await eventually(lambda: notices.live, timeout=5, what="back with Redis")
    finally:
        await notices.aclose()


async def test_a_subscription_that_stops_answering_is_dropped_by_its_keepalive(
    redis_server: RedisServer,
) -> None:
    """Redis frozen (SIGSTOP): nothing closes the connection, the unanswered PING ends it."""
    downs: list[bool] = []
    notices = Notices(redis_server.url, CHANNEL, timeout=0.25, on_notice=lambda key: None,
                      on_down=lambda: downs.append(True), retry_every=0.05, keepalive=0.1)
    assert redis_server.proc is not None
    try:
        notices.start()
        await eventually(lambda: notices.live, timeout=3, what="subscribed")
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            await eventually(lambda: downs, timeout=3, what="the silent subscription dropped")
            assert not notices.live
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        await eventually(lambda: notices.live, timeout=5, what="subscribed again")
    finally:
        await notices.aclose()
