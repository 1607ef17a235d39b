"""Stores under faults: Redis dying and coming back, a Redis that never answers, SQLite across a crash."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.state import RecordState, RedisStore, SqliteStore, StoredResponse, StoreUnavailable
from sidecar.state.reconnect import ReconnectGate
from tests.support.fakes import FakeClock
from tests.support.ledger_backends import EPOCH, RecordingObserver
from tests.support.polling import eventually
from tests.support.redis_server import RedisServer

FP = "f" * 64
OTHER_FP = "e" * 64


async def test_redis_outage_fails_fast_and_the_same_store_recovers(redis_server: RedisServer) -> None:
    """Redis killed: every call raises StoreUnavailable within a second; restarted: the store works again."""
    observer = RecordingObserver()
    store = RedisStore(redis_server.url, instance_id="pod-a", prefix="t:", op_timeout=0.5,
                       connect_timeout=0.5, observer=observer)
    await store.start()
    before = (await store.claim("replicate", "before", FP)).record
    redis_server.kill()
    loop = asyncio.get_running_loop()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.claim("replicate", "during", FP),
        lambda: store.get("replicate", "before"),
        lambda: store.complete("replicate", "before", before.claim_id, StoredResponse(200, (), b"")),
        lambda: store.mark_unknown("replicate", "before", before.claim_id),
        lambda: store.release("replicate", "before"),
        lambda: store.list(),
        lambda: store.adopt_orphans("pod-a"),
        store.ping,
    ]
    for call in calls:
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await call()
        assert loop.time() - started < 1.0
    health = await store.health()
    assert not health.ok and health.error
    failed = [e for e in observer.events if e.error]
    assert {e.op for e in failed} >= {"claim", "get", "complete", "ping"}
    assert {(e.backend, e.error) for e in failed} == {("redis", "StoreUnavailable")}

    await redis_server.start()
    after = await eventually(lambda: store.claim("replicate", "after", FP),
                             timeout=10, interval=0.05, retry_on=(StoreUnavailable,))
    assert after.claimed
    assert await store.get("replicate", "after") == after.record
    assert await store.get("replicate", "before") is None  # the test server keeps nothing on disk
    assert (await store.health()).ok
    await store.close()


async def test_after_a_redis_restart_one_failure_retires_every_stale_connection(
    redis_server: RedisServer,
) -> None:
    """The connection dies with Redis; after one failure and one probe, four calls all succeed."""
    store = RedisStore(redis_server.url, instance_id="pod-a", prefix="t:", op_timeout=0.5,
                       connect_timeout=0.5, gate=ReconnectGate(base=0.0, cap=0.0))
    await store.start()
    await asyncio.gather(*(store.ping() for _ in range(4)))  # the connection is up and idle
    redis_server.kill()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    await redis_server.start()
    await store.ping()  # the gate lets one probe through; it connects again
    results = await asyncio.gather(*(store.claim("replicate", f"k{i}", FP) for i in range(4)),
                                   return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["Claim"] * 4
    await store.close()


async def test_a_frozen_redis_times_out_and_its_late_replies_are_never_misread(
    redis_server: RedisServer,
) -> None:
    """Redis stopped (SIGSTOP) mid-run: calls end at op_timeout; resumed, each call gets its own reply."""
    store = RedisStore(redis_server.url, instance_id="pod-a", prefix="t:", op_timeout=0.3,
                       connect_timeout=0.3)
    await store.start()
    first = (await store.claim("replicate", "first", FP)).record
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        with pytest.raises(StoreUnavailable):
            await store.get("replicate", "first")  # its reply comes only after SIGCONT
        assert loop.time() - started < 1.5
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    second = await eventually(lambda: store.claim("replicate", "second", OTHER_FP),
                             timeout=10, interval=0.05, retry_on=(StoreUnavailable,))
    assert second.claimed and second.record.fingerprint == OTHER_FP
    assert await store.get("replicate", "first") == first
    assert await store.get("replicate", "second") == second.record
    assert [r.key for r in await store.list()] == ["second", "first"]
    await store.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[int, list[int]]]:
    """A TCP server that accepts connections and never answers (a hung Redis); counts connections."""
    connections: list[int] = []
    writers: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writers.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], connections
    for w in writers:
        w.close()
    server.close()
    await server.wait_closed()


async def test_a_redis_that_never_answers_costs_one_timeout_then_fails_fast(
    silent_server: tuple[int, list[int]],
) -> None:
    """The first call ends at op_timeout; the next ones fail at once without a new connection."""
    port, connections = silent_server
    store = RedisStore(f"redis://127.0.0.1:{port}/0", instance_id="pod-a", op_timeout=0.3,
                       connect_timeout=0.3)
    await store.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StoreUnavailable):
        await store.claim("replicate", "k", FP)
    assert 0.25 <= loop.time() - started < 1.5
    assert len(connections) == 1
    started = loop.time()
    for _ in range(20):
        with pytest.raises(StoreUnavailable, match="reconnecting"):
            await store.get("replicate", "k")
    assert loop.time() - started < 0.3  # all twenty together within one op_timeout: none waited
    assert len(connections) == 1
    await store.close()


async def test_a_cancelled_probe_does_not_keep_the_store_shut(silent_server: tuple[int, list[int]]) -> None:
    """A probe cancelled by its caller gives no verdict; the next call probes again, not failing fast."""
    port, connections = silent_server
    gate_clock = FakeClock()
    store = RedisStore(f"redis://127.0.0.1:{port}/0", instance_id="pod-a", op_timeout=0.3,
                       connect_timeout=0.3, gate=ReconnectGate(base=1.0, clock=gate_clock))
    await store.start()
    with pytest.raises(StoreUnavailable, match="Timeout"):
        await store.get("replicate", "k")
    gate_clock.advance(1.0)
    probe = asyncio.create_task(store.get("replicate", "k"))
    await asyncio.sleep(0.05)  # the probe is waiting on the silent server
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    with pytest.raises(StoreUnavailable, match="Timeout"):  # a real attempt, not "reconnecting"
        await store.get("replicate", "k")
    assert len(connections) == 2  # the probe's connection, still open, carried the attempt
    await store.close()


CRASHING_SIDECAR = textwrap.dedent(
    """
    import asyncio, sys, time
    from sidecar.state import SqliteStore, StoredResponse

    async def main():
        store = SqliteStore(sys.argv[1], instance_id="pod-1", clock=lambda: 1_700_000_000.0)
        await store.start()
        await store.claim("replicate", "in-flight", "f" * 64)
        done = await store.claim("replicate", "done", "f" * 64)
        await store.complete("replicate", "done", done.record.claim_id,
                             StoredResponse(201, (("X-Id", "p1"),), b'{"id": "p1"}'))
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_sqlite_records_survive_a_crash_and_orphans_are_adopted(tmp_path: Path) -> None:
    """A sidecar killed by SIGKILL leaves its file; its successor replays done and adopts in_flight."""
    path = tmp_path / "ledger.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHING_SIDECAR, str(path), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
    finally:
        proc.kill()
        await proc.wait()
    store = SqliteStore(path, instance_id="pod-1", clock=FakeClock(EPOCH + 5))
    await store.start()
    done = await store.get("replicate", "done")
    assert done is not None and done.state is RecordState.DONE
    assert done.response == StoredResponse(201, (("X-Id", "p1"),), b'{"id": "p1"}')
    orphan = await store.get("replicate", "in-flight")
    assert orphan is not None and orphan.state is RecordState.IN_FLIGHT
    assert await store.adopt_orphans(store.instance_id) == 1
    adopted = await store.get("replicate", "in-flight")
    assert adopted is not None and adopted.state is RecordState.UNKNOWN
    assert not (await store.claim("replicate", "in-flight", FP)).claimed
    await store.close()


@pytest.mark.parametrize("setup", ["under_a_file", "not_a_database", "newer_schema"])
async def test_an_unusable_sqlite_file_is_store_unavailable(tmp_path: Path, setup: str) -> None:
    """A path that can't hold the file, a file that isn't SQLite, or a newer schema: start says so."""
    path = tmp_path / "ledger.sqlite3"
    if setup == "under_a_file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "ledger.sqlite3"
    elif setup == "not_a_database":
        path.write_bytes(b"this is not a database" * 100)
    else:
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 99")
        conn.close()
    store = SqliteStore(path, instance_id="pod-a")
    with pytest.raises(StoreUnavailable):
        await store.start()
    with pytest.raises(StoreUnavailable, match="not started"):
        await store.get("replicate", "k")


async def test_a_locked_sqlite_file_fails_within_the_busy_timeout(tmp_path: Path) -> None:
    """Another process holding the write lock makes a claim fail after busy_timeout, not hang."""
    path = tmp_path / "ledger.sqlite3"
    store = SqliteStore(path, instance_id="pod-a", busy_timeout=0.2)
    await store.start()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(StoreUnavailable, match="locked"):
        await store.claim("replicate", "k", FP)
    assert loop.time() - started < 2.0
    holder.execute("ROLLBACK")
    holder.close()
    assert (await store.claim("replicate", "k", FP)).claimed
    await store.close()


async def test_sqlite_purges_expired_rows_in_the_background(tmp_path: Path) -> None:
    """Expired rows leave the file on the purge interval, with no claim needed to trigger it."""
    clock = FakeClock(EPOCH)
    store = SqliteStore(tmp_path / "l.sqlite3", instance_id="pod-a", clock=clock, ttl=10, purge_interval=0.01)
    await store.start()
    for i in range(3):
        await store.claim("replicate", f"k{i}", FP)
    assert (await store.health()).entries == 3
    clock.advance(11)
    await eventually(store.health, until=lambda health: health.entries == 0, timeout=10,
                     what="expired rows purged")
    await store.close()
