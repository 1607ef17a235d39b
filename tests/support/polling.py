"""``eventually``: the suite's one way to wait for something that happens on its own time.

A test that waits for a background task, a child process or a real server polls with a deadline
(never a fixed sleep): it asks again every ``interval`` seconds of loop time until the answer is
good, and fails after ``timeout`` seconds with the last answer it saw, so the failure says how far
things got.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["eventually"]

T = TypeVar("T")

_NOTHING = object()


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 5.0,  # noqa: ASYNC109 (a polling deadline, not a cancel scope)
    interval: float = 0.01,
    retry_on: tuple[type[BaseException], ...] = (),
    what: str = "",
) -> T:
    """Call ``probe`` (plain or async) until ``until(value)`` is true; return that value.

    ``retry_on``: exceptions that mean "not yet" (a server still starting); any other propagates.
    On timeout, raise ``AssertionError`` naming ``what`` and the last value (or exception) seen.
    """
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    last: object = _NOTHING
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
            last = value
            if until(value):  # type: ignore[arg-type]
                return value  # type: ignore[return-value]
        except retry_on as exc:
            last = exc
        if loop.time() >= give_up:
            raise AssertionError(_failure(what or _name(probe), timeout, last))
        await asyncio.sleep(interval)


def _name(probe: Callable[..., Any]) -> str:
    return getattr(probe, "__qualname__", repr(probe))


def _failure(what: str, timeout: float, last: object) -> str:
    seen = "nothing (the probe never answered)" if last is _NOTHING else repr(last)
    return f"{what} not reached within {timeout}s; last value: {seen}"
