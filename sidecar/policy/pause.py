"""What a provider's 429 says about waiting: a pause for everyone, or "your concurrency is full".

Read in this order, the first that yields a time wins:

1. ``retry-after-ms``: milliseconds (OpenAI, Anthropic).
2. ``Retry-After``: delta-seconds or an HTTP date (RFC 9110).
3. ``ratelimit-reset`` / ``x-ratelimit-reset``: seconds from now; a Unix time when over 10^9 (GitHub);
   or a duration such as ``1m30s`` or ``250ms``.
4. ``x-ratelimit-reset-<kind>`` (OpenAI's ``-requests`` / ``-tokens``, same value forms): the kinds
   whose ``x-ratelimit-remaining-<kind>`` is 0 are the ones exhausted; without that hint, the longest.
5. The JSON body: a numeric ``retry_after`` (Replicate's low-credit throttle carries one), else its
   text. Replicate has answered ``{"detail": "Request was throttled. Your rate limit resets in ~30s."}``
   and, earlier, ``{"detail": "Request was throttled. Expected available in 1 second."}``; both
   phrasings are read from any body, JSON or not.

The pause is capped by ``max_pause``; with none of these (or zero), there is no pause. A 429 whose
body says ``too_many_concurrent_requests`` (ElevenLabs: ``{"detail": {"status":
"too_many_concurrent_requests", "message": ...}}``) is about the account's concurrency, not its
rate: it lowers the concurrency instead of pausing the provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..config import RateLimitConfig
from .retry import parse_retry_after

__all__ = [
    "CONCURRENCY_MARKERS",
    "DEFAULT_MAX_PAUSE",
    "MAX_INSPECTED_BODY",
    "Throttle",
    "parse_duration_text",
    "parse_reset",
    "read_429",
]

DEFAULT_MAX_PAUSE = RateLimitConfig().max_pause
MAX_INSPECTED_BODY = 64 * 1024
"""Only the first 64 KiB of a 429 body are read; throttle messages are a few hundred bytes."""
CONCURRENCY_MARKERS = frozenset({"too_many_concurrent_requests"})
UNIX_TIME_THRESHOLD = 10**9

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|ns|h|m|s))+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_RESETS_IN = re.compile(
    r"resets?\s+in\s*~?\s*(?:(\d+(?:\.\d+)?)\s*(?:seconds?|secs?)\b|((?:\d+(?:\.\d*)?(?:ms|h|m|s))+))",
    re.IGNORECASE,
)
_AVAILABLE_IN = re.compile(r"available\s+in\s*~?\s*(\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s)\b", re.IGNORECASE)
_STATUS_KEYS = ("status", "code", "type")


@dataclass(frozen=True, slots=True)
class Throttle:
    """``pause``: seconds everyone should hold off (None: no pause). ``concurrency``: account full."""

    pause: float | None
    concurrency: bool = False


def read_429(
    headers: Mapping[str, str], body: bytes, *, now: float, max_pause: float = DEFAULT_MAX_PAUSE
) -> Throttle:
    """Read a 429's headers and body; ``now`` is wall-clock epoch seconds (for dates and Unix times)."""
    text = body[:MAX_INSPECTED_BODY].decode("utf-8", errors="replace")
    document = _json(text)
    if _says_concurrency(document):
        return Throttle(None, concurrency=True)
    lowered = {name.lower(): value for name, value in headers.items()}
    pause = _from_headers(lowered, now)
    if pause is None:
        pause = _from_body(document, text)
    if pause is None or not pause > 0:
        return Throttle(None)
    return Throttle(min(pause, max_pause))


def parse_duration_text(value: str) -> float | None:
    """Seconds for a Go-style duration (``1m30s``, ``250ms``, ``6m0s``, ``1h2m3.5s``), else None."""
    text = value.strip()
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(amount) * _UNITS[unit] for amount, unit in _DURATION_PART.findall(text))


def parse_reset(value: str, *, now: float) -> float | None:
    """Seconds until a ``*ratelimit-reset*`` value: seconds, a Unix time over 10^9, or a duration."""
    text = value.strip()
    if _NUMBER.fullmatch(text):
        number = float(text)
        if number > UNIX_TIME_THRESHOLD:
            return max(0.0, number - now)
        return max(0.0, number)
    return parse_duration_text(text)


def _from_headers(headers: Mapping[str, str], now: float) -> float | None:
    millis = headers.get("retry-after-ms")
    if millis is not None and _NUMBER.fullmatch(millis.strip()):
        return max(0.0, float(millis) / 1000)
    retry_after = parse_retry_after(headers.get("retry-after"), now=now)
    if retry_after is not None:
        return retry_after
    for name in ("ratelimit-reset", "x-ratelimit-reset"):
        if name in headers and (reset := parse_reset(headers[name], now=now)) is not None:
            return reset
    return _from_kinded_resets(headers, now)


def _from_kinded_resets(headers: Mapping[str, str], now: float) -> float | None:
    """``x-ratelimit-reset-<kind>``: the exhausted kinds (remaining 0) if any are marked, else all."""
    resets: dict[str, float] = {}
    for name, value in headers.items():
        if name.startswith("x-ratelimit-reset-") and (reset := parse_reset(value, now=now)) is not None:
            resets[name.removeprefix("x-ratelimit-reset-")] = reset
    exhausted = [
        reset for kind, reset in resets.items()
        if headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
    ]
    chosen = exhausted or list(resets.values())
    return max(chosen, default=None)


def _from_body(document: object, text: str) -> float | None:
    if isinstance(document, dict):
        retry_after = document.get("retry_after")
        if isinstance(retry_after, int | float) and not isinstance(retry_after, bool):
            return float(retry_after)
    if match := _RESETS_IN.search(text):
        plain, duration = match.groups()
        return float(plain) if plain is not None else parse_duration_text(duration)
    if match := _AVAILABLE_IN.search(text):
        return float(match.group(1))
    return None


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _says_concurrency(document: object) -> bool:
    """``too_many_concurrent_requests`` as a status/code/type at the top or inside ``detail``/``error``."""
    if not isinstance(document, dict):
        return False
    places: list[object] = [document, document.get("detail"), document.get("error")]
    for place in places:
        if isinstance(place, dict):
            for key in _STATUS_KEYS:
                if place.get(key) in CONCURRENCY_MARKERS:
                    return True
    return False
