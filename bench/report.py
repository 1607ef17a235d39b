"""Figures to medians and spreads, then to JSON (bench/results/last.json) and Markdown.

The Markdown is meant to be pasted into docs/performance.md as is, so it carries its own legend.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import instructions, side_by_side
from bench.runner import TargetResult
from bench.stream import StreamResult

# (key, column title, format); the order is the table's.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("rps", "req/s (c32)", "{:.0f}"),
    ("p50_ms", "p50 ms (c1)", "{:.3f}"),
    ("p99_ms", "p99 ms (c1)", "{:.3f}"),
    ("large_mb_s", "64 KiB MB/s (c32)", "{:.0f}"),
    ("rss_idle_mib", "RSS idle MiB", "{:.1f}"),
    ("rss_load_mib", "RSS after load MiB", "{:.1f}"),
    ("ready_ms", "start→ready ms", "{:.0f}"),
    ("error_pct", "errors %", "{:.2f}"),
)
RATIO_METRICS = ("rps", "p50_ms", "p99_ms", "large_mb_s", "rss_load_mib")
StreamOutcome = StreamResult | str


@dataclass(frozen=True, slots=True)
class Pair:
    """One target against another from the same run; limits are the goal, None: no goal stated."""

    target: str
    reference: str
    title: str
    rps_ratio_min: float | None = None
    p50_added_ms_max: float | None = None


PAIRS = (
    Pair("sidecar", "sidecar-before", "sidecar now / sidecar-before (the baseline rev)"),
    Pair("sidecar-limited", "sidecar", "local rate limit / unlimited", 0.9, 0.3),
    Pair("sidecar-limited-redis", "sidecar", "Redis rate limit / unlimited", 0.9, 1.0),
)


def stats(samples: Sequence[float]) -> dict[str, Any]:
    """Median and spread; spread_pct = (max - min) / median, the honest width of a few repeats."""
    median = statistics.median(samples)
    lo, hi = min(samples), max(samples)
    spread = (hi - lo) / median * 100 if median else 0.0
    return {"median": median, "min": lo, "max": hi, "spread_pct": spread, "samples": list(samples)}


def commit(repo: Path) -> str:
    """The tree the sidecar ran from; figures are only comparable between known commits."""
    head = _version(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(repo), "status", "--porcelain", "--", "sidecar"])
    return head + ("+dirty" if dirty not in ("?", "missing") else "")


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": _version(["wrk", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "nginx": _version(["nginx", "-v"]),
    }


def _version(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "missing"
    return ((proc.stdout or proc.stderr).strip().splitlines() or ["?"])[0]


def to_json(
    results: Sequence[TargetResult],
    stream: Mapping[str, StreamOutcome],
    meta: Mapping[str, Any],
) -> dict[str, Any]:
    targets = {
        r.target.name: {
            "label": r.target.label,
            "ok": bool(r.samples),
            "failures": r.failures,
            "metrics": {k: stats(v) for k, v in r.samples.items()},
        }
        for r in results
    }
    streams = {
        name: (
            {"ok": False, "error": out}
            if isinstance(out, str)
            else {
                "ok": True,
                "seconds": out.seconds,
                "mb_s": out.mb_s,
                "rss_before_mib": out.rss_before_mib,
                "rss_peak_mib": out.rss_peak_mib,
                "growth_mib": out.growth_mib,
            }
        )
        for name, out in stream.items()
    }
    return {"meta": dict(meta), "targets": targets, "stream": streams}


def write_json(data: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def markdown(data: Mapping[str, Any]) -> str:
    meta, targets = data["meta"], data["targets"]
    lines = [
        f"Commit {meta['commit']}; {meta['machine']['cpu_model']}, nproc {meta['machine']['nproc']}; "
        "proxy on core "
        f"{meta['proxy_cpu']}, wrk and upstream on core {meta['load_cpu']}; "
        f"{meta['repeats']} repeat(s) of {meta['duration_s']:.0f} s, median shown"
        + (", (x%) = (max - min) / median" if meta["repeats"] > 1 else "")
        + f"; load average before the run {meta['loadavg_1m_before']:.2f}"
        + (f", after {meta['loadavg_1m_after']:.2f}" if "loadavg_1m_after" in meta else "")
        + ".",
        "",
        "| target | " + " | ".join(title for _, title, _ in METRICS) + " |",
        "|---|" + "---:|" * len(METRICS),
    ]
    for t in targets.values():
        lines.append(f"| {t['label']} | " + " | ".join(_cells(t)) + " |")
    lines += ["", _ratios(targets), ""]
    notes = [
        f"- {t['label']}: {len(t['failures'])} failed run(s): {_short(t['failures'][0])}"
        for t in targets.values()
        if t["failures"]
    ]
    lines += notes + ([""] if notes else [])
    if data["stream"]:
        lines += _stream_table(data["stream"], meta["stream_bytes"])
    pairs = _pairs_table(targets)
    if pairs:
        lines += ["", *pairs]
    together = data.get("side_by_side")
    if together is not None and together["pairs"]:
        lines += ["", *side_by_side.summary(together)]
    goals = _goals_table(targets, data["stream"])
    if goals:
        lines += ["", *goals]
    ledger = _ledger_table(targets, data.get("ledger_memory"))
    if ledger:
        lines += ["", *ledger]
    fleet = data.get("fleet_rate")
    if fleet is not None:
        lines += ["", *_fleet_table(fleet)]
    counted = data.get("instructions")
    if counted is not None:
        lines += ["", *instructions.summary(counted)]
    core = data.get("core_ns")
    if core is not None:
        lines += ["", *_core_table(core)]
    return "\n".join(lines).rstrip() + "\n"


def _median(t: Mapping[str, Any] | None, key: str) -> float | None:
    if t is None or not t["ok"] or key not in t["metrics"]:
        return None
    value: float = t["metrics"][key]["median"]
    return value


def _goals_table(targets: Mapping[str, Any], stream: Mapping[str, Any]) -> list[str]:
    """The sidecar against its performance goals (docs/performance.md), as ratios within this run."""
    side, bare, direct = targets.get("sidecar"), targets.get("bare"), targets.get("direct")
    if _median(side, "rps") is None:
        return []

    def ratio(key: str) -> float | None:
        a, b = _median(side, key), _median(bare, key)
        return a / b if a is not None and b else None

    def added(key: str) -> float | None:
        a, b, d = _median(side, key), _median(bare, key), _median(direct, key)
        if a is None or b is None or d is None or b <= d:
            return None
        return (a - d) / (b - d)

    growth = stream.get("sidecar", {})
    rows: list[tuple[str, float | None, float, bool, str]] = [
        ("req/s (c32) vs bare (stretch 1.3)", ratio("rps"), 1.0, True, "{:.2f}x"),
        ("added p50 latency vs bare's (over direct)", added("p50_ms"), 1.2, False, "{:.2f}x"),
        ("added p99 latency vs bare's (over direct)", added("p99_ms"), 1.5, False, "{:.2f}x"),
        ("64 KiB MB/s vs bare", ratio("large_mb_s"), 1.0, True, "{:.2f}x"),
        ("RSS idle MiB", _median(side, "rss_idle_mib"), 45.0, False, "{:.1f}"),
        ("RSS after load MiB", _median(side, "rss_load_mib"), 60.0, False, "{:.1f}"),
        ("RSS growth streaming 1 GiB, MiB", growth.get("growth_mib") if growth.get("ok") else None, 10.0,
         False, "{:.1f}"),
        ("start→ready ms", _median(side, "ready_ms"), 1000.0, False, "{:.0f}"),
    ]
    lines = ["Goals for the sidecar (docs/performance.md), from this run:", "",
             "| goal | value | limit | met |", "|---|---:|---:|---|"]
    for title, value, limit, higher, fmt in rows:
        if value is None:
            lines.append(f"| {title} | - | {limit:g} | - |")
            continue
        met = value >= limit if higher else value <= limit
        lines.append(f"| {title} | {fmt.format(value)} | {'≥' if higher else '≤'} {limit:g} | "
                     f"{'yes' if met else 'NO'} |")
    return lines


def _pairs_table(targets: Mapping[str, Any]) -> list[str]:
    """Each pair whose two targets both ran: medians side by side, the ratio or the difference, and
    the per-repeat ratios (repeat i of both was measured in the same round, minutes apart at most)."""
    lines = [
        "Pairs from this run: target / reference (per-repeat ratios in brackets; added = over direct).",
        "",
        "| comparison | req/s (c32) | 64 KiB MB/s (c32) | p50 ms (c1) | p99 ms (c1) | RSS after load MiB "
        "| goal |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    direct = targets.get("direct")
    rows = 0
    for pair in PAIRS:
        a, b = targets.get(pair.target), targets.get(pair.reference)
        if _median(a, "rps") is None or _median(b, "rps") is None:
            continue
        assert a is not None and b is not None
        cells = [
            _pair_ratio(a, b, "rps", "{:.0f}"),
            _pair_ratio(a, b, "large_mb_s", "{:.0f}"),
            _pair_latency(a, b, direct, "p50_ms"),
            _pair_latency(a, b, direct, "p99_ms"),
            _pair_diff(a, b, "rss_load_mib"),
        ]
        lines.append(f"| {pair.title} | " + " | ".join(cells) + f" | {_pair_goal(pair, a, b)} |")
        rows += 1
    return lines if rows else []


def _pair_ratio(a: Mapping[str, Any], b: Mapping[str, Any], key: str, fmt: str) -> str:
    va, vb = _median(a, key), _median(b, key)
    if va is None or not vb:
        return "-"
    each = _per_repeat(a, b, key)
    return f"{fmt.format(va)} / {fmt.format(vb)} = {va / vb:.2f}x" + (f" ({each})" if each else "")


def _per_repeat(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> str:
    """Ratios repeat by repeat, only when both targets succeeded in every repeat (else unpaired)."""
    sa, sb = a["metrics"][key]["samples"], b["metrics"][key]["samples"]
    if len(sa) < 2 or len(sa) != len(sb) or a["failures"] or b["failures"]:
        return ""
    return ", ".join(f"{x / y:.2f}" if y else "-" for x, y in zip(sa, sb, strict=True))


def _pair_latency(a: Mapping[str, Any], b: Mapping[str, Any], direct: Mapping[str, Any] | None,
                  key: str) -> str:
    va, vb, vd = _median(a, key), _median(b, key), _median(direct, key)
    if va is None or vb is None:
        return "-"
    cell = f"{va:.3f} / {vb:.3f}: {va - vb:+.3f} ms"
    if vd is not None and vb > vd:
        cell += f", added {(va - vd) / (vb - vd):.2f}x"
    return cell


def _pair_diff(a: Mapping[str, Any], b: Mapping[str, Any], key: str) -> str:
    va, vb = _median(a, key), _median(b, key)
    return "-" if va is None or vb is None else f"{va:.1f} / {vb:.1f}: {va - vb:+.1f}"


def _pair_goal(pair: Pair, a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    checks = []
    ra, rb = _median(a, "rps"), _median(b, "rps")
    if pair.rps_ratio_min is not None and ra is not None and rb:
        ok = ra / rb >= pair.rps_ratio_min
        checks.append(f"req/s ≥ {pair.rps_ratio_min:g}x: {'yes' if ok else 'NO'}")
    pa, pb = _median(a, "p50_ms"), _median(b, "p50_ms")
    if pair.p50_added_ms_max is not None and pa is not None and pb is not None:
        ok = pa - pb <= pair.p50_added_ms_max
        checks.append(f"p50 +≤ {pair.p50_added_ms_max:g} ms: {'yes' if ok else 'NO'}")
    return "; ".join(checks) or "-"


def _ledger_table(targets: Mapping[str, Any], memory: Mapping[str, Any] | None) -> list[str]:
    """The job ledger's goals: its added p50 on the same keyed POST route, replays against a GET."""
    post, replay, get = targets.get("sidecar-post"), targets.get("sidecar-replay"), targets.get("sidecar")

    def added(name: str) -> float | None:
        a, b = _median(targets.get(name), "p50_ms"), _median(post, "p50_ms")
        return a - b if a is not None and b is not None else None

    rps_replay, rps_get = _median(replay, "rps"), _median(get, "rps")
    rows: list[tuple[str, float | None, float, bool, str]] = []
    if "sidecar-ledger-sqlite" in targets:
        rows.append(("added p50 ms, ledger on SQLite (over the same route without it)",
                     added("sidecar-ledger-sqlite"), 1.0, False, "{:.3f}"))
    if "sidecar-ledger-redis" in targets:
        rows.append(("added p50 ms, ledger on Redis (over the same route without it)",
                     added("sidecar-ledger-redis"), 1.0, False, "{:.3f}"))
    if replay is not None:
        rows.append(("replay req/s vs a proxied GET", rps_replay / rps_get if rps_replay and rps_get
                     else None, 1.0, True, "{:.2f}x"))
    if memory is not None and memory.get("ok"):
        rows.append((f"RSS growth, {memory['keys']:,} keys in the memory store (cap "
                     f"{memory['max_entries']:,}), MiB", memory["growth_mib"], 10.0, False, "{:.1f}"))
    capped = (memory or {}).get("capped") or {}
    if capped.get("ok"):
        rows.append((f"RSS growth, {capped['keys']:,} keys at cap {capped['max_entries']:,} "
                     f"({capped['evictions']:,} evicted), MiB", capped["growth_mib"], 10.0, False,
                     "{:.1f}"))
    if not rows:
        return []
    lines = ["The job ledger (docs/jobs.md), from this run:", "",
             "| goal | value | limit | met |", "|---|---:|---:|---|"]
    for title, value, limit, higher, fmt in rows:
        if value is None:
            lines.append(f"| {title} | - | {limit:g} | - |")
            continue
        met = value >= limit if higher else value <= limit
        lines.append(f"| {title} | {fmt.format(value)} | {'≥' if higher else '≤'} {limit:g} | "
                     f"{'yes' if met else 'NO'} |")
    return lines


def _fleet_table(fleet: Mapping[str, Any]) -> list[str]:
    """The shared rate limit under load (bench/fleet_rate.py): what reached the provider."""
    conf = fleet["settings"]
    head = (f"Shared rate limit (bench/fleet_rate.py): {conf['sidecars']} sidecars x {conf['clients']} "
            f"clients, {conf['rpm']:g}/min, burst {conf['burst']}, max_wait {conf['max_wait']:g} s, "
            f"on one Redis:")
    if not fleet.get("ok"):
        return [head, "", f"failed: {_short(fleet.get('error', '?'))}"]
    met = {True: "yes", False: "NO"}
    lines = [
        head, "",
        "| goal | value | limit | met |", "|---|---:|---:|---|",
        f"| admitted in {fleet['load_s']:.1f} s of load, vs {fleet['expected']:.1f} expected | "
        f"{fleet['admitted']} ({fleet['deviation_pct']:+.2f}%) | ±2% | {met[fleet['deviation_met']]} |",
        f"| most arrivals in any {fleet['window_s']:g} s window | {fleet['window_max']} | "
        f"≤ {fleet['window_limit']:g} | {met[fleet['window_met']]} |",
        "",
        f"Refused (429 rate_limited): {fleet['refused']:,}; relayed 200: {fleet['relayed_ok']:,}; other "
        f"answers {fleet['other_status']}, socket errors {fleet['socket_errors']}, timeouts "
        f"{fleet['timeouts']}; arrivals after the load ended (booked before): {fleet['after_load']}; "
        f"switches to local limits (fleet_limiter_unavailable): {fleet['fleet_fallbacks']}; sidecar CPU "
        + ", ".join(f"{pct:.0f}%" for pct in fleet["sidecar_cpu_pct"]) + ".",
    ]
    return lines


def _core_table(core: Mapping[str, float] | str) -> list[str]:
    """pytest-benchmark medians of bench/test_core_bench.py, on the proxy core."""
    if isinstance(core, str):
        return [f"Pure-core micro-benchmarks failed: {_short(core)}"]
    lines = [
        "Pure core, per call on the proxy core (bench/test_core_bench.py, pytest-benchmark median):",
        "",
        "| benchmark | ns per call |",
        "|---|---:|",
    ]
    lines += [f"| {name.removeprefix('test_')} | {ns:.0f} |" for name, ns in core.items()]
    return lines


def _cells(t: Mapping[str, Any]) -> list[str]:
    if not t["ok"]:
        return [f"failed: {_short(t['failures'][0])}"] + ["-"] * (len(METRICS) - 1)
    cells = []
    for key, _, fmt in METRICS:
        m = t["metrics"].get(key)
        if m is None:
            cells.append("-")
            continue
        cell = fmt.format(m["median"])
        if len(m["samples"]) > 1:
            cell += f" ({m['spread_pct']:.0f}%)"
        cells.append(cell)
    return cells


def _ratios(targets: Mapping[str, Any]) -> str:
    refs = [targets.get("haproxy"), targets.get("bare")]
    titles = {key: title for key, title, _ in METRICS}
    head = [
        "Ratios: vs HAProxy / vs bare aiohttp (req/s, MB/s: higher is better; ms, MiB: lower is better).",
        "",
        "| target | " + " | ".join(titles[k] for k in RATIO_METRICS) + " |",
        "|---|" + "---:|" * len(RATIO_METRICS),
    ]
    rows = []
    for t in targets.values():
        if not t["ok"]:
            continue
        cells = [" / ".join(_ratio(t, ref, key) for ref in refs) for key in RATIO_METRICS]
        rows.append(f"| {t['label']} | " + " | ".join(cells) + " |")
    return "\n".join(head + rows)


def _ratio(t: Mapping[str, Any], ref: Mapping[str, Any] | None, key: str) -> str:
    if ref is None or not ref["ok"] or key not in ref["metrics"] or key not in t["metrics"]:
        return "-"
    base = ref["metrics"][key]["median"]
    return f"{t['metrics'][key]['median'] / base:.2f}" if base else "-"


def _stream_table(stream: Mapping[str, Any], size: int) -> list[str]:
    lines = [
        f"Streaming {size / 2**30:g} GiB of zeros through the proxy (client reads and discards):",
        "",
        "| through | seconds | MB/s | RSS before MiB | RSS peak MiB | growth MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in stream.items():
        if not s["ok"]:
            lines.append(f"| {name} | failed: {_short(s['error'])} | - | - | - | - |")
            continue
        lines.append(
            f"| {name} | {s['seconds']:.1f} | {s['mb_s']:.0f} | {s['rss_before_mib']:.1f} | "
            f"{s['rss_peak_mib']:.1f} | {s['growth_mib']:.1f} |"
        )
    return lines


def _short(text: str, limit: int = 100) -> str:
    """The cause, for a table cell: the last line of a log tail says more than the first."""
    head, _, tail = text.partition(": ")
    text = f"{head}: {tail.rsplit(' | ', 1)[-1]}" if tail else head
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
