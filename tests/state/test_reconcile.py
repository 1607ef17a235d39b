"""Replicate reconciliation: reading create requests, matching list pages, and paging a fake Replicate."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pytest_aiohttp import AiohttpServer

from sidecar.state import (
    ReconcileOutcome,
    ReplicateJob,
    ReplicateMatcher,
    reconcile_replicate,
    replayable_job,
    replicate_job,
)
from sidecar.state.reconcile import MatchStep, parse_created_at, target_of
from tests.support.fake_replicate_listing import FakeReplicate, prediction
from tests.support.ports import free_port

SENT = 1_714_564_800.0  # 2024-05-01T12:00:00Z
JOB = ReplicateJob("/v1/predictions", model="acme/painter", version="v1", input={"prompt": "a cat"})


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(
    ("path", "payload", "expected"),
    [
        ("/v1/predictions", {"version": "v9", "input": {"a": 1}},
         ReplicateJob("/v1/predictions", None, "v9", {"a": 1})),
        ("/v1/predictions/", {"version": "acme/x:v9", "input": {}},
         ReplicateJob("/v1/predictions", "acme/x", "v9", {})),
        ("/v1/predictions", {"version": "acme/x", "input": []},
         ReplicateJob("/v1/predictions", "acme/x", None, [])),
        ("/v1/models/acme/x/predictions", {"input": {"p": "q"}},
         ReplicateJob("/v1/predictions", "acme/x", None, {"p": "q"})),
        ("/v1/deployments/acme/prod/predictions", {"input": {"p": "q"}},
         ReplicateJob("/v1/predictions", None, None, {"p": "q"})),
        ("/v1/models/acme/x/versions/v3/trainings", {"input": {"steps": 5}, "destination": "acme/y"},
         ReplicateJob("/v1/trainings", "acme/x", "v3", {"steps": 5})),
    ],
)
def test_every_create_form_names_its_job(path: str, payload: dict[str, Any], expected: ReplicateJob) -> None:
    """Version ids, owner/name:version refs, model and deployment routes, and trainings are all read."""
    assert replicate_job(path, body(payload)) == expected


@pytest.mark.parametrize(
    ("path", "raw"),
    [("/v1/predictions", b"not json"), ("/v1/predictions", b'{"version": "v1"}'), ("/v1/predictions", b"[1]"),
     ("/v1/files", b'{"input": {}}'), ("/v1/predictions/abc/cancel", b'{"input": {}}')],
)
def test_requests_that_are_not_creates_have_no_job(path: str, raw: bytes) -> None:
    """Bodies without an input object, and paths that create nothing, can't be reconciled."""
    assert replicate_job(path, raw) is None


@pytest.mark.parametrize(
    ("stamp", "epoch"),
    [("2024-05-01T12:00:00Z", SENT), ("2024-05-01T12:00:00.250000Z", SENT + 0.25),
     ("2024-05-01T12:00:00.250000123Z", SENT + 0.25), ("2024-05-01T14:00:00+02:00", SENT),
     ("2024-05-01T12:00:00", SENT), ("yesterday", None), (None, None), (17, None)],
)
def test_created_at_is_read_as_utc(stamp: object, epoch: float | None) -> None:
    """Z, offsets, nanoseconds and naive stamps (taken as UTC) parse; anything else is None."""
    assert parse_created_at(stamp) == epoch


def page(*results: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    return {"next": next_url, "previous": None, "results": list(results)}


def test_a_matching_prediction_after_the_send_is_the_job() -> None:
    """Same version and input, created after the send: a match once older predictions are reached."""
    matcher = ReplicateMatcher(JOB, SENT)
    verdict = matcher.feed(page(
        prediction("newer", SENT + 9, prompt="a dog"), prediction("ours", SENT + 1),
        prediction("old", SENT - 60), next_url="https://x/next",
    ))
    assert verdict.step is MatchStep.MATCH
    assert verdict.job is not None and verdict.job["id"] == "ours"


def test_the_first_match_after_the_send_wins_over_later_twins() -> None:
    """Two identical predictions after the send: the one created first is ours."""
    matcher = ReplicateMatcher(JOB, SENT)
    verdict = matcher.feed(page(prediction("twin", SENT + 5), prediction("ours", SENT + 0.5)))
    assert verdict.job is not None and verdict.job["id"] == "ours"


def test_it_keeps_paging_until_predictions_predate_the_send() -> None:
    """A page of newer predictions says continue with next; an older one ends with no match."""
    matcher = ReplicateMatcher(JOB, SENT)
    newer = prediction("n1", SENT + 30, prompt="x")
    first = matcher.feed(page(newer, next_url="https://api/next?cursor=2"))
    assert (first.step, first.next_url) == (MatchStep.CONTINUE, "https://api/next?cursor=2")
    second = matcher.feed(page(prediction("old", SENT - 30), next_url="https://api/next?cursor=3"))
    assert second.step is MatchStep.NO_MATCH


@pytest.mark.parametrize(
    ("item", "matches"),
    [
        (prediction("p", SENT + 1, version="v2"), False),  # another version of the model
        (prediction("p", SENT + 1, prompt="a dog"), False),  # another input
        (prediction("p", SENT - 4), True),  # within the clock skew allowance
        (prediction("p", SENT - 6), False),  # before the send, beyond the skew
        (prediction("p", SENT + 1, model="acme/other"), True),  # a named version decides alone
    ],
)
def test_what_counts_as_the_same_job(item: dict[str, Any], matches: bool) -> None:
    """Version (or else model) and input must agree, and the job must not predate the send less skew."""
    verdict = ReplicateMatcher(JOB, SENT, skew=5).feed(page(item))
    assert (verdict.step is MatchStep.MATCH) == matches


def test_model_requests_match_on_the_model() -> None:
    """A request by model (no version) matches any version of that model, not another model."""
    job = ReplicateJob("/v1/predictions", "acme/painter", None, {"prompt": "a cat"})
    any_version = page(prediction("p", SENT + 1, version="v7"))
    assert ReplicateMatcher(job, SENT).feed(any_version).step is MatchStep.MATCH
    other = page(prediction("p", SENT + 1, model="acme/other"))
    assert ReplicateMatcher(job, SENT).feed(other).step is MatchStep.NO_MATCH


@pytest.mark.parametrize("bad", [None, [], {"results": "x"}, {"results": [1]}])
def test_a_page_that_is_not_a_list_page_is_refused(bad: object) -> None:
    """Anything but {"results": [objects]} raises ValueError instead of guessing."""
    with pytest.raises(ValueError):
        ReplicateMatcher(JOB, SENT).feed(bad)


def test_next_urls_are_reduced_to_path_and_query() -> None:
    """The host of a next URL is never used: only its path and query are fetched."""
    assert target_of("https://evil.example/v1/predictions?cursor=abc") == "/v1/predictions?cursor=abc"
    assert target_of("/v1/predictions") == "/v1/predictions"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def fetcher(session: aiohttp.ClientSession, base: str) -> Any:
    async def fetch(target: str) -> tuple[int, Any]:
        async with session.get(base + target) as resp:
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, await resp.text()

    return fetch


def history(ours_at: float | None) -> list[dict[str, Any]]:
    """Eight predictions around the send (newest first in the fake), ours among them if given."""
    items = [prediction(f"new{i}", SENT + 100 - i, prompt=f"other {i}") for i in range(4)]
    if ours_at is not None:
        items.append(prediction("ours", ours_at))
    items += [prediction(f"old{i}", SENT - 100 - i) for i in range(4)]
    return items


async def test_the_driver_pages_to_the_job_and_asks_only_loopback(
    session: aiohttp.ClientSession, aiohttp_server: AiohttpServer
) -> None:
    """Ours is fifth newest: page 2 holds it; the fake saw created_after, then the cursor, nothing else."""
    fake = await FakeReplicate(history(ours_at=SENT + 2)).start(aiohttp_server)
    result = await reconcile_replicate(fetcher(session, fake.url), JOB, SENT)
    assert result.outcome is ReconcileOutcome.MATCH
    assert result.job is not None and result.job["id"] == "ours"
    assert result.pages == 2
    assert fake.asked == [
        "/v1/predictions?created_after=2024-05-01T11:59:55.000000Z",
        "/v1/predictions?cursor=2",
    ]
    stored = replayable_job(result.job)
    assert stored.status == 201
    assert stored.headers == (("Content-Type", "application/json"),)
    assert stored.body is not None and json.loads(stored.body)["id"] == "ours"


async def test_the_driver_stops_at_older_predictions_with_no_match(
    session: aiohttp.ClientSession, aiohttp_server: AiohttpServer
) -> None:
    """No job of ours: the driver stops on the page where predictions predate the send (page 3 unasked)."""
    fake = await FakeReplicate(history(ours_at=None)).start(aiohttp_server)
    result = await reconcile_replicate(fetcher(session, fake.url), JOB, SENT)
    assert (result.outcome, result.pages) == (ReconcileOutcome.NO_MATCH, 2)
    assert len(fake.asked) == 2


@pytest.mark.parametrize(("status", "raw"), [(500, "oops"), (200, "<html>not json</html>"), (401, "{}")])
async def test_the_driver_cannot_tell_when_a_page_fails(
    session: aiohttp.ClientSession, aiohttp_server: AiohttpServer, status: int, raw: str
) -> None:
    """An error status or a page that is not JSON on page 2 is inconclusive, naming the target."""
    fake = await FakeReplicate(history(ours_at=None)).start(aiohttp_server)
    fake.fail_page[2] = (status, raw)
    result = await reconcile_replicate(fetcher(session, fake.url), JOB, SENT)
    assert result.outcome is ReconcileOutcome.INCONCLUSIVE
    assert result.detail is not None and "cursor=2" in result.detail


async def test_the_driver_cannot_tell_when_the_provider_is_unreachable(
    session: aiohttp.ClientSession,
) -> None:
    """A fetch that raises (connection refused) is inconclusive, not an error for the caller."""
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = await reconcile_replicate(fetcher(session, base), JOB, SENT)
    assert result.outcome is ReconcileOutcome.INCONCLUSIVE
    assert result.detail is not None and "ClientConnectorError" in result.detail


async def test_the_driver_gives_up_after_max_pages(
    session: aiohttp.ClientSession, aiohttp_server: AiohttpServer
) -> None:
    """Pages of newer predictions without end: after max_pages it stops, inconclusive."""
    items = [prediction(f"new{i}", SENT + 1000 - i, prompt="busy") for i in range(30)]
    fake = await FakeReplicate(items).start(aiohttp_server)
    result = await reconcile_replicate(fetcher(session, fake.url), JOB, SENT, max_pages=4)
    assert (result.outcome, result.pages, len(fake.asked)) == (ReconcileOutcome.INCONCLUSIVE, 4, 4)
