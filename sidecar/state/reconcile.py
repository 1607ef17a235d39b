"""Finding out from Replicate whether a request whose outcome is unknown created a job.

Replicate lists an account's predictions (and trainings) newest first, 100 a page, with a ``next``
URL::

    {"next": "https://api.replicate.com/v1/predictions?cursor=..." | null, "previous": ...,
     "results": [{"id", "model", "version", "input", "status", "created_at": "...Z", "urls", ...}]}

A job created after the send (less ``skew`` for the two clocks) with the same version, or the same
model, and the same input is ours; once the list reaches jobs older than that, there is none.
When several match, the one created first after the send is taken. ``ReplicateMatcher`` decides
page by page, without I/O; ``reconcile_replicate`` fetches the pages through a callable the caller
provides, which must send the target to the provider's upstream (it only ever gets a path and query,
never another host).
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from .records import StoredResponse

__all__ = [
    "DEFAULT_SKEW",
    "Fetch",
    "MatchStep",
    "PageVerdict",
    "ReconcileOutcome",
    "Reconciliation",
    "ReplicateJob",
    "ReplicateMatcher",
    "parse_created_at",
    "reconcile_replicate",
    "replayable_job",
    "replicate_job",
    "target_of",
]

DEFAULT_SKEW = 5.0
Fetch = Callable[[str], Awaitable[tuple[int, Any]]]

_CREATE_FORMS = (
    (re.compile(r"/v1/predictions"), "/v1/predictions"),
    (re.compile(r"/v1/models/(?P<model>[^/]+/[^/]+)/predictions"), "/v1/predictions"),
    (re.compile(r"/v1/deployments/[^/]+/[^/]+/predictions"), "/v1/predictions"),
    (re.compile(r"/v1/models/(?P<model>[^/]+/[^/]+)/versions/(?P<version>[^/]+)/trainings"), "/v1/trainings"),
)


@dataclass(frozen=True, slots=True)
class ReplicateJob:
    """What identifies the job a create request asked for."""

    list_path: str  # where such jobs are listed
    model: str | None  # "owner/name"
    version: str | None  # the version id (the part after ":" in "owner/name:id")
    input: Any  # the request's "input", as JSON


def replicate_job(path: str, body: bytes) -> ReplicateJob | None:
    """The job a create request describes; None when the path or body is not one Replicate lists."""
    found = next(
        ((m, listed) for pattern, listed in _CREATE_FORMS if (m := pattern.fullmatch(path.rstrip("/")))),
        None,
    )
    if found is None:
        return None
    match, list_path = found
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or "input" not in payload:
        return None
    groups = match.groupdict()
    model, version = groups.get("model"), groups.get("version")
    ref = payload.get("version")
    if isinstance(ref, str):  # "id", "owner/name:id" or (newer API) "owner/name"
        named, colon, vid = ref.rpartition(":")
        if colon:
            model, version = named, vid
        elif "/" in ref:
            model = ref
        else:
            version = ref
    return ReplicateJob(list_path, model, version, payload["input"])


def parse_created_at(value: object) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp ("2024-05-01T12:00:00.123456Z"); None if unreadable."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\.\d{6})\d+", r"\1", value.strip()).replace("Z", "+00:00")  # ns -> us
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class MatchStep(enum.Enum):
    MATCH = "match"
    CONTINUE = "continue"  # fetch ``next``
    NO_MATCH = "no_match"


@dataclass(frozen=True, slots=True)
class PageVerdict:
    step: MatchStep
    job: Mapping[str, Any] | None = None
    next_url: str | None = None


class ReplicateMatcher:
    """Feed it the list pages in order; it says match, keep paging, or no match."""

    def __init__(self, job: ReplicateJob, sent_at: float, *, skew: float = DEFAULT_SKEW) -> None:
        self.job = job
        self.since = sent_at - skew
        self.best: Mapping[str, Any] | None = None  # the earliest match seen so far

    def feed(self, page: Any) -> PageVerdict:
        """Raises ``ValueError`` for a page that is not a Replicate list."""
        if not isinstance(page, dict) or not isinstance(page.get("results"), list):
            raise ValueError("not a Replicate list page (no results list)")
        reached_older = False
        for item in page["results"]:
            if not isinstance(item, dict):
                raise ValueError("a result that is not an object")
            created = parse_created_at(item.get("created_at"))
            if created is not None and created < self.since:
                reached_older = True  # newest first: every later item is older still
                break
            if created is not None and self._same_job(item):
                self.best = item
        next_url = page.get("next")
        if reached_older or not isinstance(next_url, str) or not next_url:
            return PageVerdict(MatchStep.MATCH, self.best) if self.best else PageVerdict(MatchStep.NO_MATCH)
        return PageVerdict(MatchStep.CONTINUE, next_url=next_url)

    def _same_job(self, item: Mapping[str, Any]) -> bool:
        job = self.job
        if job.version is not None:
            if item.get("version") != job.version:
                return False
        elif job.model is not None and item.get("model") != job.model:
            return False
        return bool(item.get("input") == job.input)


class ReconcileOutcome(enum.Enum):
    MATCH = "match"  # the job exists: store it as the answer
    NO_MATCH = "no_match"  # no job was created: the key is free
    INCONCLUSIVE = "inconclusive"  # couldn't tell (an error, a strange page, too many pages)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    outcome: ReconcileOutcome
    job: Mapping[str, Any] | None = None
    pages: int = 0
    detail: str | None = None


def target_of(url: str) -> str:
    """Path and query of a ``next`` URL: the fetch never goes to a host the page names."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def reconcile_replicate(
    fetch: Fetch,
    job: ReplicateJob,
    sent_at: float,
    *,
    skew: float = DEFAULT_SKEW,
    max_pages: int = 20,
) -> Reconciliation:
    """Page through the list (from ``created_after`` the send, less skew) until the matcher decides."""
    matcher = ReplicateMatcher(job, sent_at, skew=skew)
    since = datetime.fromtimestamp(sent_at - skew, UTC).isoformat(timespec="microseconds")
    target = f"{job.list_path}?{urlencode({'created_after': since.replace('+00:00', 'Z')})}"
    for page in range(1, max_pages + 1):
        try:
            status, body = await fetch(target)
        except Exception as e:  # any failure to ask means we can't tell: the outcome stays unknown
            return _inconclusive(page, f"{target}: {e!r}")
        if status != 200:
            return _inconclusive(page, f"{target}: status {status}")
        try:
            verdict = matcher.feed(body)
        except ValueError as e:
            return _inconclusive(page, f"{target}: {e}")
        if verdict.step is MatchStep.MATCH:
            return Reconciliation(ReconcileOutcome.MATCH, verdict.job, pages=page)
        if verdict.step is MatchStep.NO_MATCH:
            return Reconciliation(ReconcileOutcome.NO_MATCH, pages=page)
        assert verdict.next_url is not None
        target = target_of(verdict.next_url)
    return _inconclusive(max_pages, f"no decision within {max_pages} pages")


def _inconclusive(pages: int, detail: str) -> Reconciliation:
    return Reconciliation(ReconcileOutcome.INCONCLUSIVE, pages=pages, detail=detail)


def replayable_job(job: Mapping[str, Any]) -> StoredResponse:
    """The stored answer for a reconciled job: a 201 with its JSON, as a create would have returned."""
    body = json.dumps(job, separators=(",", ":")).encode()
    return StoredResponse(201, (("Content-Type", "application/json"),), body)
