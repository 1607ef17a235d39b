"""Error codes carry their status; an error is a value that with_context copies, never changes."""

from __future__ import annotations

import json

import pytest

from sidecar.errors import (
    PLANNED,
    STATUS,
    ErrorCode,
    RequestBodyError,
    SidecarError,
    error_response,
    to_response,
)

# The contract's table of error codes, written out independently of the enum.
CONTRACT = {
    "circuit_open": 503, "provider_unconfigured": 503, "provider_overloaded": 503,
    "upstream_unreachable": 502, "upstream_timeout": 504, "unknown_provider": 404,
    "not_found": 404, "method_not_allowed": 405, "body_too_large": 413, "forbidden_target": 403,
    "too_many_redirects": 502, "unauthorized": 401, "forbidden": 403, "bad_request": 400,
    "request_timeout": 408, "rate_limited": 429, "idempotency_key_reused": 422,
    "idempotency_in_flight": 409, "outcome_unknown": 409, "idempotency_replay_unavailable": 409,
    "ledger_unavailable": 503,
}


def test_every_code_of_the_contract_carries_its_status() -> None:
    """The enum holds exactly the contract's codes, each with its HTTP status, and is a str."""
    assert {code.value: code.status for code in ErrorCode} == CONTRACT
    assert ErrorCode("rate_limited") is ErrorCode.RATE_LIMITED and ErrorCode.RATE_LIMITED == "rate_limited"


def test_status_lists_the_codes_answered_today() -> None:
    """STATUS (what the user docs list) is every code but those of features not built yet."""
    assert set(STATUS) == {c.value for c in ErrorCode} - {c.value for c in PLANNED}
    assert {c.value for c in PLANNED} == set()


def test_with_context_returns_a_new_error_and_leaves_the_original() -> None:
    """Provider and attempts are added on a copy: same class, code, detail, retry_after and extra."""
    original = RequestBodyError(ErrorCode.BODY_TOO_LARGE, "too big", retry_after=2.5,
                                extra={"limit": 10})
    named = original.with_context(provider="p")
    counted = named.with_context(attempts=3)
    assert (original.provider, original.attempts) == (None, 0)
    assert (named.provider, named.attempts) == ("p", 0)
    assert (counted.provider, counted.attempts) == ("p", 3)
    assert type(counted) is RequestBodyError and counted is not original
    assert (counted.code, counted.status, counted.detail) == (ErrorCode.BODY_TOO_LARGE, 413, "too big")
    assert (counted.retry_after, counted.extra) == (2.5, {"limit": 10})


def test_an_error_cannot_be_changed_after_it_is_made() -> None:
    """Code, provider, attempts and the rest are read-only; extra is handed out as a copy."""
    err = SidecarError(ErrorCode.BAD_REQUEST, "x", extra={"a": 1})
    for name in ("code", "status", "detail", "provider", "retry_after", "attempts", "extra"):
        with pytest.raises(AttributeError):
            setattr(err, name, None)
    extra = err.extra
    assert extra is not None
    extra["a"] = 2
    assert err.extra == {"a": 1}


def test_the_response_names_the_code_and_takes_its_status() -> None:
    """to_response: status from the code, X-Sidecar-Error, attempts, Retry-After rounded up, body."""
    err = SidecarError(ErrorCode.CIRCUIT_OPEN, "open", provider="p", retry_after=0.2,
                       attempts=0, extra={"state": "open"})
    resp = to_response(err)
    assert resp.status == 503
    assert resp.headers["X-Sidecar-Error"] == "circuit_open"
    assert (resp.headers["X-Sidecar-Attempts"], resp.headers["Retry-After"]) == ("0", "1")
    assert resp.text is not None
    assert json.loads(resp.text) == {"error": "circuit_open", "provider": "p", "detail": "open",
                                     "state": "open"}
    assert error_response(ErrorCode.RATE_LIMITED, "slow down").status == 429
