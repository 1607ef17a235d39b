"""The request handler for ``/<provider>/<rest>``: route, build the outbound request, stream back.

The provider is taken from the raw (still percent-encoded) request target, and the upstream URL is
the configured base plus the rest *as received*: nothing the client sends can change the host.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import NamedTuple

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ..config import RouteConfig
from ..errors import ErrorCode, RequestBodyError, SidecarError, to_response
from ..headers import (
    ATTEMPTS,
    IDEMPOTENCY_KEY,
    REQUEST_DROP,
    REQUEST_ID,
    RESPONSE_DROP,
    SIDECAR_ERROR,
    filter_headers,
)
from ..policy.breaker import Rejection
from ..policy.retry import request_is_retryable
from ..state import InvalidIdempotencyKey, Outcome, fingerprint, validate_idempotency_key, window_scope
from ..upstream.attempts import AttemptLoop
from ..upstream.h1pool import Body, H1Pool, H1Response
from ..upstream.transports import pool_send
from .admission import Limits
from .ledger import OUTCOME, JobLedger, JobRequest
from .reconcile import replicate_reconciler
from .runtime import ProxyRuntime
from .shared_breaker import SharedBreaker
from .tap import Tap, relay_tapped

# Bodies up to this size are read whole (one write instead of a stream) even when not retryable.
_SMALL_BODY = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})
# What reading a request body raises when the client disconnects before sending all of it.
_CLIENT_GONE = (OSError, asyncio.IncompleteReadError, aiohttp.ClientError)


class _LimitedStream:
    """A request body streamed upstream once, cut at the provider's limit.

    Going over it raises ``RequestBodyError``, which ends the attempt as the client's fault: the
    client gets 413 and the provider's breaker hears nothing of it.
    """

    __slots__ = ("_content", "_limit", "_prefix")

    def __init__(self, prefix: bytes, content: aiohttp.StreamReader, limit: int) -> None:
        self._prefix = prefix
        self._content = content
        self._limit = limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[bytes]:
        total = len(self._prefix)
        if self._prefix:
            yield self._prefix
        async for chunk in self._content.iter_any():
            total += len(chunk)
            if total > self._limit:
                raise RequestBodyError(ErrorCode.BODY_TOO_LARGE, f"request body exceeds {self._limit} bytes")
            yield chunk


def split_target(raw_path: str) -> tuple[str, str, str]:
    """``/name/rest?q`` -> (name, "/rest", "q"); the rest stays percent-encoded."""
    path, _, query = raw_path.partition("?")
    slash = path.find("/", 1)
    if slash < 0:
        return path[1:], "", query
    return path[1:slash], path[slash:], query


def upstream_target(prefix: str, rest: str, query: str) -> str:
    """The origin-form target sent upstream: the upstream's path prefix, then the rest as received."""
    return prefix + (rest or "/") + ("?" + query if query else "")


async def read_body(
    request: web.Request, rt: ProxyRuntime, buffer_limit: int, want_replay: bool, wait: float
) -> tuple[Body, bool]:
    """The body to send and whether it can be sent again (only what was kept in memory).

    Keeping a body means waiting for all of it: a client that trickles it gets ``wait`` seconds (the
    request's total timeout), then 408, so it cannot hold the handler forever. (A streamed body is
    bounded by the attempt's own timeout instead.)
    """
    if not request.body_exists:
        return None, True
    try:
        if request.content.is_eof():  # the common case: it came whole with the head; no timer
            return await _read_body(request, rt, buffer_limit, want_replay)
        async with asyncio.timeout(wait):
            return await _read_body(request, rt, buffer_limit, want_replay)
    except TimeoutError:
        raise SidecarError(
            ErrorCode.REQUEST_TIMEOUT, f"request body not received within {wait:.3g}s", provider=rt.name
        ) from None
    except _CLIENT_GONE:
        # The client's fault (it went away mid-body), never the provider's: a 400 that it will
        # most likely not read, but that the metrics and the breaker see as a client error.
        raise SidecarError(ErrorCode.BAD_REQUEST, "request body incomplete", provider=rt.name) from None


async def _read_body(
    request: web.Request, rt: ProxyRuntime, buffer_limit: int, want_replay: bool
) -> tuple[Body, bool]:
    limit = rt.config.max_request_body
    length = request.content_length
    if length is not None and length > limit:
        raise SidecarError(
            ErrorCode.BODY_TOO_LARGE, f"request body of {length} bytes exceeds {limit}", provider=rt.name
        )
    # Never keep more than the limit: a chunked body that ends below the buffering threshold but
    # above max_request_body must still be refused.
    keep = min(buffer_limit if want_replay else _SMALL_BODY, limit)
    if length is not None:
        if length <= keep:
            return await request.content.readexactly(length), True
        return _LimitedStream(b"", request.content, limit), False
    chunks: list[bytes] = []
    size = 0
    while size <= keep:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks), True
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise SidecarError(
            ErrorCode.BODY_TOO_LARGE, f"request body exceeds {limit} bytes", provider=rt.name
        )
    return _LimitedStream(b"".join(chunks), request.content, limit), False


class _Outbound(NamedTuple):
    """One client request, ready to send upstream through the provider's pool (a named tuple:
    one is made for every request)."""

    pool: H1Pool
    method: str
    target: str  # origin-form path and query
    headers: CIMultiDict[str]
    body: Body
    route: RouteConfig
    retryable: bool  # method/key/route allow a retry and the body can be sent again


class ProxyHandler:
    """Forwards one client request through its provider's breaker and its route's retry policy."""

    def __init__(
        self, loop: AttemptLoop, limits: Limits | None = None,
        shared: Mapping[str, SharedBreaker] | None = None, *, jobs: JobLedger | None = None,
    ) -> None:
        self._loop = loop
        self._limits = limits
        self._shared = shared or {}
        self._jobs = jobs

    async def forward(
        self, request: web.Request, rt: ProxyRuntime, rest: str, query: str,
        route: RouteConfig, request_id: str,
    ) -> web.StreamResponse:
        """Build the outbound request, send it through the attempt loop, and relay the answer."""
        headers = filter_headers(request.headers, REQUEST_DROP)
        headers[REQUEST_ID] = request_id
        for name, value in rt.auth_headers:
            if name not in headers:
                headers[name] = value
        if route.creates_job and self._jobs is not None:
            keys = request.headers.getall(IDEMPOTENCY_KEY, [])
            if keys or route.idempotency_window is not None:
                return await self._forward_job(request, rt, rest, query, route, request_id, headers,
                                               keys)
        eligible = (
            # A paid job is never re-sent on the sidecar's account, unless the provider itself
            # recognises the key (native_idempotency).
            (not route.creates_job or rt.config.native_idempotency)
            and request_is_retryable(request.method, IDEMPOTENCY_KEY in headers, route.idempotent)
            and route.retry.max_attempts > 1
        )
        try:
            body, replayable = await read_body(
                request, rt, route.retry.max_buffered_body, eligible, route.timeouts.total
            )
        except SidecarError as refused:
            return _with_request_id(to_response(refused), request_id)
        pool = rt.pool
        out = _Outbound(
            pool=pool,
            method=request.method,
            target=upstream_target(pool.prefix, rest, query),
            headers=headers,
            body=body,
            route=route,
            retryable=eligible and replayable,
        )
        return await self._dispatch(request, rt, out, request_id, None)

    def _dispatch(
        self, request: web.Request, rt: ProxyRuntime, out: _Outbound, request_id: str,
        tap: Tap | None,
    ) -> Awaitable[web.StreamResponse]:
        """Through the fleet's shared breaker when the provider has one, else straight to its
        limits and the upstream (a plain function: no coroutine frame of its own).

        ``tap``: a paid job's first request, whose answer the ledger keeps (refused before it was
        sent, it leaves the tap as it was: nothing went out)."""
        link = self._shared.get(rt.name)
        if link is None:
            return self._send(request, rt, out, request_id, tap)
        return self._through_fleet(link, request, rt, out, request_id, tap)

    async def _through_fleet(
        self, link: SharedBreaker, request: web.Request, rt: ProxyRuntime, out: _Outbound,
        request_id: str, tap: Tap | None,
    ) -> web.StreamResponse:
        """The fleet's shared breaker decides first; its trial's verdict is reported after."""
        route = out.route
        decision = await link.before(route)
        if isinstance(decision, Rejection):
            rt.metrics.short_circuited.inc()
            return _with_request_id(to_response(_fleet_open(rt.name, decision)), request_id)
        verdict: bool | None = None
        try:
            response = await self._send(request, rt, out, request_id, tap)
            verdict = _trial_verdict(response, route)
            return response
        finally:
            await link.after(decision, verdict)

    async def _send(
        self, request: web.Request, rt: ProxyRuntime, out: _Outbound, request_id: str,
        tap: Tap | None,
    ) -> web.StreamResponse:
        """Through the provider's limits (when there are any), then sent and relayed; the place
        is held until the answer is relayed."""
        ticket = None
        limits = self._limits
        if limits is not None:
            ticket = limits.admit_at_once(rt.name, out.route)
            if ticket is None:
                try:
                    ticket = await limits.admit(rt.name, out.route, out.route.timeouts.total)
                except SidecarError as refused:
                    return _with_request_id(to_response(refused), request_id)
        try:
            route = out.route
            send = pool_send(out.pool, out.method, out.target, out.headers, out.body, route.timeouts)
            # timeouts.total bounds the wait for a place and the attempts together
            spent = ticket.waited if ticket is not None else 0.0
            exchange = await self._loop.run(
                rt, send, route=route, retryable=out.retryable, gate=ticket, spent=spent
            )
            if ticket is not None:
                ticket.finish(None if exchange.response is None else exchange.response.status)
            up = exchange.response
            if up is None:
                assert exchange.error is not None
                resp = _with_request_id(to_response(exchange.error), request_id)
                if tap is not None:
                    tap.unanswered(exchange.sent)
                    if tap.outcome is Outcome.UNKNOWN:
                        resp.headers[OUTCOME] = "unknown"
                return resp
            if tap is None:
                return await relay(request, up, exchange.attempts, request_id, rt.name)
            answer = filter_headers(up.headers, RESPONSE_DROP)
            tap.answered(up.status, answer)  # what a replay gives back, before per-request headers
            answer[ATTEMPTS] = str(exchange.attempts)
            answer[REQUEST_ID] = request_id
            if tap.outcome is Outcome.UNKNOWN:
                answer[OUTCOME] = "unknown"
            return await relay_tapped(request, up, answer, tap)
        finally:
            if ticket is not None:
                ticket.close()

    async def _forward_job(
        self, request: web.Request, rt: ProxyRuntime, rest: str, query: str, route: RouteConfig,
        request_id: str, headers: CIMultiDict[str], keys: list[str],
    ) -> web.StreamResponse:
        """A creates_job request with a key (its own, or its fingerprint within the window)."""
        jobs = self._jobs
        assert jobs is not None
        try:
            if len(keys) > 1:
                raise InvalidIdempotencyKey("Idempotency-Key must be sent once")
            key = validate_idempotency_key(keys[0]) if keys else None
            # The fingerprint needs the whole body before the claim: it is read (up to
            # max_request_body), and then sent from memory.
            read, _ = await read_body(request, rt, rt.config.max_request_body, True, route.timeouts.total)
        except InvalidIdempotencyKey as bad:
            refused = SidecarError(ErrorCode.BAD_REQUEST, str(bad), provider=rt.name)
            return _with_request_id(to_response(refused), request_id)
        except SidecarError as refused:
            return _with_request_id(to_response(refused), request_id)
        body = read if isinstance(read, bytes) else b""
        path = rest or "/"
        digest = fingerprint(request.method, path, query, body)
        job = JobRequest(
            provider=rt.name,
            scope=rt.name if key is not None else window_scope(rt.name),
            key=key if key is not None else digest,
            fingerprint=digest,
            ttl=None if key is not None else route.idempotency_window,
            total=route.timeouts.total,
            request_id=request_id,
            reconcile=replicate_reconciler(rt, path, body) if rt.config.reconcile == "replicate" else None,
        )
        # Keyed retries only where the provider itself recognises the key it is sent.
        retryable = key is not None and rt.config.native_idempotency and route.retry.max_attempts > 1
        pool = rt.pool
        out = _Outbound(
            pool=pool, method=request.method, target=upstream_target(pool.prefix, rest, query),
            headers=headers, body=read, route=route, retryable=retryable,
        )

        def send(tap: Tap | None) -> Awaitable[web.StreamResponse]:
            return self._dispatch(request, rt, out, request_id, tap)

        return await jobs.handle(job, send)


_VERDICT_ERRORS = frozenset({ErrorCode.UPSTREAM_TIMEOUT.value, ErrorCode.UPSTREAM_UNREACHABLE.value})


def _trial_verdict(response: web.StreamResponse, route: RouteConfig) -> bool | None:
    """What a request says of its provider, as a breaker would count it (None: nothing)."""
    error = response.headers.get(SIDECAR_ERROR)
    if error is not None:
        return False if error in _VERDICT_ERRORS else None
    return response.status not in route.failure_statuses


def _fleet_open(provider: str, rejection: Rejection) -> SidecarError:
    state = rejection.state.value
    return SidecarError(
        ErrorCode.CIRCUIT_OPEN, f"circuit breaker for {provider} is {state} (shared by the fleet)",
        provider=provider, retry_after=rejection.retry_after, extra={"state": state},
    )


def _with_request_id(resp: web.Response, request_id: str) -> web.Response:
    resp.headers[REQUEST_ID] = request_id
    return resp


async def relay(
    request: web.Request,
    up: H1Response,
    attempts: int,
    request_id: str,
    provider: str,
) -> web.StreamResponse:
    """Send the upstream's answer back: small bodies in one write, larger ones streamed."""
    headers = filter_headers(up.headers, RESPONSE_DROP)
    headers[ATTEMPTS] = str(attempts)
    headers[REQUEST_ID] = request_id
    length = up.content_length
    try:
        if request.method == "HEAD" or up.status in _NO_BODY_STATUSES:
            up.release()
            resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
            if length is not None:
                resp.content_length = length
            return resp
        if length is not None and length <= _SMALL_BODY:
            body = await up.read()
            up.release()
            return web.Response(status=up.status, reason=up.reason, headers=headers, body=body)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        up.close()
        err = SidecarError(
            ErrorCode.UPSTREAM_TIMEOUT if isinstance(exc, TimeoutError)
            else ErrorCode.UPSTREAM_UNREACHABLE,
            f"response body failed: {type(exc).__name__}",
            provider=provider,
            attempts=attempts,
        )
        return _with_request_id(to_response(err), request_id)
    return await _stream(request, up, headers, length)


async def _stream(
    request: web.Request, up: H1Response, headers: CIMultiDict[str], length: int | None
) -> web.StreamResponse:
    resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
    if length is not None:
        resp.content_length = length
    try:
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
    except (TimeoutError, aiohttp.ClientError, OSError):
        # The upstream died mid-body or the client went away: abort the client's connection so a
        # truncated body can never look complete (aiohttp's final write_eof then fails quietly).
        up.close()
        if request.transport is not None:
            request.transport.abort()
    finally:
        up.release()
    return resp
