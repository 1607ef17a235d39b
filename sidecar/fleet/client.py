"""The Redis client for fleet state, and the one guard every call goes through: fail fast, typed.

A sidecar must never hang on its Redis: every operation is bounded by the client's ``timeout``
(its connect timeout, then its read timeout: a connection owing replies with none for that long is
dropped, failing every command on it, so no per-call timer is needed), and every failure, whether
refused connection, timeout, a server error such as ``LOADING`` or ``READONLY``, comes out as
``FleetUnavailable`` so the caller can fall back to its local state. The client does not retry by
itself: a script that ran but whose reply was lost must not run twice, and the fallback decides
what happens next.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from sidecar.limits.api import FleetUnavailable
from sidecar.state.resp import RespClient, RespError

__all__ = ["DEFAULT_TIMEOUT", "guarded", "redis_client", "unavailable"]

DEFAULT_TIMEOUT = 0.25
"""Seconds a fleet operation may take before the caller falls back (Redis answers in < 1 ms)."""

T = TypeVar("T")


def redis_client(url: str, *, timeout: float = DEFAULT_TIMEOUT) -> RespClient:
    """A client for ``redis://`` / ``rediss://`` URLs with bounded connects and reads, no retries."""
    return RespClient(url, connect_timeout=timeout, read_timeout=timeout, name="sidecar-fleet")


async def guarded(operation: Awaitable[T], *, what: str) -> T:
    """Await ``operation`` (a call on the fleet's client, bounded by the client's timeouts).

    Any failure is ``FleetUnavailable``; the client has already dropped a timed-out or failed
    connection, so the next call starts on a fresh one.
    """
    try:
        return await operation
    except (RespError, OSError, TimeoutError) as error:
        # A failed or timed-out connection was dropped by the client itself, with every command on
        # it: dropping "the" connection here could end a fresh one another caller just made.
        raise unavailable(error, what) from error


def unavailable(error: BaseException, what: str) -> BaseException:
    """What a caller gets for ``error`` met by a fleet call: ``FleetUnavailable`` for the store's
    failures, anything else (a bug) as it is."""
    if isinstance(error, (RespError, OSError, TimeoutError)):
        failure = FleetUnavailable(f"{what}: {type(error).__name__}: {error}")
        failure.__cause__ = error
        return failure
    return error
