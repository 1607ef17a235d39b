"""The job ledger across real sidecar processes: a shared Redis, a Redis outage, a SIGKILL mid-create."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import aiohttp

from tests.support.fake_provider import FakeProvider, Reply
from tests.support.fault_provider import FaultProvider, mix
from tests.support.polling import eventually
from tests.support.process import Sidecar, start_sidecar
from tests.support.redis_server import RedisServer

CONFIG = """\
providers:
  jobs:
    upstream: {upstream}
    routes:
      - {{name: create, method: POST, path: /v1/create, creates_job: true,
          timeouts: {{connect: 1s, attempt: {attempt}, total: {total}}}}}
ledger: {ledger}
"""


def config(upstream: str, ledger: str, attempt: str = "10s", total: str = "15s") -> str:
    return CONFIG.format(upstream=upstream, ledger=ledger, attempt=attempt, total=total)


async def post(sc: Sidecar, key: str, body: bytes = b'{"input": 1}') -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.post(
        f"{sc.proxy}/jobs/v1/create", data=body, headers={"Idempotency-Key": key},
        timeout=aiohttp.ClientTimeout(total=30),
    ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def test_two_sidecars_on_one_redis_send_a_key_once(
    redis_server: RedisServer, fake: FakeProvider, tmp_path: Path
) -> None:
    """The same key sent to two sidecars at once reaches the provider once; both get the same answer."""
    hold = asyncio.Event()
    fake.default = Reply(status=201, body=b'{"id": "only-one"}', hold=hold)
    ledger = f"{{backend: redis, url: '{redis_server.url}', prefix: 'two-{uuid.uuid4().hex[:6]}:'}}"
    text = config(fake.url, ledger)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = await start_sidecar(text, tmp_path / "a", env={"SIDECAR_INSTANCE_ID": "pod-a"})
    b = await start_sidecar(text, tmp_path / "b", env={"SIDECAR_INSTANCE_ID": "pod-b"})
    try:
        first = asyncio.ensure_future(post(a, "tg:1:avatar"))
        second = asyncio.ensure_future(post(b, "tg:1:avatar"))
        await eventually(lambda: len(fake.seen) == 1, timeout=10, what="the provider reached")
        await asyncio.sleep(0.3)  # time for the other one to reach the provider, if it would
        assert len(fake.seen) == 1
        hold.set()
        one, two = await first, await second
        assert (one[0], one[2]) == (two[0], two[2]) == (201, b'{"id": "only-one"}')
        assert {one[1].get("X-Sidecar-Replayed"), two[1].get("X-Sidecar-Replayed")} == {None, "true"}
        assert len(fake.seen) == 1
    finally:
        hold.set()
        await a.stop()
        await b.stop()


async def test_a_redis_outage_forwards_or_refuses_and_never_hangs(
    redis_server: RedisServer, fake: FakeProvider, tmp_path: Path
) -> None:
    """Redis killed mid-run: forward keeps serving (counted unprotected), refuse answers 503, both fast."""
    own_redis = redis_server
    base = f"backend: redis, url: '{own_redis.url}'"
    (tmp_path / "f").mkdir()
    (tmp_path / "r").mkdir()
    forward = await start_sidecar(config(fake.url, f"{{{base}, prefix: 'f:'}}", "2s", "3s"), tmp_path / "f")
    refuse = await start_sidecar(
        config(fake.url, f"{{{base}, prefix: 'r:', on_unavailable: refuse}}", "2s", "3s"), tmp_path / "r")
    loop = asyncio.get_running_loop()
    try:
        assert (await post(forward, "before"))[0] == 200
        assert (await post(forward, "before"))[1]["X-Sidecar-Replayed"] == "true"
        own_redis.kill()
        started = loop.time()
        status, _, _ = await post(forward, "during")
        assert status == 200 and loop.time() - started < 3.0
        started = loop.time()
        status, headers, _ = await post(refuse, "during")
        assert status == 503 and headers["X-Sidecar-Error"] == "ledger_unavailable"
        assert loop.time() - started < 3.0
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{forward.ops}/health/detailed") as resp:
                ledger = (await resp.json())["ledger"]
            async with session.get(f"{forward.ops}/metrics") as resp:
                metrics = await resp.text()
        assert ledger["ok"] is False and ledger["unprotected"] == 1
        assert 'sidecar_idempotency_total{provider="jobs",result="unprotected"} 1.0' in metrics
        await own_redis.start()

        async def ledger_ok() -> bool:
            async with aiohttp.ClientSession() as session, session.get(
                    f"{forward.ops}/health/detailed") as resp:
                return bool((await resp.json())["ledger"]["ok"])

        # the store reconnects on its own backoff (at most 2 s apart)
        await eventually(ledger_ok, timeout=15, interval=0.1, what="the ledger back")

        # Keys are protected again: a repeat is replayed. (A request racing the reconnection may
        # still go unprotected, so: a deadline.)
        tries = iter(range(10_000))

        async def repeat_answer() -> tuple[int, str | None]:
            key = f"after-{next(tries)}"
            await post(forward, key)
            status, headers, _ = await post(forward, key)
            return status, headers.get("X-Sidecar-Replayed")

        await eventually(repeat_answer, until=lambda seen: seen == (200, "true"), timeout=10,
                         interval=0.05, what="keys protected again after Redis came back")
    finally:
        await forward.stop()
        await refuse.stop()


async def test_a_sidecar_killed_mid_create_leaves_the_key_unknown(fake: FakeProvider, tmp_path: Path) -> None:
    """SIGKILL while the provider holds the create; restarted on the same SQLite file: 409, never resent."""
    hold = asyncio.Event()
    fake.default = Reply(status=201, body=b'{"id": "j"}', hold=hold)
    env = {"SIDECAR_STATE_DIR": str(tmp_path / "state"), "SIDECAR_INSTANCE_ID": "pod-1"}
    text = config(fake.url, "{backend: sqlite}")
    first = await start_sidecar(text, tmp_path, env=env)
    pending = asyncio.ensure_future(post(first, "tg:7:train"))
    try:
        await eventually(lambda: len(fake.seen) == 1, timeout=10, what="the provider reached")
        await first.kill()
        second = await start_sidecar(text, tmp_path, env=env)
        try:
            status, headers, _ = await post(second, "tg:7:train")
            assert status == 409 and headers["X-Sidecar-Error"] == "outcome_unknown"
            assert len(fake.seen) == 1
            adopted = second.events("ledger_started")
            assert adopted and adopted[0]["adopted_unknown"] == 1
        finally:
            await second.stop()
    finally:
        hold.set()
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


async def test_two_sidecars_under_load_with_faults_never_send_a_key_twice(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """1,500 paid creates from 100 clients, each key sent to both sidecars at once, against a provider
    that answers 10% 503, resets 2% and delays 20%: a key reaches the provider again only after the
    provider said "not now" (503) to it, and a key whose answer was lost (reset) never does."""
    provider = await FaultProvider(
        mix(status=0.10, reset=0.02, latency_ratio=0.2, latency=(0.001, 0.02))
    ).start()
    ledger = f"{{backend: redis, url: '{redis_server.url}', prefix: 'load-{uuid.uuid4().hex[:6]}:'}}"
    text = config(provider.url, ledger)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = await start_sidecar(text, tmp_path / "a", env={"SIDECAR_INSTANCE_ID": "pod-a"})
    b = await start_sidecar(text, tmp_path / "b", env={"SIDECAR_INSTANCE_ID": "pod-b"})
    keys = [f"tg:{n}:render" for n in range(1500)]
    answers: dict[str, list[int]] = {}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def send(sc: Sidecar, key: str) -> int:
                async with session.post(f"{sc.proxy}/jobs/v1/create", data=b'{"input": 1}',
                                        headers={"Idempotency-Key": key}) as resp:
                    await resp.read()
                    return resp.status

            async def worker() -> None:
                while keys:
                    key = keys.pop()
                    answers[key] = list(await asyncio.gather(send(a, key), send(b, key)))

            await asyncio.gather(*(worker() for _ in range(100)))
    finally:
        await a.stop()
        await b.stop()
        await provider.close()
    assert len(answers) == 1500
    sends: dict[str, list[str]] = {}
    for seen in provider.seen:
        if seen.idempotency_key is not None:
            sends.setdefault(seen.idempotency_key, []).append(seen.fault)
    assert set(sends) <= set(answers)
    resent = {key: faults for key, faults in sends.items() if len(faults) > 1}
    # Each earlier send of a key that went again was answered "not now" (its claim was dropped).
    assert all(set(faults[:-1]) == {"status"} for faults in resent.values()), resent
    assert all(len(faults) <= 2 for faults in sends.values())  # two callers per key at most
    assert sum(f == "reset" for faults in sends.values() for f in faults) > 0  # the faults happened
    assert sum(f == "status" for faults in sends.values() for f in faults) > 0


async def test_a_burst_of_repeats_is_answered_from_memory(
    redis_server: RedisServer, fake: FakeProvider, tmp_path: Path
) -> None:
    """Once a repeat met a settled answer, the next repeats of that key are answered from memory: they
    replay even while the ledger's Redis is down, a different body is still 422, and an operator's
    release on that sidecar forgets the answer at once."""
    fake.default = Reply(status=201, body=b'{"id": "p1"}')
    ledger = f"{{backend: redis, url: '{redis_server.url}', prefix: 'burst-{uuid.uuid4().hex[:6]}:'}}"
    sc = await start_sidecar(config(fake.url, ledger), tmp_path)
    try:
        for key in ("tg:7:render", "tg:8:render"):
            assert (await post(sc, key))[0] == 201
            assert (await post(sc, key))[1]["X-Sidecar-Replayed"] == "true"  # read from the store
        async with aiohttp.ClientSession() as session, session.post(
                f"{sc.ops}/admin/jobs/jobs/tg:8:render/release") as resp:
            assert resp.status == 200 and (await resp.json())["released"] is True
        redis_server.kill()
        status, headers, body = await post(sc, "tg:7:render")
        assert (status, headers["X-Sidecar-Replayed"], body) == (201, "true", b'{"id": "p1"}')
        assert (await post(sc, "tg:7:render", body=b'{"input": 2}'))[0] == 422
        assert len(fake.seen) == 2
        # The released key was forgotten here too: its repeat is not replayed from memory (the
        # ledger being down, it goes out unprotected, as on_unavailable: forward says).
        status, headers, _ = await post(sc, "tg:8:render")
        assert status == 201 and "X-Sidecar-Replayed" not in headers
        assert len(fake.seen) == 3
    finally:
        await sc.stop()
