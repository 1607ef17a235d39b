"""Durations and sizes as the configuration writes them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("1.5s", 1.5), ("5m", 300.0), ("1h", 3600.0),
     (".5s", 0.5), (" 10s ", 10.0), ("0s", 0.0), ("1100ms", 1.1)],
)
def test_duration_strings_with_a_unit(text: str, seconds: float) -> None:
    """Each supported unit converts to float seconds."""
    assert parse_duration(text) == seconds


def test_integer_durations_are_milliseconds() -> None:
    """An integer is milliseconds, as the original system's recoveryTimeout: 30000."""
    assert parse_duration(30000) == 30.0
    assert parse_duration(0) == 0.0


@pytest.mark.parametrize(
    "bad", [True, False, -1, "-5s", "30", "30x", "s", "", "1e3s", "ten seconds", 1.5, None, [1]]
)
def test_duration_rejects_what_it_cannot_read(bad: object) -> None:
    """Bools, negatives, unitless strings, unknown units and other types raise ValueError."""
    with pytest.raises(ValueError, match=r"duration|negative|unit"):
        parse_duration(bad)


def test_duration_error_says_what_was_expected() -> None:
    """The message names the accepted forms, so the user can fix the file."""
    with pytest.raises(ValueError) as info:
        parse_duration("soon")
    assert "'250ms'" in str(info.value) and "milliseconds" in str(info.value)


def test_duration_too_large_is_a_value_error() -> None:
    """A number too large for a float is a ValueError, never an OverflowError."""
    with pytest.raises(ValueError):
        parse_duration(10**400)
    with pytest.raises(ValueError):
        parse_duration("9" * 400 + "h")


@pytest.mark.parametrize(
    ("text", "size"),
    [("50MiB", 50 * 1024**2), ("1KiB", 1024), ("1GiB", 1024**3), ("10MB", 10_000_000),
     ("512B", 512), ("100kB", 100_000), ("1.5KiB", 1536), ("2048", 2048), (4096, 4096), (0, 0)],
)
def test_sizes(text: object, size: int) -> None:
    """Binary and decimal units convert to int bytes; integers are bytes."""
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", [True, -1, "-1MiB", "10 parsecs", "MiB", "", 1.5, None, "1e400MiB"])
def test_size_rejects_what_it_cannot_read(bad: object) -> None:
    """Bools, negatives, unknown units and other types raise ValueError naming the form."""
    with pytest.raises(ValueError, match=r"size|negative|unit|large"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(30.0, "30s"), (0.25, "250ms"), (300.0, "5m"), (3600.0, "1h"), (90.0, "90s"), (0.0, "0ms")],
)
def test_format_duration_uses_the_largest_whole_unit(seconds: float, text: str) -> None:
    """Formatting picks the unit a human would write."""
    assert format_duration(seconds) == text


def test_format_size_uses_binary_units_when_whole() -> None:
    """Whole KiB/MiB/GiB are written with the unit, anything else as bytes."""
    assert format_size(50 * 1024**2) == "50MiB"
    assert format_size(1024) == "1KiB"
    assert format_size(1000) == 1000


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False))
def test_format_duration_round_trips(seconds: float) -> None:
    """Any duration formats to a string that parses back to exactly the same float."""
    assert parse_duration(format_duration(seconds)) == seconds


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**50))
def test_format_size_round_trips(size: int) -> None:
    """Any size formats to a value that parses back to the same byte count."""
    assert parse_size(format_size(size)) == size
