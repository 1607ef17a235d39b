"""Instructions a request: the sidecar's CPU cost as callgrind counts it, which the machine's noise
can't move.

On a shared VM one run's throughput moves by ±30% and a change of a few percent is lost in it. The
number of machine instructions the sidecar executes for a request is the same from one run to the
next (within about 1%), so a change of 2% shows. Each target runs under
``valgrind --tool=callgrind --instr-atstart=no`` (some 50 times slower), is warmed up with requests
that are not counted, then counts ``requests`` keep-alive GETs sent one after the other over four
connections. Only the sidecar process is counted: a Redis's own work is not in the figure.

One request at a time is not the load of the throughput figures: there, the fleet limiter's
decisions of one loop turn share a script run, here each request has its own. Read the two together.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench import configs
from bench.procs import StartError
from bench.targets import Env, start_redis, start_sidecar

__all__ = ["NAMES", "TARGETS", "Counted", "count", "measure", "summary", "totals"]

WARM_UP = 300
REQUESTS = 1000
CONNECTIONS = 4
READY_DEADLINE_S = 120.0  # the start-up runs under valgrind too

_TOTALS = re.compile(rb"^totals:\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Counted:
    """``per_request`` instructions (callgrind's Ir) of the sidecar process, over ``requests``."""

    target: str
    per_request: float
    requests: int


def _plain(env: Env) -> Callable[[int, int, str], str]:
    return configs.sidecar


def _limited(env: Env) -> Callable[[int, int, str], str]:
    return partial(configs.sidecar, limited=True)


def _limited_redis(env: Env) -> Callable[[int, int, str], str]:
    url = start_redis(env.procs, env.workdir, env.load_cpu)
    return partial(configs.sidecar, limited=True, redis_url=url)


TARGETS: dict[str, Callable[[Env], Callable[[int, int, str], str]]] = {
    "sidecar": _plain,
    "sidecar-limited": _limited,
    "sidecar-limited-redis": _limited_redis,
}
NAMES = ("sidecar-before", *TARGETS)
"""The targets counted: ``sidecar-before`` is the baseline tree on the plain configuration."""


def count(env: Env, target: str, *, requests: int = REQUESTS) -> Counted:
    """Start ``target`` (or ``sidecar-before``: the baseline tree) under callgrind and count."""
    out = Path(env.workdir) / f"callgrind-{target}.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    if target == "sidecar-before":
        older = env.baseline
        if older is None or isinstance(older, str):
            raise StartError(f"baseline: {older or 'not prepared'}")
        running = start_sidecar(
            env, env.upstream.base_url, configs.sidecar, python=str(older.python), cwd=older.src,
            name="callgrind-sidecar-before", wrapper=valgrind, ready_deadline=READY_DEADLINE_S,
        )
    else:
        config = TARGETS[target](env)
        running = start_sidecar(env, env.upstream.base_url, config, name=f"callgrind-{target}",
                                wrapper=valgrind, ready_deadline=READY_DEADLINE_S)
    assert running.proc is not None
    try:
        port = int(running.base_url.rsplit(":", 1)[1].split("/", 1)[0])
        _get(port, WARM_UP)
        _control(running.rss_pid, "--instr=on")
        _get(port, requests)
        _control(running.rss_pid, "--instr=off")
        _control(running.rss_pid, "--dump")
    finally:
        env.procs.stop(running.proc)
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    found = [n for p in dumps if (n := totals(p.read_bytes()))]
    if not found:
        raise StartError(f"{target}: callgrind wrote no counts ({[p.name for p in dumps]})")
    return Counted(target, max(found) / requests, requests)


def _control(pid: int, what: str) -> None:
    subprocess.run(["callgrind_control", what, str(pid)], check=True, capture_output=True,
                   timeout=60)


def _get(port: int, n: int) -> None:
    """``n`` GETs of the small answer, one at a time, round robin over keep-alive connections."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(CONNECTIONS)]
    try:
        for i in range(n):
            conn = conns[i % CONNECTIONS]
            conn.request("GET", "/bench" + configs.SMALL_PATH)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise StartError(f"GET {configs.SMALL_PATH}: {response.status}")
    finally:
        for conn in conns:
            conn.close()


def measure(env: Env, names: Sequence[str], *, requests: int = REQUESTS) -> dict[str, Any]:
    """Count each of ``names`` in turn; a target that fails is a string, not the end of the run."""
    counted: dict[str, float | str] = {}
    for name in names:
        try:
            counted[name] = count(env, name, requests=requests).per_request
        except (StartError, OSError, subprocess.SubprocessError, http.client.HTTPException) as exc:
            counted[name] = f"FAILED: {exc}"
        print(f"instructions {name}: {counted[name]}", file=sys.stderr, flush=True)
    return {"requests": requests, "targets": counted}


def summary(measured: Mapping[str, Any]) -> list[str]:
    """Markdown lines: each target's instructions a request, and each against the plain sidecar."""
    counted: Mapping[str, float | str] = measured["targets"]
    plain = counted.get("sidecar")
    lines = [
        f"Instructions a request (callgrind, {measured['requests']} GETs one at a time, the sidecar "
        "process only):",
        "",
        "| target | instructions a request | against `sidecar` |",
        "|---|---:|---:|",
    ]
    for name, outcome in counted.items():
        if isinstance(outcome, str):
            lines.append(f"| {name} | {outcome} | |")
            continue
        ratio = f"{outcome / plain:.3f}x" if isinstance(plain, float) else ""
        lines.append(f"| {name} | {outcome:,.0f} | {ratio} |")
    before = counted.get("sidecar-before")
    if isinstance(plain, float) and isinstance(before, float):
        lines += ["", f"sidecar / sidecar-before: {plain / before:.3f}x the instructions a request."]
    return lines


def totals(dump: bytes) -> int | None:
    """The instruction count of a callgrind dump (its ``totals:`` line), None without one."""
    found = _TOTALS.search(dump)
    return None if found is None else int(found.group(1))
