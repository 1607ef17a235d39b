"""Reading a provider's 429: every pause form, the cap, and the concurrency signal."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.policy.pause import Throttle, parse_duration_text, parse_reset, read_429

NOW = 1_750_000_000.0  # wall-clock epoch seconds (dates and Unix times are relative to it)


def _read(headers: dict[str, str] | None = None, body: bytes = b"", max_pause: float = 60.0) -> Throttle:
    return read_429(headers or {}, body, now=NOW, max_pause=max_pause)


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": formatdate(NOW + 12, usegmt=True)}, 12.0),
        ({"Retry-After-Ms": "1500"}, 1.5),
        ({"RateLimit-Reset": "9"}, 9.0),
        ({"X-RateLimit-Reset": str(int(NOW) + 20)}, 20.0),
        ({"x-ratelimit-reset": "1m30s"}, 60.0),  # capped by max_pause
        ({"x-ratelimit-reset": "250ms"}, 0.25),
        ({"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "40s"}, 40.0),
        (
            {
                "x-ratelimit-reset-requests": "2s", "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-tokens": "40s", "x-ratelimit-remaining-tokens": "9000",
            },
            2.0,
        ),
    ],
)
def test_each_header_form_gives_its_pause(headers: dict[str, str], pause: float) -> None:
    """Retry-After (seconds, date), retry-after-ms and every reset form are understood."""
    assert _read(headers) == Throttle(pause)


def test_retry_after_ms_wins_over_retry_after() -> None:
    """The millisecond header is the precise one when both come."""
    assert _read({"Retry-After": "2", "retry-after-ms": "1200"}) == Throttle(1.2)


@pytest.mark.parametrize(
    ("body", "pause"),
    [
        (b'{"detail":"Request was throttled. Your rate limit resets in ~30s."}', 30.0),
        (b'{"detail":"Request was throttled. Expected available in 1 second."}', 1.0),
        (b'{"detail":"Request was throttled. Expected available in 831.0 seconds."}', 60.0),
        (
            b'{"detail":"Request was throttled. Your rate limit for creating predictions is reduced to'
            b' 6 requests per minute with a burst of 1 requests while you have less than $5.0 in'
            b' credit. Your rate limit resets in ~5s.","status":429,"retry_after":4}',
            4.0,
        ),
        (b"Too many requests, your rate limit resets in ~1m30s", 60.0),
    ],
)
def test_replicate_bodies_give_their_pause(body: bytes, pause: float) -> None:
    """Replicate's throttle messages, current and older, and its numeric retry_after."""
    assert _read(body=body) == Throttle(pause)


def test_headers_win_over_the_body() -> None:
    """A Retry-After header is preferred to the body's estimate."""
    body = b'{"detail":"Request was throttled. Your rate limit resets in ~30s."}'
    assert _read({"Retry-After": "3"}, body) == Throttle(3.0)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Retry-After": "0"}, {"Retry-After": "soon"}, {"x-ratelimit-reset": "never"},
     {"Retry-After": formatdate(NOW - 30, usegmt=True)}],
)
def test_no_usable_time_means_no_pause(headers: dict[str, str]) -> None:
    """Without a time (or with one already past), a 429 pauses nothing."""
    assert _read(headers, b'{"detail":"slow down"}') == Throttle(None)


def test_elevenlabs_concurrency_429_lowers_concurrency_instead_of_pausing() -> None:
    """too_many_concurrent_requests is flagged, and no pause comes with it."""
    body = json.dumps({"detail": {"status": "too_many_concurrent_requests",
                                  "message": "Too many concurrent requests."}}).encode()
    assert _read({"Retry-After": "5"}, body) == Throttle(None, concurrency=True)


def test_other_elevenlabs_429s_are_not_about_concurrency() -> None:
    """system_busy is a plain 429: it pauses on its Retry-After."""
    body = json.dumps({"detail": {"status": "system_busy", "message": "busy"}}).encode()
    assert _read({"Retry-After": "2"}, body) == Throttle(2.0)


def test_only_the_start_of_a_huge_body_is_read() -> None:
    """A throttle message past the first 64 KiB is not looked for."""
    body = b" " * (64 * 1024) + b"resets in ~9s"
    assert _read(body=body) == Throttle(None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1m30s", 90.0), ("250ms", 0.25), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("0.5s", 0.5),
     ("30", None), ("1x", None), ("", None), ("m", None)],
)
def test_durations(text: str, seconds: float | None) -> None:
    """Go-style durations parse; numbers without a unit and strangers do not."""
    assert parse_duration_text(text) == seconds


def test_reset_numbers_over_a_billion_are_unix_times() -> None:
    """A reset of 10^9 or less is seconds from now; above, a point in time."""
    assert parse_reset("1000000000", now=NOW) == 1e9
    assert parse_reset(str(NOW + 4), now=NOW) == 4.0
    assert parse_reset(str(NOW - 4), now=NOW) == 0.0


_pauses = st.integers(min_value=1, max_value=120_000)  # milliseconds


def _render(form: str, ms: int) -> tuple[dict[str, str], bytes]:
    whole = ms // 1000 or 1
    return {
        "retry-after": ({"Retry-After": str(whole)}, b""),
        "retry-after-date": ({"Retry-After": formatdate(NOW + whole, usegmt=True)}, b""),
        "retry-after-ms": ({"retry-after-ms": str(ms)}, b""),
        "reset-seconds": ({"ratelimit-reset": str(whole)}, b""),
        "reset-unix": ({"x-ratelimit-reset": str(int(NOW) + whole)}, b""),
        "reset-duration": ({"x-ratelimit-reset": f"{ms // 60000}m{ms % 60000 / 1000}s"}, b""),
        "reset-ms": ({"x-ratelimit-reset-requests": f"{ms}ms"}, b""),
        "replicate": ({}, f'{{"detail":"Throttled. Your rate limit resets in ~{whole}s."}}'.encode()),
        "replicate-old": ({}, f'{{"detail":"Expected available in {whole} seconds."}}'.encode()),
    }[form]


_WHOLE_SECOND_FORMS = {"retry-after", "retry-after-date", "reset-seconds", "reset-unix", "replicate",
                       "replicate-old"}


@given(_pauses, st.sampled_from(
    ["retry-after", "retry-after-date", "retry-after-ms", "reset-seconds", "reset-unix",
     "reset-duration", "reset-ms", "replicate", "replicate-old"]
), st.sampled_from([5.0, 60.0, 300.0]))
def test_every_form_round_trips(ms: int, form: str, max_pause: float) -> None:
    """A pause in any form reads back as itself (to the form's precision), capped by max_pause."""
    headers, body = _render(form, ms)
    expected = (ms // 1000 or 1) if form in _WHOLE_SECOND_FORMS else ms / 1000
    throttle = _read(headers, body, max_pause=max_pause)
    assert throttle.pause == pytest.approx(min(expected, max_pause), abs=1e-9)
    assert not throttle.concurrency
