"""Durations and sizes as the configuration writes them: ``"250ms"``, ``"30s"``, ``"50MiB"``.

Integers keep the original system's meaning: a duration given as an integer is milliseconds
(``recoveryTimeout: 30000``), a size given as an integer is bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_NUMBER_UNIT = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)")
_DURATION_EXPECTED = "a duration like '250ms', '30s', '5m', '1h' or an integer of milliseconds"
_SIZE_EXPECTED = "a size like '512B', '100kB', '10MB', '50MiB', '1GiB' or an integer of bytes"


def parse_duration(value: object) -> float:
    """Return seconds for ``"250ms"``/``"1.5s"``/``"5m"``/``"1h"`` or an int of milliseconds."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be {_DURATION_EXPECTED}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        seconds = value / 1000 if value < 10**300 else math.inf
    else:
        amount, unit = _split(value, _DURATION_UNITS, _DURATION_EXPECTED, case_fold=False)
        # divide for ms, so that "1100ms" is exactly the float 1.1
        seconds = amount / 1000 if unit == "ms" else amount * _DURATION_UNITS[unit]
    if not math.isfinite(seconds):
        raise ValueError(f"is too large, got {value!r}")
    return seconds


def parse_size(value: object) -> int:
    """Return bytes for ``"50MiB"``/``"10MB"``/``"512B"``/``"100kB"`` or an int of bytes."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"must be {_SIZE_EXPECTED}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must not be negative, got {value}")
        return value
    if value.strip().isdigit() and value.strip().isascii():
        return int(value.strip())
    number, unit = _split(value, _SIZE_UNITS, _SIZE_EXPECTED, case_fold=True)
    amount = number * _SIZE_UNITS[unit]
    if not math.isfinite(amount):
        raise ValueError(f"is too large, got {value!r}")
    return int(amount)


def _split(text: str, units: Mapping[str, object], expected: str,
           *, case_fold: bool) -> tuple[float, str]:
    """Split ``<number><unit>``; the unit is required and must be one of ``units``."""
    stripped = text.strip()
    if stripped.startswith("-"):
        raise ValueError(f"must not be negative, got {text!r}")
    match = _NUMBER_UNIT.fullmatch(stripped)
    if match is None or not match.group(2):
        raise ValueError(f"must be {expected}, got {text!r}")
    unit = match.group(2).lower() if case_fold else match.group(2)
    if unit not in units:
        raise ValueError(f"has an unknown unit {match.group(2)!r}; must be {expected}")
    return float(match.group(1)), unit


def format_duration(seconds: float) -> str:
    """A unit string that parses back to exactly ``seconds`` (``30.0 -> "30s"``)."""
    millis = round(seconds * 1000)
    if millis / 1000 == seconds:
        for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if millis and millis % size == 0:
                return f"{millis // size}{unit}"
        return f"{millis}ms"
    return f"{format(Decimal(repr(seconds)), 'f')}s"


def format_size(size: int) -> int | str:
    """``52428800 -> "50MiB"``; sizes that are not whole KiB/MiB/GiB stay plain byte counts."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size and size % factor == 0:
            return f"{size // factor}{unit}"
    return size
