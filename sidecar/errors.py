"""The errors the sidecar answers itself, as JSON with an ``X-Sidecar-Error`` header.

Every error code of the contract is an ``ErrorCode`` carrying its HTTP status, so that handlers
name a code and never choose a status by hand::

    SidecarError(code, ...)
     ├── circuit_open                     503  no attempt was made: breaker open / trials taken / forced
     ├── provider_unconfigured            503
     ├── provider_overloaded              503  bulkhead full
     ├── upstream_unreachable             502  connection refused/reset/DNS, after retries
     ├── upstream_timeout                 504
     ├── unknown_provider                 404
     ├── not_found                        404  ops listener: not one of its endpoints
     ├── method_not_allowed               405  own endpoint, wrong method
     ├── body_too_large                   413
     ├── forbidden_target                 403
     ├── too_many_redirects               502
     ├── unauthorized                     401  admin without the bearer token
     ├── forbidden                        403  admin on a non-loopback listener without a token
     ├── request_timeout                  408  a kept (retryable) request body did not arrive in time
     ├── bad_request                      400
     ├── rate_limited                     429  no slot in time: rate, concurrency or a provider's pause
     ├── idempotency_key_reused           422  the same Idempotency-Key with another request
     ├── idempotency_in_flight            409  the first request with that key is still running
     ├── outcome_unknown                  409  the first request's outcome was lost
     ├── idempotency_replay_unavailable   409  the stored answer was too large to keep
     ├── ledger_unavailable               503  the idempotency ledger is unreachable (and must be used)
     └── RequestBodyError(code, ...)           the client's body failed on its way upstream

An error is a value: ``provider`` and ``attempts`` are given to the constructor, or added by
``with_context``, which returns a new error and leaves the original as it was.
"""

from __future__ import annotations

import json
import math
from enum import StrEnum
from typing import Any, Self

from aiohttp import web

from .headers import ATTEMPTS, RETRY_AFTER, SIDECAR_ERROR

__all__ = [
    "PLANNED",
    "STATUS",
    "ErrorCode",
    "RequestBodyError",
    "SidecarError",
    "error_response",
    "to_response",
]


class ErrorCode(StrEnum):
    """A code of the contract, with the HTTP status it is answered with."""

    status: int

    def __new__(cls, value: str, status: int) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        return member

    CIRCUIT_OPEN = "circuit_open", 503
    PROVIDER_UNCONFIGURED = "provider_unconfigured", 503
    PROVIDER_OVERLOADED = "provider_overloaded", 503
    UPSTREAM_UNREACHABLE = "upstream_unreachable", 502
    UPSTREAM_TIMEOUT = "upstream_timeout", 504
    UNKNOWN_PROVIDER = "unknown_provider", 404
    NOT_FOUND = "not_found", 404
    METHOD_NOT_ALLOWED = "method_not_allowed", 405
    BODY_TOO_LARGE = "body_too_large", 413
    FORBIDDEN_TARGET = "forbidden_target", 403
    TOO_MANY_REDIRECTS = "too_many_redirects", 502
    UNAUTHORIZED = "unauthorized", 401
    FORBIDDEN = "forbidden", 403
    BAD_REQUEST = "bad_request", 400
    REQUEST_TIMEOUT = "request_timeout", 408
    RATE_LIMITED = "rate_limited", 429
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused", 422
    IDEMPOTENCY_IN_FLIGHT = "idempotency_in_flight", 409
    OUTCOME_UNKNOWN = "outcome_unknown", 409
    IDEMPOTENCY_REPLAY_UNAVAILABLE = "idempotency_replay_unavailable", 409
    LEDGER_UNAVAILABLE = "ledger_unavailable", 503


# Every code of the contract is answered by a feature that is built.
PLANNED: frozenset[ErrorCode] = frozenset()

# Code -> status, for the codes the sidecar answers today.
STATUS: dict[str, int] = {code.value: code.status for code in ErrorCode if code not in PLANNED}


class SidecarError(Exception):
    """Raised below the handler; turned into the JSON answer by ``to_response``."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        provider: str | None = None,
        retry_after: float | None = None,
        attempts: int = 0,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self._code = code
        self._detail = detail
        self._provider = provider
        self._retry_after = retry_after
        self._attempts = attempts
        self._extra = dict(extra) if extra else None

    @property
    def code(self) -> ErrorCode:
        return self._code

    @property
    def status(self) -> int:
        return self._code.status

    @property
    def detail(self) -> str:
        return self._detail

    @property
    def provider(self) -> str | None:
        return self._provider

    @property
    def retry_after(self) -> float | None:
        return self._retry_after

    @property
    def attempts(self) -> int:
        return self._attempts

    @property
    def extra(self) -> dict[str, object] | None:
        return None if self._extra is None else dict(self._extra)

    def with_context(self, *, provider: str | None = None, attempts: int | None = None) -> Self:
        """The same error naming ``provider`` and/or the ``attempts`` made (those not given stay)."""
        return type(self)(
            self._code,
            self._detail,
            provider=self._provider if provider is None else provider,
            retry_after=self._retry_after,
            attempts=self._attempts if attempts is None else attempts,
            extra=self._extra,
        )


def to_response(err: SidecarError) -> web.Response:
    body: dict[str, object] = {"error": err.code.value, "provider": err.provider, "detail": err.detail}
    extra = err.extra
    if extra:
        body.update(extra)
    headers = {SIDECAR_ERROR: err.code.value, ATTEMPTS: str(err.attempts)}
    if err.retry_after is not None:
        headers[RETRY_AFTER] = str(max(1, math.ceil(err.retry_after)))
    return web.Response(
        status=err.status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def error_response(code: ErrorCode, detail: str, **fields: Any) -> web.Response:
    """Answer at once with ``SidecarError(code, detail, **fields)``."""
    return to_response(SidecarError(code, detail, **fields))


class RequestBodyError(SidecarError):
    """The *client's* body failed while being sent upstream (over the limit, cut off, stalled).

    Raised through the upstream connection so the attempt ends at once, but it says nothing about the
    provider: the attempt loop records it as neither success nor failure and answers with ``code``.
    """
