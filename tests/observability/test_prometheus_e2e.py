"""End to end: a real Prometheus scrapes a real sidecar while fake providers fail and recover; then every
dashboard query and every alert expression returns data through Prometheus's HTTP API.

Written against the documented interface only (`python -m sidecar --config ... --port ... --ops-port ...`,
the configuration file format, the metric names of GET /metrics). The alerts are the sidecar-monitoring
chart's, rendered by the real helm with a latency threshold of their own for one of the fake providers,
so that both kinds of latency rule (a provider's own, the default for the rest) meet real data. Every
wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.support.polling import eventually
from tests.support.promql_names import (
    MONITORING_CHART,
    ROOT,
    dashboard_exprs,
    load_script,
    substitute_grafana,
)

pytestmark = pytest.mark.timeout(150)

_COMPARISON = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[-+]?[0-9.]+(e[-+]?[0-9]+)?\s*$")
_SET_OPERATOR = re.compile(r" (or|and|unless) ((on|ignoring) ?\([^)]*\) )?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SwitchableUpstream:
    """An upstream on 127.0.0.1 that answers 500 while `failing`, else 200 (probes included)."""

    failing: bool
    calls: int = 0
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.failing:
            return web.json_response({"error": "upstream down"}, status=500)
        return web.json_response({"ok": True, "path": request.path})


async def serve(aiohttp_server: AiohttpServer, upstream: SwitchableUpstream) -> SwitchableUpstream:
    """Serve ``upstream`` on a free port with pytest-aiohttp (closed at teardown)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", upstream.handle)
    upstream.port = (await aiohttp_server(app, access_log=None)).port
    return upstream


def sidecar_config(
    flaky: SwitchableUpstream, budget: SwitchableUpstream, port: int, ops_port: int
) -> dict[str, Any]:
    """Short breaker timings, so that the breaker opens and recovers within seconds."""
    probe = {"method": "GET", "path": "/health", "interval": "1s", "timeout": "1s"}
    return {
        "server": {"host": "127.0.0.1", "port": port, "ops_host": "127.0.0.1", "ops_port": ops_port,
                   "drain_time": "0s", "shutdown_grace": "1s"},
        "ledger": {"backend": "memory"},
        "defaults": {
            "retry": {"max_attempts": 2, "base_delay": "10ms", "max_delay": "50ms", "jitter": False},
            "timeouts": {"connect": "1s", "attempt": "2s", "total": "5s"},
        },
        "providers": {
            "flaky": {
                "upstream": f"http://127.0.0.1:{flaky.port}",
                "health": probe,
                # a paid create, so that the job ledger's series exist (sidecar_idempotency_total …)
                "routes": [{"name": "create", "method": "POST", "path": "/v1/jobs", "creates_job": True}],
                "breaker": {"failure_threshold": 3, "monitoring_period": "10s", "minimum_calls": 0,
                            "recovery_timeout": "1s", "success_threshold": 1},
            },
            "budget": {  # never opens; a tiny retry budget that runs out at once
                "upstream": f"http://127.0.0.1:{budget.port}",
                "health": probe,
                "breaker": {"failure_threshold": 1000, "minimum_calls": 0},
                "retry": {"max_attempts": 3, "base_delay": "1ms", "max_delay": "5ms", "jitter": False,
                          "budget_ratio": 0.01, "budget_min_per_second": 0.1},
            },
        },
    }


@contextlib.contextmanager
def process(cmd: list[str], log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kw)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


async def until(what: str, check: Callable[[], Awaitable[bool]], *, within: float,
                alive: Sequence[tuple[subprocess.Popen[bytes], Path]] = ()) -> None:
    """Poll `check` until it is true; fail after `within` seconds or when a process died."""

    async def alive_and_checked() -> bool:
        for proc, log in alive:
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[0]} exited {proc.returncode} while waiting for {what}:\n"
                            f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
        return await check()

    await eventually(alive_and_checked, timeout=within, interval=0.1, what=what)


async def get_status(session: aiohttp.ClientSession, url: str) -> int:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
            await resp.read()
            return resp.status
    except (TimeoutError, aiohttp.ClientError):
        return 0


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (exposition text)."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{(.*)\}})?\s+(\S+)", line)
        if not m:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def alert_data_exprs(expr: str) -> list[str]:
    """The parts of an alert expression that must return data on a healthy-but-exercised system:
    its top-level `or` / `and` / `unless` operands minus those with `absent(...)`, each without its
    threshold comparison."""
    expr = " ".join(expr.split())
    parts, depth, start, i = [], 0, 0, 0
    while i < len(expr):
        depth += {"(": 1, ")": -1}.get(expr[i], 0)
        m = _SET_OPERATOR.match(expr, i) if depth == 0 else None
        if m:
            parts.append(expr[start:i])
            start = i = m.end()
            continue
        i += 1
    parts.append(expr[start:])
    return [_COMPARISON.sub("", p.strip()) for p in parts if "absent(" not in p]


def e2e_rule_groups(tmp_path: Path, own_latency: dict[str, float]) -> list[dict[str, Any]]:
    """The chart's alerts rendered by helm, with `own_latency` as the only per-provider thresholds."""
    values = yaml.safe_load((MONITORING_CHART / "values.yaml").read_text())
    providers: dict[str, float | None] = dict.fromkeys(
        values["prometheusRule"]["alerts"]["SidecarHighLatencyP99"]["providers"])
    providers.update(own_latency)
    path = tmp_path / "e2e-values.yaml"
    path.write_text(yaml.safe_dump(
        {"prometheusRule": {"alerts": {"SidecarHighLatencyP99": {"providers": providers}}}}))
    script = load_script(ROOT / "scripts" / "render_alerts.py")
    return list(script.rule_groups("-f", str(path)))


async def prom_query(session: aiohttp.ClientSession, base: str, expr: str) -> list[Any]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as resp:
        body = await resp.json()
    assert body["status"] == "success", f"{expr}: {body}"
    return list(body["data"]["result"])


def test_e2e_helpers() -> None:
    """The threshold stripping keeps the data parts of each alert and drops absent()."""
    assert alert_data_exprs('up{job=~".*sidecar.*"} == 0 or absent(up{job=~".*sidecar.*"})') == [
        'up{job=~".*sidecar.*"}']
    down = '(up{a="1"} or up{b="2"}) == 0\nor\n(absent(up{a="1"}) and on () absent(up{b="2"}))'
    assert alert_data_exprs(down) == ['(up{a="1"} or up{b="2"})']
    assert alert_data_exprs("sum by (a) (rate(x[5m])) / sum by (a) (rate(y[5m])) > 0.5") == [
        "sum by (a) (rate(x[5m])) / sum by (a) (rate(y[5m]))"]
    assert alert_data_exprs("(\n  x\n  /\n  (x + y)\n) > 0.25\nand\nx >= 5") == ["( x / (x + y) )", "x"]
    assert metric_value('m{provider="a",state="open"} 1.0\nm{provider="b",state="open"} 0.0\n',
                        "m", provider="a") == 1.0


async def test_every_dashboard_and_alert_query_returns_data(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    """Breakers open and recover under real traffic; Prometheus then answers every panel and alert query."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is not on PATH (Debian package `prometheus`; scripts/fetch-tools.sh)",
                    pytrace=False)
    port, ops_port, prom_port = free_port(), free_port(), free_port()
    flaky = await serve(aiohttp_server, SwitchableUpstream(failing=True))
    budget = await serve(aiohttp_server, SwitchableUpstream(failing=True))
    cfg = tmp_path / "sidecar.yaml"
    cfg.write_text(yaml.safe_dump(sidecar_config(flaky, budget, port, ops_port)))
    rules = [r for g in e2e_rule_groups(tmp_path, {"flaky": 60}) for r in g["rules"]]
    assert any('provider="flaky"' in r["expr"] for r in rules)
    rules_file = tmp_path / "alerts.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "sidecar", "rules": rules}]}))
    prom_cfg = tmp_path / "prometheus.yml"
    prom_cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [{"job_name": "sidecar",
                            "static_configs": [{"targets": [f"127.0.0.1:{ops_port}"]}]}],
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "CB_"))}
    sidecar_cmd = [sys.executable, "-m", "sidecar", "--config", str(cfg),
                   "--port", str(port), "--ops-port", str(ops_port)]
    prom_cmd = [prometheus, f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"]
    sidecar_log, prom_log = tmp_path / "sidecar.log", tmp_path / "prometheus.log"
    with process(sidecar_cmd, sidecar_log, cwd=ROOT, env=env) as sc, \
            process(prom_cmd, prom_log, cwd=tmp_path) as prom:
        alive = [(sc, sidecar_log), (prom, prom_log)]
        await _scenario(port, ops_port, prom_port, flaky, alive, rules)


async def _scenario(port: int, ops_port: int, prom_port: int, flaky: SwitchableUpstream,
                    alive: list[tuple[subprocess.Popen[bytes], Path]], rules: list[dict[str, Any]]) -> None:
    proxy, ops, prom = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}", f"http://127.0.0.1:{prom_port}"
    async with aiohttp.ClientSession() as session:

        async def metrics() -> str:
            async with session.get(f"{ops}/metrics") as resp:
                return await resp.text()

        async def up(url: str) -> bool:
            return await get_status(session, url) == 200

        await until("the sidecar's ops listener", lambda: up(f"{ops}/health/live"), within=30, alive=alive)
        await until("Prometheus to be ready", lambda: up(f"{prom}/-/ready"), within=30, alive=alive)

        async def failing_phase() -> bool:
            await get_status(session, f"{proxy}/flaky/v1/items")
            await get_status(session, f"{proxy}/budget/v1/items")
            text = await metrics()
            opened = metric_value(text, "sidecar_breaker_transitions_total", provider="flaky",
                                  to_state="open")
            return (opened > 0
                    and metric_value(text, "sidecar_short_circuited_total", provider="flaky") > 0
                    and metric_value(text, "sidecar_retry_budget_exhausted_total", provider="budget") > 0
                    and metric_value(text, "sidecar_retries_total", provider="budget") > 0)

        await until("the flaky breaker to open and short-circuit, and the retry budget to run out",
                    failing_phase, within=30, alive=alive)

        flaky.failing = False

        async def recovered() -> bool:
            await get_status(session, f"{proxy}/flaky/v1/items")
            text = await metrics()
            return (metric_value(text, "sidecar_breaker_state", provider="flaky", state="closed") == 1
                    and metric_value(text, "sidecar_breaker_transitions_total", provider="flaky",
                                     to_state="closed") > 0
                    and metric_value(text, "sidecar_probe_up", provider="flaky") == 1)

        await until("the flaky breaker to close again", recovered, within=30, alive=alive)

        async def paid_create_replayed() -> bool:
            headers = {"Idempotency-Key": "e2e-create-1"}
            for _ in range(2):  # the first is forwarded once, the repeat is its stored answer
                async with session.post(f"{proxy}/flaky/v1/jobs", json={"n": 1}, headers=headers) as r:
                    await r.read()
            return metric_value(await metrics(), "sidecar_idempotency_total", provider="flaky",
                                result="replayed") > 0

        await until("a paid create through the job ledger, then its replay", paid_create_replayed,
                    within=15, alive=alive)

        queries = [(f"dashboard: {title}", substitute_grafana(e)) for title, e in dashboard_exprs()]
        for rule in rules:
            queries += [(f"alert {rule['alert']}", e) for e in alert_data_exprs(rule["expr"])]
        empty: list[str] = []

        async def all_have_data() -> bool:
            empty.clear()
            for name, expr in queries:
                if not await prom_query(session, prom, expr):
                    empty.append(f"{name}: {expr}")
            return not empty

        try:
            await until("every dashboard and alert query to return data", all_have_data, within=45,
                        alive=alive)
        except pytest.fail.Exception:
            pytest.fail("queries without data:\n" + "\n".join(empty), pytrace=False)

        # The full alert expressions evaluate too: the loaded rules report healthy evaluations.
        for rule in rules:
            await prom_query(session, prom, rule["expr"])

        async def rules_evaluated() -> bool:
            async with session.get(f"{prom}/api/v1/rules") as resp:
                groups = (await resp.json())["data"]["groups"]
            loaded = [r for g in groups for r in g["rules"]]
            return len(loaded) == len(rules) and all(
                r["health"] == "ok" and not r.get("lastError") for r in loaded)

        await until("Prometheus to evaluate every alert rule healthily", rules_evaluated, within=15,
                    alive=alive)
