"""Two sidecars on the proxy core at once, each under its own wrk: the ratio of what each served.

On a shared VM the core's speed moves by ±30% from one run to the next, so a ratio of two runs made
a minute apart (the pairs table) moves by as much, and a route that costs 5% more can measure 0.75x
or 1.2x. Here both routes run during the same seconds on the same core: whatever the machine does
to one it does to the other. Both are CPU-bound, the kernel gives each half the core, so each serves
in inverse proportion to its CPU cost a request: the ratio of their requests is the ratio of their
throughputs on a core of their own. A call that waits (for a Redis round trip, say) leaves its half
to the other and lowers the ratio, so waits count too.

A control pair runs the unlimited sidecar against itself: its ratios show the method's own noise.
Each round starts both fresh (new ports, new Redis for the Redis-limited route), warms both for a
second at once, then measures both for ``duration`` seconds at once.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import wrk
from bench.configs import SMALL_PATH
from bench.procs import StartError
from bench.runner import Settings, warm_request
from bench.targets import LIMITED, LIMITED_REDIS, SIDECAR, Env, Running, Target

__all__ = ["PAIRS", "Pair", "measure", "summary"]

WARM_S = 1.0


@dataclass(frozen=True, slots=True)
class Pair:
    """``target`` against ``reference``; ``goal``: the lowest ratio the goal allows (None: a control)."""

    title: str
    target: Target
    reference: Target
    goal: float | None


PAIRS = (
    Pair("control: unlimited / unlimited", SIDECAR, SIDECAR, None),
    Pair("local rate limit / unlimited", LIMITED, SIDECAR, 0.9),
    Pair("Redis rate limit / unlimited", LIMITED_REDIS, SIDECAR, 0.9),
)


def measure(env: Env, names: Sequence[str], settings: Settings, script: Path) -> dict[str, Any]:
    """Every pair whose targets are among ``names``, ``settings.repeats`` rounds each, interleaved."""
    pairs = [p for p in PAIRS if p.target.name in names and p.reference.name in names]
    rounds: dict[str, list[tuple[float, float]]] = {p.title: [] for p in pairs}
    failures: dict[str, list[str]] = {p.title: [] for p in pairs}
    for rep in range(settings.repeats):
        for pair in pairs:
            try:
                a, b = _round(env, pair, settings, script)
            except (StartError, OSError, wrk.WrkError) as exc:
                failures[pair.title].append(str(exc))
                print(f"side by side [{rep + 1}/{settings.repeats}] {pair.title}: FAILED: {exc}",
                      file=sys.stderr, flush=True)
                continue
            rounds[pair.title].append((a, b))
            print(f"side by side [{rep + 1}/{settings.repeats}] {pair.title}: {a:.0f} / {b:.0f} req/s "
                  f"= {a / b:.3f}", file=sys.stderr, flush=True)
    return {
        "duration_s": settings.duration,
        "connections": settings.connections,
        "pairs": [
            {"title": p.title, "target": p.target.name, "reference": p.reference.name, "goal": p.goal,
             "rps": rounds[p.title], "failures": failures[p.title]}
            for p in pairs
        ],
    }


def _round(env: Env, pair: Pair, settings: Settings, script: Path) -> tuple[float, float]:
    """One round: both started, warmed and measured at once; (target req/s, reference req/s)."""
    started: list[Running] = []
    try:
        for target in (pair.target, pair.reference):
            running = target.start(env, env.upstream.base_url)
            started.append(running)
            warm_request(running.base_url + SMALL_PATH)
        urls = [r.base_url + SMALL_PATH for r in started]
        _both(urls, WARM_S, settings.connections, script, env.load_cpu)
        a, b = _both(urls, settings.duration, settings.connections, script, env.load_cpu)
    finally:
        for running in started:
            if running.proc is not None:
                env.procs.stop(running.proc)
    if a.errors or b.errors:
        raise StartError(f"errors under load: {a.errors} and {b.errors}")
    return a.rps, b.rps


def _both(urls: Sequence[str], duration: float, connections: int, script: Path,
          cpu: int | None) -> tuple[wrk.WrkResult, wrk.WrkResult]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = [pool.submit(wrk.run, url, connections=connections, duration=duration, script=script,
                            cpu=cpu) for url in urls]
        first, second = (run.result() for run in runs)
    return first, second


def summary(measured: Mapping[str, Any]) -> list[str]:
    """Markdown lines: each pair's median ratio, its rounds, and its goal."""
    lines = [
        f"Side by side (bench/side_by_side.py): both sidecars on the proxy core at once, each under its "
        f"own wrk -c{measured['connections']} for {measured['duration_s']:g} s; the ratio of their "
        "req/s, round by round. The control shows the method's own noise.",
        "",
        "| pair | median ratio | rounds | goal | met |",
        "|---|---:|---|---:|---|",
    ]
    for pair in measured["pairs"]:
        ratios = [a / b for a, b in pair["rps"] if b]
        goal = pair["goal"]
        goal_cell = "-" if goal is None else f"≥ {goal:g}x"
        if not ratios:
            failed = pair["failures"][0] if pair["failures"] else "no round"
            lines.append(f"| {pair['title']} | failed: {failed} | - | {goal_cell} | - |")
            continue
        median = statistics.median(ratios)
        met = "-" if goal is None else ("yes" if median >= goal else "NO")
        rounds = ", ".join(f"{r:.3f}" for r in ratios)
        lines.append(f"| {pair['title']} | {median:.3f}x | {rounds} | {goal_cell} | {met} |")
    return lines
