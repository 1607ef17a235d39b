"""The response copy kept for replay: exact under the limit, dropped over it, bounded forever."""

from __future__ import annotations

import tracemalloc

import pytest

from sidecar.state import BodyCapture, StoredResponse

MiB = 1024 * 1024


def test_a_body_within_the_limit_is_kept_exactly() -> None:
    """Chunks up to the limit (inclusive) are kept in order, with status and headers."""
    capture = BodyCapture(limit=10)
    for chunk in (b"0123", b"", b"456789"):
        capture.feed(chunk)
    assert capture.response(201, [("A", "1"), ("A", "2")]) == StoredResponse(
        201, (("A", "1"), ("A", "2")), b"0123456789", body_too_large=False
    )


def test_a_body_over_the_limit_is_dropped_and_flagged() -> None:
    """One byte over: nothing is held any more, the size is still counted, the answer says why."""
    capture = BodyCapture(limit=10)
    capture.feed(b"0123456789")
    capture.feed(b"x")
    assert (capture.held, capture.size, capture.too_large) == (0, 11, True)
    capture.feed(b"more")
    assert capture.response(200, []) == StoredResponse(200, (), None, body_too_large=True)


def test_a_zero_limit_keeps_only_empty_bodies() -> None:
    """limit 0: an empty body is stored, any byte makes it too large."""
    empty = BodyCapture(limit=0)
    assert empty.response(204, []).body == b""
    one = BodyCapture(limit=0)
    one.feed(b"x")
    assert one.response(200, []).body_too_large


def test_a_negative_limit_is_refused() -> None:
    """A limit below zero is a programming error, said at once."""
    with pytest.raises(ValueError, match="limit"):
        BodyCapture(limit=-1)


def test_a_body_that_never_ends_keeps_memory_bounded() -> None:
    """300 MiB through a 1 MiB capture: it never holds more than 1 MiB, and allocates little more."""
    chunk = b"x" * (64 * 1024)
    capture = BodyCapture(limit=MiB)
    tracemalloc.start()
    try:
        for _ in range(300 * 16):  # an endless stream, cut off by the test
            capture.feed(chunk)
            assert capture.held <= MiB
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert capture.size == 300 * MiB
    assert capture.too_large and capture.held == 0
    assert peak < 3 * MiB
