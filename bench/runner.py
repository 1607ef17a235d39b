"""The measurement loop: every target, every repeat, interleaved so that drift hits all alike.

Round-robin (rotated each repeat) rather than all repeats of one target in a row: a machine that
warms up, throttles or gets a noisy neighbour halfway through then skews every target a little
instead of one target a lot. Each figure is later reduced to the median of its repeats.
"""

from __future__ import annotations

import itertools
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench import wrk
from bench.configs import LARGE_PATH, POST_BODY, REPLAY_KEY, SMALL_PATH
from bench.procs import StartError, tree_rss_bytes
from bench.targets import Env, Running, Target

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    repeats: int
    duration: float
    connections: int


@dataclass(slots=True)
class TargetResult:
    """Samples per metric name (one per successful repeat) and why the other repeats failed."""

    target: Target
    samples: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, figures: dict[str, float]) -> None:
        for name, value in figures.items():
            self.samples.setdefault(name, []).append(value)


def warm_request(url: str) -> None:
    """One request before RSS idle is read: lazy imports and first connections are part of idle."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            resp.read()
    except (urllib.error.URLError, OSError) as exc:
        raise StartError(f"warm request to {url} failed: {exc}") from exc


def warm_post(url: str, key: str, *, replayed: bool | None = None) -> None:
    """One keyed POST that must come back 2xx (a non-2xx would not be stored, and the figures would
    measure errors); `replayed` also checks the `X-Sidecar-Replayed` header."""
    request = urllib.request.Request(
        url, data=POST_BODY.encode(), method="POST",
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            flag = resp.headers.get("X-Sidecar-Replayed") == "true"
    except (urllib.error.URLError, OSError) as exc:
        raise StartError(f"POST {url} with key {key!r} failed: {exc}") from exc
    if replayed is not None and flag != replayed:
        raise StartError(f"POST {url} with key {key!r}: X-Sidecar-Replayed is {flag}, not {replayed}")


_RUNS = itertools.count(1)  # tags the keyed wrk runs, so no two runs of one process share a key


def measure_once(
    env: Env, target: Target, settings: Settings, scripts: Mapping[str, Path]
) -> dict[str, float]:
    """Start the target, take every figure once, stop it."""
    running = target.start(env, env.upstream.base_url)
    try:
        if target.request == "get":
            return _figures(running, settings, scripts["get"], env.load_cpu)
        return _post_figures(running, settings, scripts[target.request], target.request, env.load_cpu)
    finally:
        if running.proc is not None:
            env.procs.stop(running.proc)


def _post_figures(
    running: Running, settings: Settings, script: Path, kind: str, cpu: int | None
) -> dict[str, float]:
    """The POST targets: req/s at c32 and latency at c1, each request keyed (no 64 KiB figure).

    `replay` stores its one key first (checked: the first answer is not replayed, the second is).
    """
    url = running.base_url + SMALL_PATH
    warm_post(url, "bench:warm")
    if kind == "replay":
        warm_post(url, REPLAY_KEY, replayed=False)
        warm_post(url, REPLAY_KEY, replayed=True)
    figures = {"rss_idle_mib": tree_rss_bytes(running.rss_pid) / MiB}
    if running.ready_s is not None:
        figures["ready_ms"] = running.ready_s * 1000
    load = wrk.run(url, connections=settings.connections, duration=settings.duration, script=script,
                   cpu=cpu, args=[f"r{next(_RUNS)}"])
    one = wrk.run(url, connections=1, duration=settings.duration, script=script, cpu=cpu,
                  args=[f"r{next(_RUNS)}"])
    figures["rss_load_mib"] = tree_rss_bytes(running.rss_pid) / MiB
    figures |= {
        "rps": load.rps,
        "p50_ms": one.p50_ms,
        "p99_ms": one.p99_ms,
        "error_pct": 100 * max(load.error_ratio, one.error_ratio),
    }
    return figures


def _figures(running: Running, settings: Settings, script: Path, cpu: int | None) -> dict[str, float]:
    small, large = running.base_url + SMALL_PATH, running.base_url + LARGE_PATH
    warm_request(small)
    figures = {"rss_idle_mib": tree_rss_bytes(running.rss_pid) / MiB}
    if running.ready_s is not None:
        figures["ready_ms"] = running.ready_s * 1000
    # Throughput first: it warms every code path before the latency run, whose p99 would
    # otherwise measure first-request costs.
    load = wrk.run(
        small, connections=settings.connections, duration=settings.duration, script=script, cpu=cpu
    )
    one = wrk.run(small, connections=1, duration=settings.duration, script=script, cpu=cpu)
    big = wrk.run(large, connections=settings.connections, duration=settings.duration, script=script, cpu=cpu)
    figures["rss_load_mib"] = tree_rss_bytes(running.rss_pid) / MiB
    figures |= {
        "rps": load.rps,
        "p50_ms": one.p50_ms,
        "p99_ms": one.p99_ms,
        "large_mb_s": big.mb_per_s,
        "error_pct": 100 * max(load.error_ratio, one.error_ratio, big.error_ratio),
    }
    return figures


def run_all(
    env: Env, targets: list[Target], settings: Settings, scripts: Mapping[str, Path]
) -> list[TargetResult]:
    results = [TargetResult(t) for t in targets]
    for rep in range(settings.repeats):
        shift = rep % len(results)
        for result in results[shift:] + results[:shift]:
            name = result.target.name
            try:
                figures = measure_once(env, result.target, settings, scripts)
            except (StartError, wrk.WrkError, OSError) as exc:
                result.failures.append(str(exc))
                _log(f"[{rep + 1}/{settings.repeats}] {name}: FAILED: {exc}")
                continue
            result.add(figures)
            large = f"{figures['large_mb_s']:.0f} MB/s, " if "large_mb_s" in figures else ""
            _log(
                f"[{rep + 1}/{settings.repeats}] {name}: {figures['rps']:.0f} req/s, "
                f"p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} ms, "
                f"{large}RSS {figures['rss_load_mib']:.1f} MiB, errors {figures['error_pct']:.2f}%"
            )
    return results


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
