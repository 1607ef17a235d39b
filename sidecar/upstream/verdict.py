"""How one attempt ended, and what follows from it: one pure table, no I/O, no clock, no aiohttp.

The attempt loop turns what its transport returned or raised into an ``AttemptOutcome`` and asks
``classify`` for the ``Verdict``: what the provider's breaker hears, which attempt counter moves,
the sidecar error the client gets if this is the last attempt, whether a retry may follow, and
whether the attempt's duration counts. The rows:

===================  ===========  ======================  =====================  =========  =====
ending               breaker      attempt result          error                  retryable  timed
===================  ===========  ======================  =====================  =========  =====
connect error        FAILURE      connect_error           upstream_unreachable   yes        yes
timeout              FAILURE      timeout                 upstream_timeout       yes        yes
pool timeout         IGNORED      timeout                 upstream_timeout       yes        no
request-body error   IGNORED      (none)                  (the client's own)     no         no
failure status       FAILURE      failure                 (none: the answer)     if listed  yes
429                  IGNORED      success                 (none: the answer)     if listed  yes
any other status     SUCCESS      success                 (none: the answer)     if listed  yes
===================  ===========  ======================  =====================  =========  =====

A status is a failure when the route lists it in ``failure_statuses`` (that test comes first, so
a listed 429 is a failure), and retryable when its retry policy lists it in ``retry_statuses``.
A pool timeout is local saturation: no connection was free, nothing reached the provider, so the
provider's breaker is not told. A request-body error is the client's fault (over the limit, cut
off, stalled): no verdict on the provider, and the body cannot be sent again. Whether the request
was sent never changes the verdict (a connect timeout is the provider's failure although nothing
was sent); the loop reports it to its caller, which needs to know whether a job may have started.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import ErrorCode
from ..policy.breaker import Outcome

__all__ = ["AttemptOutcome", "Ending", "Verdict", "classify"]


class Ending(enum.Enum):
    """How an attempt ended, as the transport reported it."""

    RESPONSE = "response"  # a response head arrived
    TIMEOUT = "timeout"  # no response head in time (connecting included)
    POOL_TIMEOUT = "pool_timeout"  # no pooled connection free in time: nothing left the sidecar
    CONNECT_ERROR = "connect_error"  # refused, reset, DNS, TLS, a malformed answer
    REQUEST_BODY_ERROR = "request_body_error"  # the client's body failed while being sent


class AttemptOutcome(NamedTuple):
    """How one attempt ended (a named tuple: one is made for every attempt)."""

    ending: Ending
    status: int | None = None  # with RESPONSE
    elapsed: float = 0.0  # seconds from the send to the head or the error
    sent: bool = True  # the request may have reached the provider (False only when sure it did not)


@dataclass(frozen=True, slots=True)
class Verdict:
    breaker: Outcome  # what the provider's breaker hears
    result: str | None  # the attempt counter to move (``ATTEMPT_RESULTS``), None for none
    error: ErrorCode | None  # the sidecar error if this is the answer; None: a response, or the client's own
    retryable: bool  # a retry may follow (the loop still checks the request, the budget, the time)
    timed: bool  # the elapsed time goes to the breaker and the attempt-duration histogram


_ENDED = {
    Ending.CONNECT_ERROR: Verdict(
        Outcome.FAILURE, "connect_error", ErrorCode.UPSTREAM_UNREACHABLE, retryable=True, timed=True),
    Ending.TIMEOUT: Verdict(
        Outcome.FAILURE, "timeout", ErrorCode.UPSTREAM_TIMEOUT, retryable=True, timed=True),
    Ending.POOL_TIMEOUT: Verdict(
        Outcome.IGNORED, "timeout", ErrorCode.UPSTREAM_TIMEOUT, retryable=True, timed=False),
    Ending.REQUEST_BODY_ERROR: Verdict(Outcome.IGNORED, None, None, retryable=False, timed=False),
}


def classify(
    outcome: AttemptOutcome, *, failure_statuses: frozenset[int], retry_statuses: frozenset[int]
) -> Verdict:
    """The verdict on one attempt, from the table above."""
    if outcome.ending is not Ending.RESPONSE:
        return _ENDED[outcome.ending]
    status = outcome.status
    if status is None:
        raise ValueError("a response outcome needs its status")
    retryable = status in retry_statuses  # indexes the pairs below: False 0, True 1
    if status in failure_statuses:
        return _FAILED[retryable]
    if status == 429:
        return _LIMITED[retryable]
    return _ANSWERED[retryable]


# The verdicts on a response, made once (one of them is the answer to nearly every request), by
# whether the status may be retried.
_FAILED = tuple(Verdict(Outcome.FAILURE, "failure", None, r, True) for r in (False, True))
_LIMITED = tuple(Verdict(Outcome.IGNORED, "success", None, r, True) for r in (False, True))
_ANSWERED = tuple(Verdict(Outcome.SUCCESS, "success", None, r, True) for r in (False, True))
