"""The command line as a user meets it: check-config, the server on the embedded default, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
import yaml

from .support.process import start_sidecar

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *args], capture_output=True, text=True, timeout=60,
        env=env,
    )


def test_check_config_prints_the_effective_config() -> None:
    """check-config on the shipped file exits 0 and prints YAML with all seven providers."""
    out = run_cli("check-config", str(ROOT / "configs" / "sidecar.yaml"))
    assert out.returncode == 0, out.stderr
    effective = yaml.safe_load(out.stdout)
    assert set(effective["providers"]) == {
        "replicate", "supabase", "elevenlabs", "synclabs", "huggingface", "bfl", "file-download",
    }


def test_check_config_names_the_bad_key(tmp_path: Path) -> None:
    """A bad value exits 2 with one stderr line naming the dotted key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers:\n  replicate:\n    upstream: https://x\n    breaker: {failure_threshold: 0}\n")
    out = run_cli("check-config", str(bad))
    assert out.returncode == 2
    assert "providers.replicate.breaker.failure_threshold" in out.stderr


@pytest.mark.parametrize("content", [None, "providers: [unclosed"])
def test_check_config_refuses_missing_or_unparsable(tmp_path: Path, content: str | None) -> None:
    """A missing or unparsable file is exit 2 with a message."""
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    out = run_cli("check-config", str(path))
    assert out.returncode == 2 and out.stderr.strip()


def test_server_refuses_a_bad_file(tmp_path: Path) -> None:
    """The server exits 2 on a bad config instead of starting."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {port: 8080, colour: blue}\n")
    out = run_cli("--config", str(bad), "--port", "0", "--ops-port", "0")
    assert out.returncode == 2
    assert "server.colour" in out.stderr


async def test_default_config_without_network_fails_fast_then_opens(tmp_path: Path) -> None:
    """On the embedded default with no reachable upstream: 502 at once, then 503 circuit_open, logged."""
    # The default config as shipped, but replicate's upstream is a closed loopback port, so the test
    # is the same with or without a network (and never calls the real API).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    sp = await start_sidecar(
        None, tmp_path, env={"SIDECAR_REPLICATE_UPSTREAM": f"http://127.0.0.1:{closed}"}
    )
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{sp.proxy_port}/replicate/v1/models"
            codes = []
            for _ in range(4):
                async with asyncio.timeout(30):
                    resp = await s.get(url)
                body = await resp.json()
                codes.append((resp.status, body["error"]))
                if resp.status == 503:
                    assert body["error"] == "circuit_open"
                    assert int(resp.headers["Retry-After"]) >= 1
                    break
            assert codes[0] == (502, "upstream_unreachable")
            assert codes[-1] == (503, "circuit_open")
        for _ in range(100):
            if sp.events("breaker_transition"):
                break
            await asyncio.sleep(0.05)
        transition = sp.events("breaker_transition")[0]
        assert transition["provider"] == "replicate"
        assert (transition["from_state"], transition["to_state"]) == ("closed", "open")
        assert transition["level"] == "warning" and transition["reason"]
    finally:
        await sp.kill()


async def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    """SIGTERM turns readiness 503 at once, keeps serving during drain_time, then exits 0."""
    sp = await start_sidecar("server: {drain_time: 3s, shutdown_grace: 2s}\nproviders: {}\n", tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            ready = f"http://127.0.0.1:{sp.ops_port}/health/ready"
            assert (await s.get(ready)).status == 200
            sp.proc.send_signal(signal.SIGTERM)
            for _ in range(100):
                if (await s.get(ready)).status == 503:
                    break
                await asyncio.sleep(0.02)
            assert (await s.get(ready)).status == 503
            live = await s.get(f"http://127.0.0.1:{sp.proxy_port}/health/live")
            assert live.status == 200  # still serving while draining
        assert await sp.stop(wait=15) == 0
        assert sp.events("stopped")
    finally:
        await sp.kill()
