"""The ledger around the request path: Replicate reconciliation, /admin/jobs, health, an unreachable store."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from urllib.parse import quote

import pytest

from sidecar.config import AuthHeader, LedgerConfig, RouteConfig, SidecarConfig, Timeouts
from sidecar.web.app import SERVICES

from ..support.configs import SECRET, provider
from ..support.fake_provider import FakeProvider, Reply
from ..support.fake_replicate_jobs import CreateMode, FakeReplicateJobs
from .jobs_support import FAST_RETRY, counted, job_config, post, store_of

BODY = json.dumps({"version": "v9", "input": {"prompt": "a cat"}}).encode()


@pytest.fixture
async def replicate() -> AsyncIterator[FakeReplicateJobs]:
    fake = await FakeReplicateJobs().start()
    yield fake
    await fake.close()


def replicate_config(upstream: str) -> SidecarConfig:
    route = RouteConfig(name="create_prediction", method="POST", path="/v1/predictions",
                        creates_job=True, retry=FAST_RETRY,
                        timeouts=Timeouts(connect=1.0, attempt=2.0, total=5.0))
    auth = (AuthHeader(header="Authorization", prefix="Bearer ", env="T", value=SECRET),)
    rep = provider("replicate", upstream, routes=(route,), auth=auth, reconcile="replicate")
    return SidecarConfig(providers={"replicate": rep}, ledger=LedgerConfig(backend="memory"))


async def create(client, key: str = "tg-1:make") -> tuple[int, object, bytes]:
    return await post(client, key, body=BODY, path="/replicate/v1/predictions")


async def test_a_lost_answer_is_found_in_the_list_and_replayed_as_201(
    replicate: FakeReplicateJobs, sidecar
) -> None:
    """The job exists (answer lost): the repeat asks the list, stores the prediction and replays it."""
    replicate.add_old("v9", {"prompt": "a cat"})  # same request long ago: not ours
    replicate.add_old("v9", {"prompt": "a dog"})
    replicate.script.append(CreateMode.CREATE_THEN_RESET)
    client = await sidecar(replicate_config(replicate.url))
    status, headers, _ = await create(client)
    assert status == 502 and headers["X-Sidecar-Outcome"] == "unknown"
    status, headers, body = await create(client)
    assert status == 201 and headers["X-Sidecar-Replayed"] == "true"
    job = json.loads(body)
    assert job["id"] == "p-2" and job["input"] == {"prompt": "a cat"}
    assert len(replicate.creates()) == 1
    lists = replicate.lists()
    assert lists and all(c.authorization == f"Bearer {SECRET}" for c in lists)
    assert lists[0].target.startswith("/v1/predictions?created_after=")
    assert counted(client, "reconciled", "replicate") == 1
    again = await create(client)
    assert again[0] == 201 and json.loads(again[2]) == job and len(replicate.lists()) == len(lists)


async def test_no_job_in_the_list_frees_the_key_and_forwards_the_repeat(
    replicate: FakeReplicateJobs, sidecar
) -> None:
    """Nothing was created (connection dropped first): the repeat is sent as a first request."""
    replicate.script.extend([CreateMode.RESET, CreateMode.ANSWER])
    client = await sidecar(replicate_config(replicate.url))
    assert (await create(client))[0] == 502
    status, headers, _ = await create(client)
    assert status == 201 and "X-Sidecar-Replayed" not in headers
    assert len(replicate.creates()) == 2 and counted(client, "released", "replicate") == 1


async def test_a_list_that_fails_leaves_the_outcome_unknown(
    replicate: FakeReplicateJobs, sidecar
) -> None:
    """Can't tell: 409 outcome_unknown, and the create is not sent again."""
    replicate.script.append(CreateMode.CREATE_THEN_RESET)
    replicate.list_fails = True
    client = await sidecar(replicate_config(replicate.url))
    assert (await create(client))[0] == 502
    status, headers, _ = await create(client)
    assert status == 409 and headers["X-Sidecar-Error"] == "outcome_unknown"
    assert len(replicate.creates()) == 1 and len(replicate.lists()) == 1


async def test_admin_lists_shows_and_releases_a_key(fake: FakeProvider, sidecar) -> None:
    """/admin/jobs: records without bodies, one by percent-encoded key, and release frees the key."""
    fake.then(Reply(status=500), Reply(status=201, body=b"made"))
    client = await sidecar(job_config(fake.url))
    key = "tg/42 make"
    assert (await post(client, key))[0] == 500
    async with client.get("/admin/jobs?provider=jobs") as resp:
        listed = await resp.json()
    assert resp.status == 200 and [j["key"] for j in listed["jobs"]] == [key]
    assert listed["jobs"][0]["state"] == "unknown" and "body" not in json.dumps(listed)
    path = f"/admin/jobs/jobs/{quote(key, safe='')}"
    async with client.get(path) as resp:
        assert resp.status == 200 and (await resp.json())["state"] == "unknown"
    assert (await post(client, key))[0] == 409
    async with client.post(path + "/release") as resp:
        assert (await resp.json())["released"] is True
    assert (await post(client, key))[:3:2] == (201, b"made")
    async with client.get("/admin/jobs/nobody/x") as resp:
        assert resp.status == 404 and (await resp.json())["error"] == "unknown_provider"
    async with client.get("/admin/jobs/jobs/absent") as resp:
        assert resp.status == 404
    assert counted(client, "released") == 1


async def test_admin_jobs_keeps_the_admin_access_rule(fake: FakeProvider, sidecar) -> None:
    """Without a token, /admin/jobs answers only on a loopback-bound listener; with one, needs it."""
    config = job_config(fake.url)
    open_listener = await sidecar(SidecarConfig(
        server=config.server.__class__(host="0.0.0.0"), providers=config.providers, ledger=config.ledger))
    async with open_listener.get("/admin/jobs") as resp:
        assert resp.status == 403
    async with open_listener.post("/admin/jobs/jobs/k/release") as resp:
        assert resp.status == 403
    tokened = await sidecar(config, environ={"SIDECAR_ADMIN_TOKEN": "t0k"})
    async with tokened.get("/admin/jobs") as resp:
        assert resp.status == 401
    async with tokened.get("/admin/jobs", headers={"Authorization": "Bearer t0k"}) as resp:
        assert resp.status == 200


async def test_health_shows_the_ledger(fake: FakeProvider, sidecar) -> None:
    """/health/detailed has a ledger object with backend, entries and the unprotected count."""
    client = await sidecar(job_config(fake.url))
    await post(client, "h")
    async with client.get("/health/detailed") as resp:
        body = await resp.json()
    assert body["status"] == "healthy"
    assert body["ledger"] == {"backend": "memory", "ok": True, "entries": 1, "evictions": 0,
                              "error": None, "unprotected": 0}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_ledger_forwards_unprotected_by_default(fake: FakeProvider, sidecar) -> None:
    """on_unavailable: forward sends the request, counts it, and health turns degraded."""
    ledger = LedgerConfig(backend="redis", url=f"redis://127.0.0.1:{_closed_port()}/0")
    client = await sidecar(job_config(fake.url, ledger=ledger))
    assert (await post(client, "u"))[0] == 200
    assert len(fake.seen) == 1 and counted(client, "unprotected") == 1
    async with client.get("/health/detailed") as resp:
        body = await resp.json()
    assert resp.status == 200 and body["status"] == "degraded"
    assert body["ledger"]["ok"] is False and body["ledger"]["unprotected"] == 1
    async with client.get("/health/ready") as resp:
        assert resp.status == 200  # the bot's other calls still flow: readiness is not the ledger's
    text = client.app[SERVICES].metrics.render().decode()
    assert 'sidecar_ledger_errors_total{backend="redis",op="claim"}' in text


async def test_an_unreachable_ledger_refuses_when_told_to(fake: FakeProvider, sidecar) -> None:
    """on_unavailable: refuse answers 503 ledger_unavailable without reaching the provider."""
    ledger = LedgerConfig(backend="redis", url=f"redis://127.0.0.1:{_closed_port()}/0",
                          on_unavailable="refuse")
    client = await sidecar(job_config(fake.url, ledger=ledger))
    status, headers, _ = await post(client, "r")
    assert status == 503 and headers["X-Sidecar-Error"] == "ledger_unavailable"
    assert fake.seen == []


async def test_thousands_of_keys_stay_within_max_entries(fake: FakeProvider, sidecar) -> None:
    """Distinct keys beyond max_entries evict the oldest records; the count is reported."""
    client = await sidecar(job_config(fake.url, ledger=LedgerConfig(backend="memory", max_entries=50)))
    for i in range(1200):
        assert (await post(client, f"k{i}"))[0] == 200
    health = await store_of(client).health()
    assert health.entries is not None and health.entries <= 50 and health.evictions >= 1150
