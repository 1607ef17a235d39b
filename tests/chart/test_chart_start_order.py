"""Start order: the bot's first call must find the sidecar listening, in both variants.

Classic (an ordinary container): kubelet starts the containers in order and waits for each one's
postStart hook, so the sidecar comes first and its hook returns once /health/ready answers. The hook
taken from `helm template` output is run here against a real server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from tests.support.helm_chart import ALL_BRANCHES, CLASSIC, pod_spec, render, sidecar_container
from tests.support.polling import eventually


@pytest.mark.parametrize("values,kube", [(ALL_BRANCHES, "1.28.0"), (CLASSIC, "1.28.0"), (CLASSIC, "1.31.0")])
def test_classic_sidecar_is_the_first_container(values: Path, kube: str) -> None:
    """In the classic variant the sidecar is containers[0], ahead of the bot."""
    spec = pod_spec(render([values], kube_version=kube))
    assert [c["name"] for c in spec["containers"]] == ["sidecar", "bot"]
    assert "initContainers" not in spec


def _hook(sets: list[str], kube: str = "1.28.0") -> list[str]:
    container, native = sidecar_container(pod_spec(render([ALL_BRANCHES], sets, kube_version=kube)))
    assert not native
    command = container["lifecycle"]["postStart"]["exec"]["command"]
    assert isinstance(command, list) and all(isinstance(a, str) for a in command)
    return [str(a) for a in command]


def test_classic_hook_is_python_polling_readiness_on_the_ops_port() -> None:
    """The hook runs the image's python (no curl in the slim image) against /health/ready on the ops port."""
    command = _hook(["sidecar.opsPort=9911"])
    assert command[:2] == ["python", "-c"]
    assert '"http://127.0.0.1:9911/health/ready"' in command[2]
    compile(command[2], "<postStart>", "exec")


def test_native_sidecar_keeps_its_probes_and_has_no_hook() -> None:
    """Native: kubelet waits for the startup probe itself; no lifecycle hooks at all."""
    container, native = sidecar_container(pod_spec(render([ALL_BRANCHES], kube_version="1.31.0")))
    assert native
    assert "lifecycle" not in container
    assert container["startupProbe"]["httpGet"] == {"path": "/health/live", "port": "sidecar-ops"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "sidecar-ops"}


def test_hook_can_be_switched_off() -> None:
    """holdBotUntilReady.enabled=false drops the postStart hook and keeps the preStop sleep."""
    container, _ = sidecar_container(pod_spec(render(
        [ALL_BRANCHES], ["sidecar.holdBotUntilReady.enabled=false"], kube_version="1.28.0")))
    assert set(container["lifecycle"]) == {"preStop"}


@dataclass
class Readiness:
    """/health/ready that answers 503 until `ready`, counting the calls."""

    ready: bool = False
    calls: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        status = 200 if self.ready else 503
        self.calls.append(status)
        return web.json_response({"status": "ready" if self.ready else "not_ready"}, status=status)


async def _serve(aiohttp_server: AiohttpServer, readiness: Readiness) -> int:
    """Serve ``readiness`` on a free port with pytest-aiohttp (closed at teardown); its port."""
    app = web.Application()
    app.router.add_get("/health/ready", readiness.handle)
    return int((await aiohttp_server(app, access_log=None)).port)


async def _until(what: str, check: Callable[[], bool], within: float) -> None:
    await eventually(check, timeout=within, interval=0.05, what=what)


async def _run_hook(command: list[str]) -> asyncio.subprocess.Process:
    # The rendered script, run by this interpreter instead of the image's `python`.
    return await asyncio.create_subprocess_exec(sys.executable, *command[1:])


async def test_hook_returns_only_once_the_sidecar_is_ready(aiohttp_server: AiohttpServer) -> None:
    """The rendered hook keeps polling while readiness is 503 and exits 0 on the first 200."""
    readiness = Readiness()
    port = await _serve(aiohttp_server, readiness)
    hook = _hook([f"sidecar.opsPort={port}", "sidecar.holdBotUntilReady.timeoutSeconds=60"])
    proc = await _run_hook(hook)
    try:
        await _until("three readiness polls", lambda: len(readiness.calls) >= 3, within=20)
        assert proc.returncode is None, "the hook returned while the sidecar was not ready"
        readiness.ready = True
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert readiness.calls[-1] == 200 and set(readiness.calls[:-1]) == {503}


async def test_hook_gives_up_after_its_timeout(aiohttp_server: AiohttpServer) -> None:
    """A sidecar that never gets ready makes the hook exit 1 after timeoutSeconds (bounded, not forever)."""
    readiness = Readiness()
    port = await _serve(aiohttp_server, readiness)
    hook = _hook([f"sidecar.opsPort={port}", "sidecar.holdBotUntilReady.timeoutSeconds=1"])
    proc = await _run_hook(hook)
    started = time.monotonic()
    try:
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 1
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert time.monotonic() - started >= 1
    assert readiness.calls and set(readiness.calls) == {503}
