"""The errors the sidecar answers itself, as JSON with an ``X-Sidecar-Error`` header.

Every code of the contract (SPEC section 4) lives here with its HTTP status, so that handlers name a
code and never choose a status by hand::

    SidecarError
     ├── circuit_open           503  no attempt was made: breaker open / trials taken / forced
     ├── provider_unconfigured  503
     ├── provider_overloaded    503  bulkhead full
     ├── upstream_unreachable   502  connection refused/reset/DNS, after retries
     ├── upstream_timeout       504
     ├── unknown_provider       404
     ├── not_found              404  ops listener: not one of its endpoints
     ├── method_not_allowed     405  own endpoint, wrong method
     ├── body_too_large         413
     ├── forbidden_target       403
     ├── too_many_redirects     502
     ├── unauthorized           401  admin without the bearer token
     ├── forbidden              403  admin on a non-loopback listener without a token
     ├── request_timeout        408  a kept (retryable) request body did not arrive in time
     └── bad_request            400
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from .headers import ATTEMPTS, RETRY_AFTER, SIDECAR_ERROR

STATUS: dict[str, int] = {
    "circuit_open": 503,
    "provider_unconfigured": 503,
    "provider_overloaded": 503,
    "upstream_unreachable": 502,
    "upstream_timeout": 504,
    "unknown_provider": 404,
    "not_found": 404,
    "method_not_allowed": 405,
    "body_too_large": 413,
    "forbidden_target": 403,
    "too_many_redirects": 502,
    "unauthorized": 401,
    "forbidden": 403,
    "bad_request": 400,
    "request_timeout": 408,
}


class SidecarError(Exception):
    """Raised below the handler; turned into the JSON answer by ``to_response``."""

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        provider: str | None = None,
        retry_after: float | None = None,
        attempts: int = 0,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.status = STATUS[code]
        self.detail = detail
        self.provider = provider
        self.retry_after = retry_after
        self.attempts = attempts
        self.extra = extra


def to_response(err: SidecarError) -> web.Response:
    body: dict[str, object] = {"error": err.code, "provider": err.provider, "detail": err.detail}
    if err.extra:
        body.update(err.extra)
    headers = {SIDECAR_ERROR: err.code, ATTEMPTS: str(err.attempts)}
    if err.retry_after is not None:
        headers[RETRY_AFTER] = str(max(1, math.ceil(err.retry_after)))
    return web.Response(
        status=err.status,
        text=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def error_response(code: str, detail: str, **fields: Any) -> web.Response:
    """Answer at once with ``SidecarError(code, detail, **fields)``."""
    return to_response(SidecarError(code, detail, **fields))


class RequestBodyError(SidecarError):
    """The *client's* body failed while being sent upstream (over the limit, cut off, stalled).

    Raised through the upstream connection so the attempt ends at once, but it says nothing about the
    provider: the attempt loop records it as neither success nor failure and answers with ``code``.
    """
