"""No API key or admin token ever leaves the process: logs, metrics, error bodies, dumps, traces.

The sidecar subprocess runs with recognisable fake secrets through successes, failures, timeouts,
connection errors, an open circuit and admin calls with wrong tokens; then everything it said is
searched for them.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from .support.fault_provider import Fault, FaultProvider
from .support.polling import eventually
from .support.process import start_sidecar

REPLICATE_KEY = "r8_FAKE_SECRET_1234567890abcdefABCDEF"
ELEVEN_KEY = "el_FAKE_SECRET_0987654321zyxw"
ADMIN_TOKEN = "adm_FAKE_SECRET_TOKEN_5678"
SECRETS = (REPLICATE_KEY, ELEVEN_KEY, ADMIN_TOKEN, "FAKE_SECRET")
ENV = {"REPLICATE_API_TOKEN": REPLICATE_KEY, "ELEVENLABS_API_KEY": ELEVEN_KEY,
       "SIDECAR_ADMIN_TOKEN": ADMIN_TOKEN}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(up: str, dead: str) -> str:
    return f"""
server: {{drain_time: 100ms, shutdown_grace: 2s}}
providers:
  replicate:
    upstream: "{up}"
    auth: {{header: Authorization, prefix: "Bearer ", env: REPLICATE_API_TOKEN}}
    health: {{method: GET, path: /v1/account, interval: 200ms, timeout: 300ms}}
    breaker: {{failure_threshold: 3, recovery_timeout: 30s, minimum_calls: 0}}
    retry: {{max_attempts: 2, base_delay: 10ms, max_delay: 50ms}}
    timeouts: {{connect: 1s, attempt: 1s, total: 3s}}
  elevenlabs:
    upstream: "{dead}"
    auth: {{header: xi-api-key, env: ELEVENLABS_API_KEY}}
    retry: {{max_attempts: 1}}
    timeouts: {{connect: 300ms, attempt: 300ms, total: 1s}}
"""


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        at = text.find(secret)
        assert at < 0, f"{secret!r} leaked in {where}: ...{text[max(0, at - 200):][:400]}"


async def test_no_secret_in_logs_metrics_bodies_or_dumps(tmp_path: Path) -> None:
    """Through every kind of outcome, no key or token shows up in anything the sidecar says."""
    up = await FaultProvider().start()
    sc = await start_sidecar(_config(up.url, f"http://127.0.0.1:{_closed_port()}"), tmp_path, env=ENV)
    bodies: list[str] = []
    try:
        async with aiohttp.ClientSession() as s:

            async def call(method: str, url: str, **kw: object) -> int:
                async with s.request(method, url, **kw) as resp:  # type: ignore[arg-type]
                    bodies.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")
                    return resp.status

            assert await call("GET", f"{sc.proxy}/replicate/v1/ok") == 200
            up.then(Fault("status", status=401, path="/v1/unauth"),
                    Fault("status", status=422, path="/v1/pred"),
                    *[Fault("status", status=401, path="/v1/account")] * 2)
            await call("GET", f"{sc.proxy}/replicate/v1/unauthorized")
            await call("POST", f"{sc.proxy}/replicate/v1/predictions", data=b"{}")
            assert await call("GET", f"{sc.proxy}/elevenlabs/v1/tts") == 502  # connection refused
            up.then(*[Fault("ok", delay=2.5, path="/v1/slow")] * 2)
            assert await call("GET", f"{sc.proxy}/replicate/v1/slow") == 504  # timeouts
            up.then(*[Fault("status", status=500, path="/v1/fail")] * 4)
            for _ in range(3):
                await call("POST", f"{sc.proxy}/replicate/v1/fail", data=b"{}")
            assert await call("GET", f"{sc.proxy}/replicate/v1/after") == 503  # circuit open
            await call("GET", f"{sc.proxy}/nope/x")
            await call("GET", f"{sc.proxy}/replicate/v1/x", headers={"Content-Length": "x"})
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {ADMIN_TOKEN}"},
                            {"Authorization": f"Bearer {ADMIN_TOKEN}x"}):
                assert await call("GET", f"{sc.ops}/admin/breakers", headers=headers) == 401
                await call("POST", f"{sc.ops}/admin/breakers/replicate/reset", headers=headers)
            good = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            assert await call("GET", f"{sc.ops}/admin/breakers", headers=good) == 200
            await call("POST", f"{sc.ops}/admin/breakers/replicate/force-open", headers=good)
            await call("POST", f"{sc.ops}/admin/breakers/replicate/bogus", headers=good)
            await call("POST", f"{sc.ops}/admin/breakers/replicate/reset", headers=good)
            await call("GET", f"{sc.ops}/health/detailed")
            await call("GET", f"{sc.ops}/health/ready")
            await call("GET", f"{sc.proxy}/health/detailed")
            await call("GET", f"{sc.ops}/metrics")
            # Let the probes run a few times (some answered 401 by the script above).
            await eventually(lambda: sum(1 for x in up.seen if x.path == "/v1/account") >= 3,
                             timeout=5, interval=0.05, what="three probes")
            await call("GET", f"{sc.ops}/health/detailed")
            await call("GET", f"{sc.ops}/metrics")
        assert await sc.stop() == 0
    finally:
        await sc.kill()
        await up.close()
    # The keys were really in use: the provider got them, so their absence below means something.
    assert any(x.authorization == f"Bearer {REPLICATE_KEY}" for x in up.seen)
    assert any(x.path == "/v1/account" for x in up.seen)
    for i, body in enumerate(bodies):
        assert_clean(f"response {i}", body)
    assert_clean("stdout", "\n".join(sc.stdout))
    assert_clean("stderr", "\n".join(sc.stderr))
    assert any(e.get("event") == "breaker_transition" for e in sc.lines())


def test_check_config_never_prints_a_secret(tmp_path: Path) -> None:
    """``sidecar check-config`` redacts keys in the dump and in its error lines alike."""
    good = tmp_path / "good.yaml"
    good.write_text(_config("http://127.0.0.1:1", "http://127.0.0.1:2"))
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("SIDECAR_")} | ENV
    run = subprocess.run([sys.executable, "-m", "sidecar", "check-config", str(good)],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 0, run.stderr
    assert_clean("check-config stdout", run.stdout)
    assert_clean("check-config stderr", run.stderr)
    bad = tmp_path / "bad.yaml"
    bad.write_text(_config("http://127.0.0.1:1", "http://127.0.0.1:2").replace(
        "timeouts: {connect: 1s, attempt: 1s, total: 3s}\n  elevenlabs",
        "timeouts: {connect: \"${REPLICATE_API_TOKEN}\", attempt: 1s, total: 3s}\n  elevenlabs"))
    run = subprocess.run([sys.executable, "-m", "sidecar", "check-config", str(bad)],
                         capture_output=True, text=True, env=env, timeout=30)
    assert run.returncode == 2
    assert "timeouts.connect" in run.stderr
    assert_clean("check-config error", run.stdout + run.stderr)
