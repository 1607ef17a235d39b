"""Paid jobs are created once: creates_job requests through the ledger, against a real fake provider."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from sidecar.config import LedgerConfig, RateLimitConfig, Timeouts
from sidecar.state import fingerprint
from sidecar.web.app import SERVICES

from ..support.fake_provider import FakeProvider, Reply
from ..support.raw_http import raw_http
from .jobs_support import CREATE, counted, job_config, job_route, post, store_of, until

CREATED = Reply(status=201, body=b'{"id": "job-1", "status": "starting"}',
                headers={"Content-Type": "application/json", "X-Up": "a", "Set-Cookie": "s=1"})


async def test_a_repeat_gets_the_stored_answer_byte_for_byte(fake: FakeProvider, sidecar) -> None:
    """The first request is forwarded once; its repeat gets status, headers and body as stored."""
    fake.then(CREATED)
    client = await sidecar(job_config(fake.url))
    status, first, body = await post(client, "k-1")
    assert (status, body) == (201, CREATED.body)
    status2, again, body2 = await post(client, "k-1")
    assert (status2, body2) == (201, CREATED.body)
    assert len(fake.seen) == 1
    assert fake.seen[0].headers["Idempotency-Key"] == "k-1"  # forwarded: harmless, and in their logs
    assert again["X-Sidecar-Replayed"] == "true" and "X-Sidecar-Replayed" not in first
    assert again["X-Sidecar-Attempts"] == "0" and first["X-Sidecar-Attempts"] == "1"
    assert again["X-Request-Id"] != first["X-Request-Id"]
    assert (again["X-Up"], again["Set-Cookie"], again["Content-Type"]) == ("a", "s=1", "application/json")
    assert (counted(client, "first"), counted(client, "replayed")) == (1, 1)


async def test_the_same_key_with_another_body_is_422(fake: FakeProvider, sidecar) -> None:
    """A key reused for a different request is refused without reaching the provider."""
    client = await sidecar(job_config(fake.url))
    assert (await post(client, "k", body=b'{"input": 1}'))[0] == 200
    status, headers, _ = await post(client, "k", body=b'{"input": 2}')
    assert status == 422 and headers["X-Sidecar-Error"] == "idempotency_key_reused"
    assert len(fake.seen) == 1 and counted(client, "reused") == 1


async def test_a_repeat_while_the_first_is_in_flight_waits_and_gets_its_answer(
    fake: FakeProvider, sidecar
) -> None:
    """Two requests with one key at once: the provider sees one, both clients get the same answer."""
    hold = asyncio.Event()
    fake.then(Reply(status=201, body=b'{"id": "j"}', hold=hold))
    client = await sidecar(job_config(fake.url))
    first = asyncio.create_task(post(client, "same"))
    await until(lambda: len(fake.seen) == 1)
    second = asyncio.create_task(post(client, "same"))
    await until(lambda: counted(client, "first") == 1)
    await asyncio.sleep(0.05)  # the second is now waiting on the record
    hold.set()
    a, b = await first, await second
    assert (a[0], a[2]) == (b[0], b[2]) == (201, b'{"id": "j"}')
    assert b[1]["X-Sidecar-Replayed"] == "true"
    assert len(fake.seen) == 1 and counted(client, "coalesced") == 1


async def test_a_repeat_that_outwaits_its_total_is_409_in_flight(fake: FakeProvider, sidecar) -> None:
    """A key held in flight (by another sidecar) past the repeat's timeouts.total: 409 with Retry-After."""
    route = job_route(timeouts=Timeouts(connect=1.0, attempt=1.0, total=0.3))
    client = await sidecar(job_config(fake.url, route=route))
    body = b'{"input": 1}'
    # Held under the fingerprint of the request below, so that request is a repeat, not a reuse.
    claim = await store_of(client).claim("jobs", "held", fingerprint("POST", "/v1/create", "", body))
    assert claim.claimed
    loop = asyncio.get_running_loop()
    started = loop.time()
    status, headers, _ = await post(client, "held", body=body)
    assert status == 409 and headers["X-Sidecar-Error"] == "idempotency_in_flight"
    assert int(headers["Retry-After"]) >= 1
    assert 0.25 <= loop.time() - started < 2.0
    assert fake.seen == [] and counted(client, "in_flight") == 1


async def test_an_answer_over_the_stored_limit_is_409_replay_unavailable(
    fake: FakeProvider, sidecar
) -> None:
    """The client gets the whole large answer; a repeat learns its status but not its body."""
    fake.then(Reply(status=201, stream_bytes=3 * 1024 * 1024))
    client = await sidecar(job_config(fake.url, ledger=LedgerConfig(backend="memory", max_stored_body=1024)))
    status, _, body = await post(client, "big")
    assert status == 201 and len(body) == 3 * 1024 * 1024
    status, headers, body = await post(client, "big")
    assert status == 409 and headers["X-Sidecar-Error"] == "idempotency_replay_unavailable"
    assert "201" in json.loads(body)["detail"] and json.loads(body)["original_status"] == 201
    record = await store_of(client).get("jobs", "big")
    assert record.response.body is None and record.response.body_too_large
    assert len(fake.seen) == 1


@pytest.mark.parametrize("reply", [
    Reply(reset=True),
    Reply(delay=2.0),
], ids=["reset", "timeout"])
async def test_a_request_sent_without_an_answer_is_unknown_and_never_resent(
    fake: FakeProvider, sidecar, reply: Reply
) -> None:
    """Written and no response head: the sidecar's 502/504 says outcome unknown; a repeat is 409."""
    fake.then(reply)
    route = job_route(timeouts=Timeouts(connect=1.0, attempt=0.5, total=1.0))
    client = await sidecar(job_config(fake.url, route=route))
    status, headers, _ = await post(client, "lost")
    assert status in (502, 504) and headers["X-Sidecar-Outcome"] == "unknown"
    status, headers, _ = await post(client, "lost")
    assert status == 409 and headers["X-Sidecar-Error"] == "outcome_unknown"
    assert len(fake.seen) == 1 and counted(client, "unknown") == 1


@pytest.mark.parametrize("code", [500, 502, 504, 408, 409, 425])
async def test_a_status_that_may_hide_a_job_is_unknown(fake: FakeProvider, sidecar, code: int) -> None:
    """The provider's own status comes back with X-Sidecar-Outcome: unknown, and is never retried."""
    fake.then(Reply(status=code, body=b"gateway"))
    client = await sidecar(job_config(fake.url))
    status, headers, body = await post(client, "maybe")
    assert (status, body, headers["X-Sidecar-Outcome"]) == (code, b"gateway", "unknown")
    assert headers["X-Sidecar-Attempts"] == "1"
    assert (await post(client, "maybe"))[0] == 409
    assert len(fake.seen) == 1


@pytest.mark.parametrize("code", [429, 503])
async def test_not_now_frees_the_key(fake: FakeProvider, sidecar, code: int) -> None:
    """429 and 503 took no job: the answer passes through and the same key is forwarded again."""
    fake.then(Reply(status=code), Reply(status=201, body=b"made"))
    client = await sidecar(job_config(fake.url))
    status, headers, _ = await post(client, "later")
    assert status == code and "X-Sidecar-Outcome" not in headers
    assert (await post(client, "later"))[:3:2] == (201, b"made")
    assert len(fake.seen) == 2 and counted(client, "released") == 1


async def test_nothing_sent_frees_the_key(fake: FakeProvider, sidecar) -> None:
    """An open breaker (attempts 0) and a refused connection (nothing written) drop the claim."""
    client = await sidecar(job_config(fake.url))
    breaker = client.app[SERVICES].registry.providers["jobs"].breaker
    breaker.force_open()
    status, headers, _ = await post(client, "free")
    assert status == 503 and headers["X-Sidecar-Attempts"] == "0"
    assert "X-Sidecar-Outcome" not in headers
    breaker.reset()
    assert (await post(client, "free"))[0] == 200
    assert len(fake.seen) == 1 and counted(client, "released") == 1


async def test_a_refused_connection_is_not_sent(sidecar) -> None:
    """Connection refused: the attempt counts, but nothing was written, so the key is free again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    client = await sidecar(job_config(f"http://127.0.0.1:{closed}"))
    status, headers, _ = await post(client, "refused")
    assert status == 502 and headers["X-Sidecar-Attempts"] == "1"
    assert "X-Sidecar-Outcome" not in headers
    assert await store_of(client).get("jobs", "refused") is None


@pytest.mark.parametrize("key", [b"x" * 256, b"tab\tkey", "caf\u00e9".encode(), b""],
                         ids=["256-chars", "tab", "non-ascii", "empty"])
async def test_a_malformed_key_is_400(fake: FakeProvider, sidecar, key: bytes) -> None:
    """Idempotency-Key must be 1..255 printable ASCII characters on a creates_job route."""
    client = await sidecar(job_config(fake.url))
    data = await raw_http(client.port, (
        b"POST " + CREATE.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Idempotency-Key: " + key + b"\r\nContent-Length: 2\r\n\r\n{}"))
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert b"bad_request" in data and b"Idempotency-Key" in data and fake.seen == []


@pytest.mark.parametrize("control", [b"\x01", b"\x7f"], ids=["soh", "delete"])
async def test_a_key_with_a_control_character_never_reaches_the_provider(
    fake: FakeProvider, sidecar, control: bytes
) -> None:
    """aiohttp's parser already refuses C0 controls in a header value: 400, nothing forwarded."""
    client = await sidecar(job_config(fake.url))
    data = await raw_http(client.port, (
        b"POST " + CREATE.encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Idempotency-Key: bad" + control + b"key\r\nContent-Length: 2\r\n\r\n{}"))
    assert data.split(b" ", 2)[1] == b"400" and fake.seen == []


async def test_255_printable_characters_are_a_key(fake: FakeProvider, sidecar) -> None:
    """The longest key, spaces and punctuation included, is accepted and recorded."""
    client = await sidecar(job_config(fake.url))
    key = ("a b~!" * 51)[:255]
    assert (await post(client, key))[0] == 200
    assert (await store_of(client).get("jobs", key)) is not None


async def test_keyless_repeats_within_the_window_are_one_job(fake: FakeProvider, sidecar) -> None:
    """With idempotency_window, identical keyless requests are one job; a different body is another."""
    client = await sidecar(job_config(fake.url, route=job_route(idempotency_window=10.0)))
    assert (await post(client, body=b"A"))[0] == 200
    status, headers, _ = await post(client, body=b"A")
    assert status == 200 and headers["X-Sidecar-Replayed"] == "true"
    assert (await post(client, body=b"B"))[0] == 200
    assert len(fake.seen) == 2


async def test_without_a_key_or_window_a_create_is_forwarded_once_unprotected(
    fake: FakeProvider, sidecar
) -> None:
    """No key, no window: forwarded as before, never retried, no ledger record."""
    fake.then(Reply(status=503), Reply(status=201))
    client = await sidecar(job_config(fake.url))
    assert (await post(client))[0] == 503
    assert len(fake.seen) == 1 and counted(client, "first") == 0


async def test_keyed_retries_only_with_native_idempotency(fake: FakeProvider, sidecar) -> None:
    """A provider that honours the key itself gets keyed retries, each carrying the key."""
    fake.then(Reply(status=503), Reply(status=201, body=b"ok"))
    client = await sidecar(job_config(fake.url, native_idempotency=True))
    status, headers, body = await post(client, "native")
    assert (status, body, headers["X-Sidecar-Attempts"]) == (201, b"ok", "2")
    assert [s.headers["Idempotency-Key"] for s in fake.seen] == ["native", "native"]


async def test_without_native_idempotency_a_keyed_create_is_sent_once(
    fake: FakeProvider, sidecar
) -> None:
    """The same 503 on a provider without native idempotency: one attempt, the key freed."""
    fake.then(Reply(status=503), Reply(status=201))
    client = await sidecar(job_config(fake.url))
    status, headers, _ = await post(client, "once")
    assert (status, headers["X-Sidecar-Attempts"]) == (503, "1")
    assert len(fake.seen) == 1


async def test_idempotency_series_start_at_zero(fake: FakeProvider, sidecar) -> None:
    """Every result of a provider with a creates_job route is exported from the start."""
    client = await sidecar(job_config(fake.url))
    text = client.app[SERVICES].metrics.render().decode()
    for result in ("first", "replayed", "coalesced", "in_flight", "reused", "unknown", "reconciled",
                   "released", "unprotected"):
        assert f'sidecar_idempotency_total{{provider="jobs",result="{result}"}} 0.0' in text
    assert (await post(client, "m"))[0] == 200
    text = client.app[SERVICES].metrics.render().decode()
    assert 'sidecar_ledger_duration_seconds_count{backend="memory",op="claim"} 1.0' in text


async def test_a_rate_limited_create_frees_its_key(fake: FakeProvider, sidecar) -> None:
    """429 rate_limited is answered before anything is sent: the claim is dropped, the key is free."""
    hold = asyncio.Event()
    fake.then(Reply(status=201, body=b"first", hold=hold), Reply(status=201, body=b"second"))
    limit = RateLimitConfig(concurrency=1, max_wait=0.0)
    client = await sidecar(job_config(fake.url, rate_limit=limit))
    first = asyncio.create_task(post(client, "a"))
    await until(lambda: len(fake.seen) == 1)
    status, headers, _ = await post(client, "b")
    assert status == 429 and headers["X-Sidecar-Error"] == "rate_limited"
    assert "X-Sidecar-Outcome" not in headers
    assert await store_of(client).get("jobs", "b") is None
    hold.set()
    assert (await first)[0] == 201
    assert (await post(client, "b"))[:3:2] == (201, b"second")
