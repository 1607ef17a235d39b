"""``python -m tests.reliability.soak --duration 10m``: the load-with-faults scenario, for longer.

Prints the figures (requests, request latency, responses by code, the provider's fault share
outside outages, duplicates, RSS start/peak/end, breaker transitions and openings outside outages,
outages) and exits 1 if any invariant of ``tests/reliability/test_load.py`` broke.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from sidecar.config.units import parse_duration

from .load import Spec, run_on_uvloop


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.reliability.soak", description=__doc__)
    p.add_argument("--duration", default="10m", help="how long to run (10m, 90s, ...)")
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--outage-every", default="60s", help="time between injected outages")
    p.add_argument("--outage", default="3s", help="length of each outage (100%% 503)")
    args = p.parse_args(argv)
    spec = Spec(requests=None, duration=parse_duration(args.duration), concurrency=args.concurrency,
                outage_every=parse_duration(args.outage_every), outage_seconds=parse_duration(args.outage))
    print(f"soak: {args.duration} at {spec.concurrency} clients, faults 10% 503 + 2% reset"
          f" + latency on 20%, a {args.outage} outage every {args.outage_every}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = run_on_uvloop(spec, Path(tmp))
    print(report.summary())
    problems = report.problems()
    for problem in problems:
        print("PROBLEM:", problem)
    print("soak: OK" if not problems else f"soak: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
