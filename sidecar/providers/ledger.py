"""Paid jobs are created once: the job ledger on the request path of ``creates_job`` routes.

A keyed request (or, on a route with ``idempotency_window``, a keyless one, keyed by its
fingerprint) claims its key atomically. The first is forwarded once and settled from what came
back (``state.settle``); a repeat meets the record and gets the stored answer, waits for the one in
flight, or a 409/422 saying why not. An unknown outcome on a provider that can be asked (Replicate)
is reconciled before the repeat is answered. Every wait and store call is bounded by the request's
own ``timeouts.total``; when the store can't answer, ``on_unavailable`` decides.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiohttp import web

from ..errors import ErrorCode, SidecarError, to_response
from ..headers import ATTEMPTS, REQUEST_ID
from ..logs import get_logger
from ..state import (
    LedgerRecord,
    LedgerStore,
    Outcome,
    ReconcileOutcome,
    Reconciliation,
    RecordState,
    Repeat,
    StoredResponse,
    StoreError,
    classify_repeat,
    in_flight_is_stale,
    replayable_job,
)
from .tap import Tap

__all__ = ["OUTCOME", "REPLAYED", "STALE_MARGIN", "JobCounter", "JobLedger", "JobRequest"]

OUTCOME = "X-Sidecar-Outcome"
REPLAYED = "X-Sidecar-Replayed"
# A claim still in flight this long after the route's timeouts.total has lost its owner.
STALE_MARGIN = 30.0
_MAX_ROUNDS = 4  # claim, meet a record, see it released or reconciled away, claim again ...
_STORE_FAILED = (StoreError, TimeoutError)
T = TypeVar("T")

Send = Callable[[Tap | None], Awaitable[web.StreamResponse]]
Reconcile = Callable[[float, float], Awaitable[Reconciliation]]  # (sent_at, seconds left)


class JobCounter(Protocol):
    def count(self, provider: str, result: str) -> None:
        """Add one to ``sidecar_idempotency_total{provider, result}``."""


@dataclass(frozen=True, slots=True)
class JobRequest:
    """One request on a ``creates_job`` route, as the ledger sees it."""

    provider: str  # the provider's name (the metrics label)
    scope: str  # where the record lives: the provider, or its window scope for keyless repeats
    key: str
    fingerprint: str
    ttl: float | None  # the window for keyless repeats; None: ledger.ttl
    total: float  # the route's timeouts.total: every wait and store call fits in it
    request_id: str
    reconcile: Reconcile | None  # how to ask the provider about an unknown outcome


class JobLedger:
    """The ledger's request path over one store; ``unprotected`` counts requests sent without it."""

    def __init__(
        self,
        store: LedgerStore,
        counter: JobCounter,
        *,
        max_stored_body: int,
        refuse_when_unavailable: bool,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._counter = counter
        self.max_stored_body = max_stored_body
        self.refuse = refuse_when_unavailable
        self._wall = wall
        self.unprotected = 0
        self._log = get_logger("ledger")
        self._pending: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Let the settling calls of cancelled requests finish, then close the store."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.store.close()

    async def handle(self, job: JobRequest, send: Send) -> web.StreamResponse:
        """Forward ``job`` once through ``send``, or answer its repeat from the ledger."""
        deadline = asyncio.get_running_loop().time() + job.total
        met = False  # once a record was met, forwarding without the ledger could duplicate a job
        for _ in range(_MAX_ROUNDS):
            try:
                claim = await self._bounded(
                    deadline, self.store.claim(job.scope, job.key, job.fingerprint, ttl=job.ttl)
                )
            except _STORE_FAILED as exc:
                if met:
                    return self._store_failed(job, exc)
                return await self._unavailable(job, send, exc)
            if claim.claimed:
                return await self._first(job, claim.record.claim_id, send)
            met = True
            try:
                answer = await self._repeat(job, claim.record, deadline)
            except TimeoutError:
                break  # the request's own timeouts.total has passed
            except StoreError as exc:
                return self._store_failed(job, exc)
            if answer is not None:
                return answer
        self._count(job, "in_flight")
        return self._error(job, ErrorCode.IDEMPOTENCY_IN_FLIGHT,
                           "no settled answer for this key within the request's timeouts.total", 1.0)

    def _store_failed(self, job: JobRequest, exc: BaseException) -> web.Response:
        self._log.error("ledger_unavailable", provider=job.provider, request_id=job.request_id,
                        refused=True, error=str(exc) or type(exc).__name__)
        return self._error(job, ErrorCode.LEDGER_UNAVAILABLE,
                           "the job ledger failed while answering a repeat of this key")

    # -- the first request ---------------------------------------------------------------------

    async def _first(self, job: JobRequest, claim_id: str, send: Send) -> web.StreamResponse:
        self._count(job, "first")
        tap = Tap(self.max_stored_body)
        sent_at = self._wall()
        try:
            resp = await send(tap)
        except BaseException:
            # Cancelled mid-request: whether it went out is not known here, so assume it did.
            self._later(self._settle_quietly(job, claim_id, Outcome.UNKNOWN, None, sent_at))
            raise
        outcome = tap.outcome
        stored = None
        if outcome is Outcome.DONE:
            assert tap.status is not None
            stored = (tap.capture.response(tap.status, tap.headers) if tap.ended else
                      StoredResponse(tap.status, tap.headers, None, body_too_large=True))
        await self._settle_quietly(job, claim_id, outcome, stored, sent_at)
        return resp

    async def _settle_quietly(
        self, job: JobRequest, claim_id: str, outcome: Outcome, stored: StoredResponse | None,
        sent_at: float,
    ) -> None:
        """Record what became of the claim; a store that fails leaves it in flight (then stale)."""
        store = self.store
        try:
            if outcome is Outcome.DONE:
                assert stored is not None
                await store.complete(job.scope, job.key, claim_id, stored, sent_at=sent_at)
            elif outcome is Outcome.RELEASE:
                await store.release(job.scope, job.key, claim_id=claim_id)
                self._count(job, "released")
            else:
                await store.mark_unknown(job.scope, job.key, claim_id, sent_at=sent_at)
                self._count(job, "unknown")
        except StoreError as exc:
            self._log.error("ledger_settle_failed", provider=job.provider, outcome=outcome.value,
                            request_id=job.request_id, error=str(exc))

    # -- repeats -------------------------------------------------------------------------------

    async def _repeat(
        self, job: JobRequest, record: LedgerRecord, deadline: float
    ) -> web.StreamResponse | None:
        """The answer to a repeat, or None to claim again (the key was freed meanwhile)."""
        kind = classify_repeat(record, job.fingerprint)
        if kind is Repeat.IN_FLIGHT:
            if in_flight_is_stale(record, self._wall(), job.total + STALE_MARGIN):
                await self._bounded(deadline, self.store.mark_unknown(job.scope, job.key, record.claim_id))
                self._count(job, "unknown")
                return None  # claim again: it meets the record, now unknown
            waited = await self._bounded(
                deadline, self.store.wait(job.scope, job.key, _left(deadline)), slack=0.5
            )
            if waited is None:
                return None
            if waited.state is RecordState.IN_FLIGHT:
                self._count(job, "in_flight")
                retry = min(30.0, max(1.0, waited.claimed_at + job.total - self._wall()))
                return self._error(job, ErrorCode.IDEMPOTENCY_IN_FLIGHT,
                                   "the first request with this key is still in flight", retry)
            record, kind = waited, classify_repeat(waited, job.fingerprint)
            if kind is Repeat.REPLAY:
                self._count(job, "coalesced")
                return self._replay(job, record)
        if kind is Repeat.REUSED:
            self._count(job, "reused")
            return self._error(job, ErrorCode.IDEMPOTENCY_KEY_REUSED,
                               "this Idempotency-Key was used for a different request")
        if kind is Repeat.REPLAY:
            self._count(job, "replayed")
            return self._replay(job, record)
        if kind is Repeat.REPLAY_UNAVAILABLE:
            status = record.response.status if record.response is not None else "?"
            return self._error(job, ErrorCode.IDEMPOTENCY_REPLAY_UNAVAILABLE,
                               f"the first request was answered {status}, but that answer's body "
                               "was not kept (over ledger.max_stored_body, or cut off)",
                               extra={"original_status": status})
        return await self._unknown(job, record, deadline)

    async def _unknown(
        self, job: JobRequest, record: LedgerRecord, deadline: float
    ) -> web.StreamResponse | None:
        if job.reconcile is not None:
            sent_at = record.sent_at if record.sent_at is not None else record.claimed_at
            found = await job.reconcile(sent_at, _left(deadline))
            if found.outcome is ReconcileOutcome.MATCH and found.job is not None:
                stored = replayable_job(found.job)
                done = await self._bounded(deadline, self.store.complete(
                    job.scope, job.key, record.claim_id, stored))
                if done:
                    self._count(job, "reconciled")
                    return self._replay(job, record, stored)
                return None  # somebody else settled it meanwhile: look again
            if found.outcome is ReconcileOutcome.NO_MATCH:
                await self._bounded(deadline, self.store.release(
                    job.scope, job.key, claim_id=record.claim_id))
                self._count(job, "released")
                return None  # no job was created: claim again and forward as a first request
            self._log.warning("ledger_reconcile_inconclusive", provider=job.provider,
                              request_id=job.request_id, detail=found.detail)
        return self._error(job, ErrorCode.OUTCOME_UNKNOWN,
                           "the first request with this key went out and its outcome is unknown; "
                           "an operator can release the key (POST /admin/jobs/.../release)")

    # -- answers -------------------------------------------------------------------------------

    async def _unavailable(self, job: JobRequest, send: Send, exc: BaseException) -> web.StreamResponse:
        self._log.error("ledger_unavailable", provider=job.provider, request_id=job.request_id,
                        refused=self.refuse, error=str(exc) or type(exc).__name__)
        if self.refuse:
            return self._error(job, ErrorCode.LEDGER_UNAVAILABLE,
                               "the job ledger can't be reached and ledger.on_unavailable is refuse")
        self.unprotected += 1
        self._count(job, "unprotected")
        return await send(None)

    def _replay(
        self, job: JobRequest, record: LedgerRecord, stored: StoredResponse | None = None
    ) -> web.Response:
        answer = stored or record.response
        assert answer is not None and answer.body is not None
        resp = web.Response(status=answer.status, body=answer.body)
        for name, value in answer.headers:
            resp.headers.add(name, value)
        resp.headers[REQUEST_ID] = job.request_id
        resp.headers[ATTEMPTS] = "0"
        resp.headers[REPLAYED] = "true"
        return resp

    def _error(
        self, job: JobRequest, code: ErrorCode, detail: str, retry_after: float | None = None,
        extra: dict[str, object] | None = None,
    ) -> web.Response:
        resp = to_response(SidecarError(code, detail, provider=job.provider, retry_after=retry_after,
                                        extra=extra))
        resp.headers[REQUEST_ID] = job.request_id
        return resp

    def count_release(self, provider: str) -> None:
        """An operator released a key (``/admin/jobs/.../release``)."""
        self._counter.count(provider, "released")

    def _count(self, job: JobRequest, result: str) -> None:
        self._counter.count(job.provider, result)

    async def _bounded(self, deadline: float, call: Awaitable[T], *, slack: float = 0.0) -> T:
        """The store call within the request's deadline (a wait gets ``slack`` to report back)."""
        async with asyncio.timeout(_left(deadline) + slack):
            return await call

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def _left(deadline: float) -> float:
    return max(0.0, deadline - asyncio.get_running_loop().time())

