"""Load with faults through a sidecar subprocess: the scenario shared by the test and ``make soak``.

Concurrent clients send a mix of GET, POST with ``Idempotency-Key``, plain POST and paid creates (a
``creates_job`` route, always with a key, repeated once when the first answer was 200), each with its
own ``X-Request-Id``, through the sidecar to a ``FaultProvider``. Outages (100% 503) are switched
on while the load runs, followed by a clean window so the breaker's recovery can be timed.
Meanwhile ``/health/live`` on the ops port is polled from a thread and the sidecar's RSS is sampled.
The ``Report`` holds the figures; ``Report.problems()`` lists every broken invariant.

With ``Spec.sidecars`` > 1 the sidecars share a Redis ledger (``redis_url``), requests go round
them, and each repeat of a created job goes to the next sidecar, not the one that created it.
``keys_on_every_post`` gives the plain POSTs a key as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from sidecar.errors import STATUS

from ..support.fault_provider import OK_BODY, FaultMix, FaultProvider, mix
from ..support.process import Sidecar, start_sidecar

MiB = 1024 * 1024
# What request n is: KINDS[n % len(KINDS)].
KINDS = ("GET", "GET", "GET", "POST+key", "POST", "JOB")
# Sidecar errors the load may legitimately produce (codes of the error contract).
ALLOWED_ERRORS = frozenset({"circuit_open", "upstream_unreachable", "upstream_timeout"})


@dataclass
class Spec:
    requests: int | None = 20_000  # stop after this many (None: run for ``duration``)
    duration: float | None = None  # seconds
    concurrency: int = 200
    outage_seconds: float = 3.0
    outage_at: float = 0.3  # count mode: share of requests done when the outage starts
    outage_every: float = 60.0  # duration mode: seconds between outage starts
    recovery_timeout: float = 1.0
    failure_threshold: int = 8
    max_attempts: int = 3
    budget_ratio: float = 0.2
    budget_min_per_second: float = 3.0
    faults: FaultMix = field(default_factory=lambda: mix(
        status=0.10, reset=0.02, latency_ratio=0.2, latency=(0.001, 0.02)))
    sidecars: int = 1
    redis_url: str | None = None  # the ledger shared by the sidecars (else each its own SQLite)
    keys_on_every_post: bool = False


def config_yaml(spec: Spec, upstream: str, ledger_path: str | None = None) -> str:
    ledger = f"{{backend: sqlite, path: '{ledger_path}'}}" if ledger_path else "{backend: memory}"
    if spec.redis_url:
        ledger = f"{{backend: redis, url: '{spec.redis_url}', prefix: 'load:'}}"
    return f"""
server: {{drain_time: 1s, shutdown_grace: 5s}}
providers:
  p:
    upstream: {upstream}
    breaker: {{failure_threshold: {spec.failure_threshold}, monitoring_period: 10s,
              recovery_timeout: {int(spec.recovery_timeout * 1000)}ms, success_threshold: 1,
              half_open_max_calls: 1}}
    retry: {{max_attempts: {spec.max_attempts}, base_delay: 10ms, max_delay: 100ms,
            budget_ratio: {spec.budget_ratio}, budget_min_per_second: {spec.budget_min_per_second}}}
    timeouts: {{connect: 1s, attempt: 5s, total: 10s}}
    routes:
      - {{name: create, method: POST, path: "/v1/jobs/{{n}}", creates_job: true}}
ledger: {ledger}
"""


@dataclass
class Report:
    requests: int = 0
    by_code: Counter[str] = field(default_factory=Counter)  # "200", "503", "503 circuit_open" ...
    client_errors: Counter[str] = field(default_factory=Counter)
    malformed: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    provider_requests: int = 0
    provider_faults: Counter[str] = field(default_factory=Counter)
    max_per_request_id: int = 0
    post_duplicates: int = 0  # plain POSTs the provider saw more than once
    job_duplicates: int = 0  # paid-create keys the provider saw more than once
    job_replays: int = 0  # repeats of a created job answered from the ledger
    over_max_attempts: int = 0
    attempts_mismatch: int = 0  # provider saw a request id more often than the sidecar reported
    retries: float = 0.0
    budget_exhausted: float = 0.0
    retry_budget_bound: float = 0.0
    live_polls: int = 0
    live_failures: int = 0
    live_max_ms: float = 0.0
    live_p99_ms: float = 0.0
    rss_start: int = 0
    rss_peak: int = 0
    rss_end: int = 0
    outages: list[tuple[float, float]] = field(default_factory=list)  # wall-clock (start, end)
    outage_provider_share: list[float] = field(default_factory=list)
    transitions: list[tuple[float, str, str]] = field(default_factory=list)
    close_delays: list[float | None] = field(default_factory=list)  # outage end -> closed, seconds
    recovery_bound: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # each request, as its client saw it
    steady_requests: int = 0  # what the provider saw outside outages and the clean spells after
    steady_faults: int = 0

    def problems(self) -> list[str]:
        out = [f"malformed: {m}" for m in self.malformed[:20]]
        out += [f"client error {k} x{n}" for k, n in self.client_errors.items()]
        if self.post_duplicates:
            out.append(f"{self.post_duplicates} POSTs without Idempotency-Key reached the provider twice")
        if self.job_duplicates:
            out.append(f"{self.job_duplicates} paid-create keys reached the provider twice")
        if self.over_max_attempts:
            out.append(f"{self.over_max_attempts} request ids reached the provider > max_attempts times")
        if self.attempts_mismatch:
            out.append(f"{self.attempts_mismatch} request ids seen more often than X-Sidecar-Attempts")
        if self.retries > self.retry_budget_bound:
            out.append(f"retries {self.retries} over the budget bound {self.retry_budget_bound:.0f}")
        if self.live_failures:  # a probe a kubelet would fail; the latency figures are in the summary
            out.append(f"/health/live: {self.live_failures} failures, max {self.live_max_ms:.1f} ms")
        if self.rss_end - self.rss_start >= 50 * MiB:
            out.append(f"RSS grew {(self.rss_end - self.rss_start) / MiB:.1f} MiB")
        if outside := self.opens_outside_outages():
            out.append(f"breaker opened {outside} time(s) outside an outage (steady faults only)")
        for (start, end), delay in zip(self.outages, self.close_delays, strict=True):
            if not any(start <= t <= end + 0.5 and to == "open" for t, _, to in self.transitions):
                out.append(f"breaker did not open during the outage at {start:.1f}")
            if delay is None or delay > self.recovery_bound:
                out.append(f"breaker closed {delay} s after the outage (bound {self.recovery_bound} s)")
        return out

    def opens_outside_outages(self) -> int:
        return sum(1 for t, a, b in self.transitions if (a, b) == ("closed", "open") and not any(
            start - 0.5 <= t <= end + 0.5 for start, end in self.outages))

    def latency_ms(self, share: float) -> float:
        """The request latency below which ``share`` of the requests finished (0.0 when none)."""
        ordered = sorted(self.latencies_ms)
        return ordered[min(int(share * len(ordered)), len(ordered) - 1)] if ordered else 0.0

    def summary(self) -> str:
        rate = self.requests / self.elapsed if self.elapsed else 0.0
        steady_share = self.steady_faults / self.steady_requests if self.steady_requests else 0.0
        lines = [
            f"requests: {self.requests} in {self.elapsed:.1f} s ({rate:.0f}/s)",
            f"request latency ms: p50 {self.latency_ms(0.5):.1f}, p99 {self.latency_ms(0.99):.1f},"
            f" max {max(self.latencies_ms, default=0.0):.1f}",
            "responses: " + ", ".join(f"{k}: {n}" for k, n in sorted(self.by_code.items())),
            f"client errors: {sum(self.client_errors.values())}, malformed: {len(self.malformed)}",
            f"provider saw {self.provider_requests} requests; faults injected: "
            + ", ".join(f"{k}: {n}" for k, n in sorted(self.provider_faults.items())),
            f"outside outages: {self.steady_faults} of {self.steady_requests} provider answers"
            f" were faults ({steady_share:.1%})",
            f"duplicates: plain POST {self.post_duplicates}, over max_attempts {self.over_max_attempts},"
            f" max sends of one request id {self.max_per_request_id}, paid-create keys sent twice"
            f" {self.job_duplicates}, repeats answered by the ledger {self.job_replays}",
            f"retries: {self.retries:.0f} (bound {self.retry_budget_bound:.0f}),"
            f" refused by budget: {self.budget_exhausted:.0f}",
            f"/health/live: {self.live_polls} polls, {self.live_failures} failures,"
            f" p99 {self.live_p99_ms:.1f} ms, max {self.live_max_ms:.1f} ms",
            f"RSS MiB: start {self.rss_start / MiB:.1f}, peak {self.rss_peak / MiB:.1f},"
            f" end {self.rss_end / MiB:.1f}",
            f"breaker transitions: {len(self.transitions)} ("
            + ", ".join(f"{k}: {n}" for k, n in sorted(
                Counter(f"{a}->{b}" for _, a, b in self.transitions).items()))
            + ")",
            f"breaker opened outside an outage: {self.opens_outside_outages()} time(s)",
            "outages: " + "; ".join(
                f"{end - start:.1f} s, provider got {share:.1%} of requests, closed"
                f" {'never' if d is None else f'{d:.2f} s'} after"
                for (start, end), share, d in zip(self.outages, self.outage_provider_share,
                                                  self.close_delays, strict=True)),
        ]
        return "\n".join(lines)


class _LivePoller:
    """``tests.reliability.livepoll`` in its own process: our loop's lag is not the sidecar's."""

    async def start(self, port: int) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.reliability.livepoll", str(port),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)

    async def result(self) -> dict[str, float]:
        out, _ = await asyncio.wait_for(self.proc.communicate(b""), 15)
        return dict(json.loads(out))


class _Run:
    def __init__(self, spec: Spec, sidecars: list[Sidecar], provider: FaultProvider, report: Report) -> None:
        self.spec, self.sidecars, self.fp, self.report = spec, sidecars, provider, report
        self.sc = sidecars[0]
        self.counter = itertools.count()
        self.done = 0
        self.sent: dict[str, str] = {}  # request id -> "GET" | "POST+key" | "POST" | "JOB"
        self.attempts: dict[str, int] = {}  # request id -> X-Sidecar-Attempts the client got
        self.deadline = time.monotonic() + spec.duration if spec.duration else None
        self.finished = asyncio.Event()
        self.outage_due = asyncio.Event()  # count mode: set once outage_at of the requests are done
        self.unsteady: list[tuple[float, float]] = []  # monotonic: each outage and its clean spell

    def _next(self) -> int | None:
        n = next(self.counter)
        if self.spec.requests is not None and n >= self.spec.requests:
            return None
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return None
        return n

    async def client(self, session: aiohttp.ClientSession) -> None:
        while (n := self._next()) is not None:
            rid = f"r{n}"
            kind = KINDS[n % len(KINDS)]
            if kind == "POST" and self.spec.keys_on_every_post:
                kind = "POST+key"
            sidecar = self.sidecars[n % len(self.sidecars)]
            headers = {"X-Request-Id": rid}
            if kind in ("POST+key", "JOB"):
                headers["Idempotency-Key"] = f"k{n}"
            self.sent[rid] = kind
            method = "GET" if kind == "GET" else "POST"
            path = f"/p/v1/jobs/{n}" if kind == "JOB" else f"/p/v1/items/{n}"
            data = None if method == "GET" else b'{"n": %d}' % n
            sent_at = time.monotonic()
            try:
                async with session.request(method, f"{sidecar.proxy}{path}", headers=headers,
                                           data=data) as resp:
                    body = await resp.read()
                    code = self._check(rid, kind, resp, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.report.client_errors[type(exc).__name__] += 1
                code = "client error"
            self.report.by_code[code] += 1
            self.report.latencies_ms.append((time.monotonic() - sent_at) * 1000)
            if kind == "JOB" and code == "200":
                again = self.sidecars[(n + 1) % len(self.sidecars)]  # another sidecar, when there is one
                await self._repeat_job(session, again, rid, path, headers, data)
            self.done += 1
            if self.spec.requests and self.done >= self.spec.outage_at * self.spec.requests:
                self.outage_due.set()
            if code == "503 circuit_open":
                await asyncio.sleep(0.25)  # a polite client backs off on an open circuit

    async def _repeat_job(self, session: aiohttp.ClientSession, sidecar: Sidecar, rid: str, path: str,
                          headers: dict[str, str], data: bytes | None) -> None:
        """The bot repeats a create that succeeded: the ledger answers, the provider sees nothing."""
        again = {**headers, "X-Request-Id": f"{rid}-again"}
        try:
            async with session.post(f"{sidecar.proxy}{path}", headers=again, data=data) as resp:
                status, replayed, error, body = (resp.status, resp.headers.get("X-Sidecar-Replayed"),
                                                 resp.headers.get("X-Sidecar-Error"), await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.report.client_errors[type(exc).__name__] += 1
            return
        if (status, body, replayed) != (200, OK_BODY, "true"):
            self.report.malformed.append(f"{rid}: repeat of a created job got {status} {error} "
                                         f"{body[:80]!r}")
        else:
            self.report.job_replays += 1

    def _check(self, rid: str, kind: str, resp: aiohttp.ClientResponse, body: bytes) -> str:
        bad = self.report.malformed
        if resp.headers.get("X-Request-Id") != rid:
            bad.append(f"{rid}: X-Request-Id {resp.headers.get('X-Request-Id')!r}")
        error = resp.headers.get("X-Sidecar-Error")
        if error is not None:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            if error not in ALLOWED_ERRORS or doc.get("error") != error or STATUS[error] != resp.status:
                bad.append(f"{rid}: sidecar error {resp.status} {error} {body[:100]!r}")
            code = f"{resp.status} {error}"
        else:
            if (resp.status, body) not in ((200, OK_BODY), (503, b'{"fault": "status 503"}')):
                bad.append(f"{rid}: upstream answer {resp.status} {body[:100]!r}")
            code = str(resp.status)
        attempts = int(resp.headers.get("X-Sidecar-Attempts", "0"))
        if error != "circuit_open" and not 1 <= attempts <= self.spec.max_attempts:
            bad.append(f"{rid}: X-Sidecar-Attempts {attempts}")
        if kind in ("POST", "JOB") and attempts > 1:
            bad.append(f"{rid}: {kind} sent {attempts} times")
        self.attempts[rid] = attempts
        return code

    async def outages(self) -> None:
        spec, fp, normal = self.spec, self.fp, self.fp.mix
        clean = max(2 * spec.recovery_timeout + 1.0, 2.0)
        first = True
        while not self.finished.is_set():
            if spec.requests:
                if not first:
                    return
                await self.outage_due.wait()
            else:
                wait = 5.0 if first else spec.outage_every - spec.outage_seconds - clean
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.finished.wait(), max(wait, 0.0))
            if self.finished.is_set() or (
                self.deadline is not None
                and time.monotonic() + spec.outage_seconds + clean + 1.0 > self.deadline
            ):
                return
            first = False
            start, m0, done0 = time.time(), time.monotonic(), self.done
            fp.mix = mix(status=1.0)
            await asyncio.sleep(spec.outage_seconds)
            fp.mix = FaultMix()  # clean, so the recovery is measured, not the fault mix
            end, m1, done1 = time.time(), time.monotonic(), self.done
            await asyncio.sleep(clean)
            fp.mix = normal
            self.unsteady.append((m0, time.monotonic()))
            self.report.outages.append((start, end))
            # How much of the clients' traffic still reached the provider while it was down.
            self.report.outage_provider_share.append(fp.seen_between(m0, m1) / max(done1 - done0, 1))

    async def rss(self) -> None:
        while not self.finished.is_set():
            self.report.rss_peak = max(self.report.rss_peak, self.sc.rss())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.finished.wait(), 0.5)

    async def go(self) -> None:
        self.started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=self.spec.concurrency, force_close=False)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        ) as session:
            side = [asyncio.ensure_future(self.outages()), asyncio.ensure_future(self.rss())]
            await asyncio.gather(*(self.client(session) for _ in range(self.spec.concurrency)))
            self.finished.set()
            self.outage_due.set()
            await asyncio.gather(*side)
        self.report.elapsed = time.monotonic() - self.started
        self.report.requests = self.done


async def metric_values(sc: Sidecar, provider: str = "p") -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(f"{sc.ops}/metrics") as resp:
        text = await resp.text()
    out: Counter[str] = Counter()
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.labels.get("provider") == provider:
                out[sample.name] += sample.value
    return dict(out)


def _prioritise(*pids: int) -> None:
    """Raise the processes' CPU priority where allowed (root in CI); elsewhere leave it."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, -10)


async def run(spec: Spec, tmp: Path) -> Report:
    """Start provider and sidecar, run the load, stop both, and return the figures."""
    fp = await FaultProvider(spec.faults).start()
    report = Report()
    try:
        others: list[Sidecar] = []
        sc = await start_sidecar(config_yaml(spec, fp.url, str(tmp / "ledger.sqlite3")), tmp)
        try:
            for i in range(1, spec.sidecars):
                (tmp / f"sidecar-{i}").mkdir()
                others.append(await start_sidecar(config_yaml(spec, fp.url), tmp / f"sidecar-{i}",
                                                  env={"SIDECAR_INSTANCE_ID": f"load-{i}"}))
            poller = _LivePoller()
            report.rss_start = report.rss_peak = sc.rss()
            await poller.start(sc.ops_port)
            # The load generator and the fake provider share these 2 cores with the sidecar; the
            # liveness figures are about the sidecar's loop, so it and the poller get the CPU first.
            _prioritise(sc.proc.pid, poller.proc.pid, *(o.proc.pid for o in others))
            load = _Run(spec, [sc, *others], fp, report)
            try:
                await load.go()
            finally:
                live = await poller.result()
            report.live_polls, report.live_failures = int(live["polls"]), int(live["failures"])
            report.live_max_ms = live["max_ms"]
            report.live_p99_ms = live["p99_ms"]
            report.rss_end = sc.rss()
            _provider_figures(report, fp, spec, load.attempts, load.sent, load.unsteady)
            for each in [sc, *others]:
                values = await metric_values(each)
                report.retries += values.get("sidecar_retries_total", 0.0)
                report.budget_exhausted += values.get("sidecar_retry_budget_exhausted_total", 0.0)
            # Per 10 s window at most max(ratio x first attempts, min_per_second x 10): summed over
            # the run that is below ratio x all first attempts + min_per_second x (elapsed + 10).
            report.retry_budget_bound = (spec.budget_ratio * report.requests + spec.sidecars * (
                spec.budget_min_per_second * (report.elapsed + 10) + 10))
        finally:
            for each in [*others, sc]:
                await each.stop()
        report.transitions = sorted(t for each in [sc, *others] for t in each.transitions())
        report.recovery_bound = spec.recovery_timeout + 1.0
        for _, end in report.outages:
            closes = [t for t, _, to in report.transitions if to == "closed" and t >= end]
            report.close_delays.append(closes[0] - end if closes else None)
        return report
    finally:
        await fp.close()


def run_on_uvloop(spec: Spec, tmp: Path) -> Report:
    """``run`` on a fresh uvloop (in the calling thread): the load generator costs less CPU."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(spec, tmp))


def _provider_figures(report: Report, fp: FaultProvider, spec: Spec, attempts: dict[str, int],
                      sent: dict[str, str], unsteady: list[tuple[float, float]]) -> None:
    report.provider_requests = len(fp.seen)
    report.provider_faults = Counter(fp.counts)
    jobs = Counter(s.idempotency_key for s in fp.seen if "/v1/jobs/" in s.path)
    report.job_duplicates = sum(1 for n in jobs.values() if n > 1)
    steady = [s for s in fp.seen if not any(a <= s.at < b for a, b in unsteady)]
    report.steady_requests = len(steady)
    report.steady_faults = sum(s.fault != "ok" for s in steady)
    counts = fp.by_request_id()
    report.max_per_request_id = max(counts.values(), default=0)
    for rid, n in counts.items():
        if n > spec.max_attempts:
            report.over_max_attempts += 1
        if n > 1 and sent.get(rid) == "POST":
            report.post_duplicates += 1
        if n > attempts.get(rid, 0):
            report.attempts_mismatch += 1
