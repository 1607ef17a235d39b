"""Regenerate docs/img/status-page.png: the status page of a real sidecar in a realistic state.

Starts one fake upstream on 127.0.0.1 (paths under /down answer 503, under /flaky every third call
is a 500, the rest 200), a real sidecar whose providers use it, drives traffic and admin actions so
the breakers show each state (open, half-open, forced open, closed with some failures, closed),
then has headless Chromium (``make tools`` installs it) take the screenshot. Nothing leaves the
machine. Usage: ``python scripts/status_screenshot.py [--out PATH]`` or ``make status-screenshot``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from itertools import count
from pathlib import Path
from urllib.parse import quote

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the test helpers live in tests/

from tests.support.browser import screenshot  # noqa: E402
from tests.support.process import start_sidecar  # noqa: E402

PROBE = "health: {method: GET, path: /health, interval: 1s, timeout: 2s}"
CONFIG = """
server: {{drain_time: 0s, shutdown_grace: 1s}}
defaults:
  retry: {{max_attempts: 1}}
providers:
  replicate:
    upstream: "{up}/down"
    critical: true
    {probe}
    breaker: {{failure_threshold: 5, recovery_timeout: 5m, monitoring_period: 60s}}
  elevenlabs:
    upstream: "{up}/flaky"
    {probe}
    breaker: {{failure_threshold: 4, minimum_calls: 10, failure_rate_threshold: 0.5}}
  synclabs:
    upstream: "{up}/down"
    breaker: {{failure_threshold: 2, recovery_timeout: 1s}}
  bfl:
    upstream: "{up}/ok"
  supabase:
    upstream: "{up}/ok"
    {probe}
  file-download:
    kind: download
    allowed_hosts: [127.0.0.1]
    allowed_schemes: [http]
    allow_private_networks: true
"""


async def fake_upstream() -> tuple[web.AppRunner, str]:
    calls = count(1)

    async def handle(request: web.Request) -> web.Response:
        if request.path.startswith("/down"):
            return web.json_response({"detail": "service unavailable"}, status=503)
        if request.path.startswith("/flaky/v1") and next(calls) % 3 == 0:
            return web.json_response({"detail": "internal error"}, status=500)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def drive(proxy: str, ops: str, up: str) -> None:
    """Traffic and admin actions that put each breaker in the state the picture shows."""
    async with aiohttp.ClientSession() as s:

        async def get(url: str, n: int) -> None:
            for _ in range(n):
                async with s.get(url) as resp:
                    await resp.read()

        await get(f"{proxy}/replicate/v1/predictions", 6)
        await get(f"{proxy}/elevenlabs/v1/text-to-speech", 15)
        await get(f"{proxy}/supabase/rest/v1/jobs", 12)
        await get(f"{proxy}/bfl/v1/flux-pro", 3)
        await get(f"{proxy}/synclabs/v2/generate", 2)
        for path in ("ok/avatar.png", "down/voice.mp3", "ok/video.mp4"):
            await get(f"{proxy}/file-download?url={quote(f'{up}/{path}', safe='')}", 1)
        async with s.post(f"{ops}/admin/breakers/bfl/force-open") as resp:
            resp.raise_for_status()
        await asyncio.sleep(2.5)  # synclabs' 1 s recovery passes (half-open); probes report


async def main(out: Path) -> None:
    runner, up = await fake_upstream()
    with tempfile.TemporaryDirectory() as tmp:
        sc = await start_sidecar(CONFIG.format(up=up, probe=PROBE), Path(tmp))
        try:
            await drive(sc.proxy, sc.ops, up)
            await screenshot(f"{sc.ops}/status", out)
        finally:
            await sc.stop()
            await runner.cleanup()
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "status-page.png")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(args.out.resolve()))
