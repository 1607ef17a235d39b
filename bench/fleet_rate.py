"""A fleet's shared rate limit under load, judged on what reaches the provider.

    python -m bench.fleet_rate [--duration 60] [--clients 200] [--sidecars 3] [--rpm 600] [--burst 10]
    # prints one JSON object: admitted, expected, deviation, the busiest 10 s window, refusals

What runs: a redis-server (load core); a counting provider in this process (a thread of its own,
load core) that records each call's monotonic arrival time and answers 200; N sidecars (proxy core)
whose provider has `rate_limit: {requests_per_minute: R, burst: B, max_wait: W}`, shared through
the ledger's Redis; one `wrk -t1 -cC` per sidecar (load core), started once every sidecar is ready.

The goal: admitted calls within 2% of `R x load seconds + B`, and no 10 s window holding more than
`R / 6 + B` arrivals. The load window (from starting wrk to the end of its run) is the denominator:
demand exceeds the limit all through it, so a limiter at its limit admits exactly that many; the
calls already booked when wrk stops still arrive afterwards (up to W later) and are counted apart,
but they count in the window bound, which must hold at every moment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import configs, targets, wrk
from bench.counting import CountingProvider
from bench.procs import ProcessSet, StartError, pin
from bench.targets import Env, Running

REPO = Path(__file__).resolve().parent.parent
PATH = "/fleet"  # what wrk asks each sidecar for: /bench/fleet, forwarded as /fleet
WINDOW_S = 10.0
DEVIATION_GOAL_PCT = 2.0
QUICK_DURATION_S = 10.0  # `python -m bench --quick`: enough for one 10 s window, not for the 2%
TICKS = os.sysconf("SC_CLK_TCK")

# Counts the answers by kind; `done` adds the thread's counts to wrk's own and prints one JSON line.
LUA = """\
ok, limited, other = 0, 0, 0
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
response = function(status, headers, body)
  if status == 200 then
    ok = ok + 1
  elseif status == 429 and headers["X-Sidecar-Error"] == "rate_limited" then
    limited = limited + 1
  else
    other = other + 1
  end
end
done = function(summary, latency, requests)
  local o, l, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o, l, x = o + t:get("ok"), l + t:get("limited"), x + t:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests":%d,"duration_us":%d,"ok":%d,"rate_limited":%d,"other_status":%d,'
    .. '"socket_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    "MARKER", summary.requests, summary.duration, o, l, x, e.connect + e.read + e.write,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
""".replace("MARKER", wrk.MARKER)


@dataclass(frozen=True, slots=True)
class Settings:
    """The fleet and its load; `max_wait` keeps a line of waiters booked ahead in the shared budget."""

    sidecars: int = 3
    clients: int = 200
    rpm: float = 600.0
    burst: int = 10
    duration: float = 60.0
    max_wait: float = 5.0

    def rate_limit(self) -> str:
        """The provider's `rate_limit` block (docs/configuration.md#rate_limit), as YAML flow."""
        return (f"{{requests_per_minute: {self.rpm:g}, burst: {self.burst}, "
                f"max_wait: {self.max_wait:g}s}}")


def max_in_window(times: Sequence[float], window: float) -> tuple[int, float | None]:
    """The most arrivals in any half-open window [t, t + window), and its first arrival (None: none).

    Half-open, as a provider counting "the last N seconds" does: two calls exactly `window` apart
    never share a window.
    """
    ordered = sorted(times)
    best, first, lo = 0, None, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] >= window:
            lo += 1
        if hi - lo + 1 > best:
            best, first = hi - lo + 1, ordered[lo]
    return best, first


def deviation_pct(admitted: int, expected: float) -> float:
    """How far the admitted count is from the expected one, in % of the expected (+: too many)."""
    return (admitted - expected) / expected * 100 if expected else 0.0


def judge(arrivals: Sequence[float], load_start: float, load_end: float, rpm: float, burst: int,
          window: float = WINDOW_S) -> dict[str, Any]:
    """The figures and goals from the provider's arrival times and the load window (monotonic s).

    Admitted counts the arrivals within [load_start, load_end); expected is `rpm x load seconds / 60
    + burst` (the burst is allowed once, at the start). The window bound is checked on every arrival,
    those after the load included.
    """
    seconds = load_end - load_start
    admitted = sum(1 for t in arrivals if load_start <= t < load_end)
    expected = rpm / 60 * seconds + burst
    deviation = deviation_pct(admitted, expected)
    busiest, busiest_at = max_in_window(arrivals, window)
    window_limit = rpm / 60 * window + burst
    ordered = sorted(arrivals)
    span = ordered[-1] - ordered[0] if len(ordered) > 1 else 0.0
    span_expected = rpm / 60 * span + burst
    return {
        "load_s": seconds,
        "admitted": admitted,
        "expected": expected,
        "deviation_pct": deviation,
        "deviation_met": abs(deviation) <= DEVIATION_GOAL_PCT,
        "window_s": window,
        "window_max": busiest,
        "window_max_starts_s": None if busiest_at is None else busiest_at - load_start,
        "window_limit": window_limit,
        "window_met": busiest <= window_limit,
        "before_load": sum(1 for t in arrivals if t < load_start),
        "after_load": sum(1 for t in arrivals if t >= load_end),
        "first_arrival_s": ordered[0] - load_start if ordered else None,
        "span_s": span,
        "span_arrivals": len(ordered),
        "span_expected": span_expected,
        "span_deviation_pct": deviation_pct(len(ordered), span_expected),
    }


@contextmanager
def _provider_thread() -> Iterator[CountingProvider]:
    """The counting provider on a loop of its own thread, so that the harness may block meanwhile."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="counting-provider", daemon=True)
    thread.start()
    provider = asyncio.run_coroutine_threadsafe(CountingProvider().start(), loop).result(10)
    try:
        yield provider
    finally:
        asyncio.run_coroutine_threadsafe(provider.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def _fallbacks(log: Path) -> int:
    """How often a sidecar left the fleet's limits for its own (Redis slower than 250 ms)."""
    try:
        return log.read_text(errors="replace").count("fleet_limiter_unavailable")
    except OSError:
        return 0


def _load(sidecars: Sequence[Running], settings: Settings, script: Path,
          cpu: int | None) -> tuple[float, list[dict[str, Any]]]:
    """One wrk per sidecar, all at once; (monotonic start, each wrk's summary or its failure)."""
    started = time.monotonic()
    runs = [
        subprocess.Popen(
            wrk.command(s.base_url + PATH, connections=settings.clients, duration=settings.duration,
                        script=script, cpu=cpu, timeout=settings.max_wait + 5),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for s in sidecars
    ]
    out: list[dict[str, Any]] = []
    try:
        for run in runs:
            stdout, stderr = run.communicate(timeout=settings.duration + settings.max_wait + 30)
            raw = wrk.summary(stdout)
            out.append(raw if raw is not None else {"error": wrk.failure(run.returncode, stdout, stderr)})
    finally:
        for run in runs:  # only when one hung: no wrk outlives the fleet it was loading
            if run.poll() is None:
                run.kill()
                run.wait()
    return started, out


def run(workdir: Path, settings: Settings, proxy_cpu: int | None, load_cpu: int | None,
        repo: Path = REPO) -> dict[str, Any]:
    """Start the fleet, load it, count; the result as saved under `fleet_rate` in the bench's JSON."""
    script = workdir / "fleet.lua"
    script.write_text(LUA)
    with ProcessSet(workdir) as procs, _provider_thread() as provider:
        redis_url = targets.start_redis(procs, workdir, load_cpu)
        env = Env(procs, workdir, proxy_cpu, load_cpu, repo,
                  Running(provider.url, None, os.getpid(), None))
        config = partial(configs.sidecar, redis_url=redis_url, rate_limit=settings.rate_limit(),
                         health_check=False)
        sidecars = [
            targets.start_sidecar(env, provider.url, config, name=f"fleet-sidecar-{n}",
                                  environ={**os.environ, "SIDECAR_INSTANCE_ID": f"fleet-{n}"})
            for n in range(settings.sidecars)
        ]
        cpu_before = [_cpu_seconds(s.rss_pid) for s in sidecars]
        load_start, loads = _load(sidecars, settings, script, load_cpu)
        cpu_used = [_cpu_seconds(s.rss_pid) - b for s, b in zip(sidecars, cpu_before, strict=True)]
        time.sleep(settings.max_wait + 1)  # the calls booked before the load ended still arrive
        arrivals = list(provider.arrivals)
        logs = [s.proc.log_path for s in sidecars if s.proc is not None]
        fallbacks = sum(_fallbacks(log) for log in logs)
    ran = [r for r in loads if "error" not in r]
    if not ran:
        return {"ok": False, "error": loads[0]["error"], "settings": asdict(settings)}
    load_s = max(r["duration_us"] for r in ran) / 1e6
    figures = judge(arrivals, load_start, load_start + load_s, settings.rpm, settings.burst)
    return {
        "ok": True,
        "settings": asdict(settings),
        **figures,
        "relayed_ok": sum(r["ok"] for r in ran),
        "refused": sum(r["rate_limited"] for r in ran),
        "other_status": sum(r["other_status"] for r in ran),
        "socket_errors": sum(r["socket_errors"] for r in ran),
        "timeouts": sum(r["timeouts"] for r in ran),
        "client_p99_ms": max(r["p99_us"] for r in ran) / 1000,
        "client_max_ms": max(r["max_us"] for r in ran) / 1000,
        "wrk_failures": [r["error"] for r in loads if "error" in r],
        "fleet_fallbacks": fallbacks,
        "sidecar_cpu_pct": [used / load_s * 100 for used in cpu_used],
    }


def measure(repo: Path, workdir: Path, settings: Settings, proxy_cpu: int | None,
            load_cpu: int | None) -> dict[str, Any]:
    """`run`, with a start failure (no redis-server, a sidecar that would not start) as the result."""
    try:
        return run(workdir, settings, proxy_cpu, load_cpu, repo)
    except (StartError, OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": str(exc), "settings": asdict(settings)}


def summary_line(result: dict[str, Any]) -> str:
    """One line for stderr: the two goals and whether they were met."""
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    return (f"admitted {result['admitted']} in {result['load_s']:.1f} s, expected "
            f"{result['expected']:.1f} ({result['deviation_pct']:+.2f}%: "
            f"{'met' if result['deviation_met'] else 'MISSED'}); busiest {result['window_s']:g} s "
            f"window {result['window_max']} ≤ {result['window_limit']:g}: "
            f"{'met' if result['window_met'] else 'MISSED'}; refused {result['refused']}, "
            f"fallbacks to local limits {result['fleet_fallbacks']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_rate",
                                     description=__doc__.splitlines()[0])
    defaults = Settings()
    parser.add_argument("--duration", type=float, default=defaults.duration, help="seconds of load")
    parser.add_argument("--clients", type=int, default=defaults.clients, help="connections per sidecar")
    parser.add_argument("--sidecars", type=int, default=defaults.sidecars)
    parser.add_argument("--rpm", type=float, default=defaults.rpm, help="requests_per_minute")
    parser.add_argument("--burst", type=int, default=defaults.burst)
    parser.add_argument("--max-wait", type=float, default=defaults.max_wait, help="seconds")
    parser.add_argument("--proxy-cpu", type=int, default=0)
    parser.add_argument("--load-cpu", type=int, default=1)
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    args = parser.parse_args(argv)
    settings = Settings(args.sidecars, args.clients, args.rpm, args.burst, args.duration, args.max_wait)
    proxy_cpu, load_cpu = pin(args.proxy_cpu, args.load_cpu)
    if args.keep_workdir:
        workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
        print(f"bench: workdir {workdir}", file=sys.stderr)
        result = measure(REPO, workdir, settings, proxy_cpu, load_cpu)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
            result = measure(REPO, Path(tmp), settings, proxy_cpu, load_cpu)
    print(summary_line(result), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
