"""The rate limit's promise, checked on the times calls were let through."""

from __future__ import annotations

from sidecar.policy.gcra import MICROS


def assert_window_bound(starts: list[int], rpm: float, burst: int) -> None:
    """Every window [t_i, t_j] of the starts (µs, any order) holds at most burst + rate x its
    length calls."""
    times = sorted(starts)
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = burst + (times[j] - times[i]) * rpm / (60 * MICROS)
            assert j - i + 1 <= allowed + 1e-9, (i, j, times[i], times[j])
