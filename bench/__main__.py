"""`python -m bench [--quick]`: start the upstream, measure each target, print and save."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

from bench import baseline, fleet_rate, instructions, ledger_memory, report, side_by_side, targets, wrk
from bench.core import run_core
from bench.procs import ProcessSet, StartError, pin
from bench.runner import Settings, run_all
from bench.stream import StreamResult, start_zeros, stream_through
from bench.targets import Env

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "bench" / "results" / "last.json"
BASELINE_CACHE = REPO / "bench" / "results" / "baseline"
GiB = 1 << 30


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="1 repeat of 1 s measurements (< 1 min)")
    p.add_argument("--repeats", type=int, help="interleaved repeats per target (default 3)")
    p.add_argument("--duration", type=int, help="seconds per wrk measurement (default 5)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--targets",
        default=",".join(t.name for t in targets.ALL),
        help="comma list from: " + ", ".join(t.name for t in targets.ALL),
    )
    p.add_argument(
        "--baseline-rev",
        default=baseline.DEFAULT_REV,
        help=f"git revision the sidecar-before target runs (default {baseline.DEFAULT_REV}, the last "
        "flat layout); its tree and venv are cached under bench/results/baseline/",
    )
    p.add_argument("--stream-size", type=int, default=GiB, help="bytes (default 1 GiB)")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming memory figure")
    p.add_argument("--no-core", action="store_true", help="skip the pure-core micro-benchmarks")
    p.add_argument(
        "--no-ledger-memory",
        action="store_true",
        help="skip the job ledger's memory figure (100,000 keys in the memory store)",
    )
    p.add_argument(
        "--no-fleet-rate",
        action="store_true",
        help="skip the shared rate limit figure (3 sidecars x 200 clients on one Redis, 60 s; "
        "10 s with --quick)",
    )
    p.add_argument(
        "--no-side-by-side",
        action="store_true",
        help="skip the limited routes measured on one core at the same time as the unlimited one "
        "(the ratio the VM's noise moves least)",
    )
    p.add_argument(
        "--no-instructions",
        action="store_true",
        help="skip the instruction counts a request (the sidecar targets under callgrind, ~2 min)",
    )
    p.add_argument("--proxy-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--keep-workdir", action="store_true", help="keep configs and logs")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.duration = args.duration or (1 if args.quick else 5)
    return args


def _baseline(rev: str) -> baseline.Baseline | str:
    """The older sidecar's tree and venv (cached), or why not: then that target's rows say so."""
    print(f"bench: preparing the sidecar at {rev} (cached under {BASELINE_CACHE})", file=sys.stderr)
    try:
        older = baseline.prepare(REPO, rev, BASELINE_CACHE)
    except baseline.BaselineError as exc:
        print(f"bench: sidecar-before: {exc}", file=sys.stderr)
        return str(exc)
    print(f"bench: sidecar-before runs {older.sha[:12]} from {older.src}", file=sys.stderr)
    return older


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the `with` blocks that stop every child


def _stream(env: Env, procs: ProcessSet, size: int) -> dict[str, StreamResult | str]:
    out: dict[str, StreamResult | str] = {}
    try:
        zeros = start_zeros(procs, env)
    except StartError as exc:
        return {t.name: f"zeros upstream: {exc}" for t in (targets.BARE, targets.SIDECAR)}
    stream_env = dataclasses.replace(env, upstream=zeros)
    for target in (targets.BARE, targets.SIDECAR):
        try:
            out[target.name] = stream_through(stream_env, target, size)
        except (StartError, OSError) as exc:
            out[target.name] = str(exc)
        _log_stream(target.name, out[target.name])
    if zeros.proc is not None:
        procs.stop(zeros.proc)
    return out


def _log_stream(name: str, outcome: StreamResult | str) -> None:
    if isinstance(outcome, str):
        text = f"FAILED: {outcome}"
    else:
        text = f"{outcome.seconds:.1f} s, {outcome.mb_s:.0f} MB/s, +{outcome.growth_mib:.1f} MiB RSS"
    print(f"stream {name}: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    proxy_cpu, load_cpu = pin(args.proxy_cpu, args.load_cpu)
    load_before = os.getloadavg()[0]
    chosen = [t for t in targets.ALL if t.name in args.targets.split(",")]
    older = _baseline(args.baseline_rev) if targets.SIDECAR_BEFORE in chosen else None
    if isinstance(older, baseline.Baseline):
        label = f"sidecar at {older.sha[:7]}" + (
            " (before the layout change)" if args.baseline_rev == baseline.DEFAULT_REV else ""
        )
        chosen = [dataclasses.replace(t, label=label) if t is targets.SIDECAR_BEFORE else t
                  for t in chosen]
    settings = Settings(args.repeats, args.duration, args.connections)
    with ProcessSet(workdir) as procs:
        upstream = targets.start_upstream(procs, workdir, load_cpu)
        env = Env(procs, workdir, proxy_cpu, load_cpu, REPO, upstream, older)
        scripts = wrk.write_scripts(workdir)
        results = run_all(env, chosen, settings, scripts)
        together = None
        if not args.no_side_by_side:
            together = side_by_side.measure(env, [t.name for t in chosen], settings, scripts["get"])
        counted = None
        if not args.no_instructions:
            names = [n for n in instructions.NAMES if n in {t.name for t in chosen}]
            requests = instructions.REQUESTS // 5 if args.quick else instructions.REQUESTS
            counted = instructions.measure(env, names, requests=requests)
        if upstream.proc is not None:
            procs.stop(upstream.proc)  # frees the load core for the streaming run
        stream = {} if args.no_stream else _stream(env, procs, args.stream_size)
    core = None if args.no_core else run_core(REPO, workdir, proxy_cpu)
    if isinstance(core, str):
        print(f"core micro-benchmarks: FAILED: {core}", file=sys.stderr)
    memory = None if args.no_ledger_memory else ledger_memory.measure(REPO, proxy_cpu)
    if memory is not None:
        print(f"ledger memory: {memory}", file=sys.stderr, flush=True)
    fleet = None
    if not args.no_fleet_rate:
        fleet_settings = fleet_rate.Settings()
        if args.quick:
            fleet_settings = dataclasses.replace(fleet_settings, duration=fleet_rate.QUICK_DURATION_S)
        fleet_dir = workdir / "fleet-rate"
        fleet_dir.mkdir()
        fleet = fleet_rate.measure(REPO, fleet_dir, fleet_settings, proxy_cpu, load_cpu)
        print(f"fleet rate: {fleet_rate.summary_line(fleet)}", file=sys.stderr, flush=True)
    meta = {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv[1:],
        "repeats": args.repeats,
        "duration_s": args.duration,
        "connections": args.connections,
        "proxy_cpu": proxy_cpu,
        "load_cpu": load_cpu,
        "stream_bytes": args.stream_size,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
        "commit": report.commit(REPO),
        "baseline": (
            {"rev": older.rev, "sha": older.sha} if isinstance(older, baseline.Baseline) else older
        ),
        "machine": report.machine(),
    }
    data = report.to_json(results, stream, meta)
    if core is not None:
        data["core_ns"] = core
    if memory is not None:
        data["ledger_memory"] = memory
    if fleet is not None:
        data["fleet_rate"] = fleet
    if counted is not None:
        data["instructions"] = counted
    if together is not None:
        data["side_by_side"] = together
    return data


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.keep_workdir:
            workdir = Path(tempfile.mkdtemp(prefix="bench-"))
            print(f"bench: workdir {workdir}", file=sys.stderr)
            data = run(args, workdir)
        else:
            with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
                data = run(args, Path(tmp))
    except (StartError, OSError) as exc:
        # Only the shared upstream is fatal; a target that fails is a row in the table.
        print(f"bench: cannot run: {exc} (run scripts/install-bench-tools.sh?)", file=sys.stderr)
        return 1
    report.write_json(data, args.output)
    print(report.markdown(data))
    print(f"bench: results written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
