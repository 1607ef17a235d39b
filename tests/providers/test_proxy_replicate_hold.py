"""Replicate's held creates: the real ``replicate`` SDK, through the sidecar, against a fake that holds.

Both official SDKs' ``run()`` send ``Prefer: wait``, and Replicate then holds the create for up to
60 s. The default configuration gives the create routes timeouts that outlast that hold with margin
(``outlasts_hold``). The end-to-end tests run on a time scale of 1/50 so that they take about a
second: the sidecar gets the default configuration's Replicate routes with every timeout scaled, and
the fake holds each create for the scaled 60 s plus a quarter of it again for the answer to arrive.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
import yaml
from pytest_aiohttp import AiohttpServer
from replicate.exceptions import ReplicateError

from sidecar.config import ProviderConfig, RouteConfig, Timeouts
from sidecar.config.load import load_config
from sidecar.config.units import format_duration

from ..support.fake_replicate_hold import MARGIN, REPLICATE_MAX_HOLD, FakeReplicate, outlasts_hold
from ..support.process import start_sidecar

SCALE = 1 / 50
HOLD = REPLICATE_MAX_HOLD * SCALE  # 1.2 s stands for the 60 s hold
ANSWER_AFTER = HOLD * (1 + MARGIN / 2)  # the full hold, then the answer's own way back
TOKEN = "r8_FAKE_sidecar_injected"
CREATES = {"create_prediction", "create_model_prediction", "create_deployment_prediction"}


def _default_replicate() -> ProviderConfig:
    return load_config(None, {}).providers["replicate"]


def _scaled(timeouts: Timeouts) -> dict[str, str]:
    # connect is not part of the hold: it stays as configured.
    return {"connect": format_duration(timeouts.connect),
            "attempt": f"{round(timeouts.attempt * SCALE * 1000)}ms",
            "total": f"{round(timeouts.total * SCALE * 1000)}ms"}


def _config(upstream: str, timeouts_of: Callable[[RouteConfig], Timeouts]) -> str:
    """The default configuration's Replicate routes, each with ``timeouts_of(route)`` scaled.

    The provider's own timeouts are scaled too: they apply to requests that match no route.
    """
    default = _default_replicate()
    routes: list[dict[str, Any]] = []
    for route in default.routes:
        entry: dict[str, Any] = {"name": route.name, "method": route.method, "path": route.path,
                                 "retry": {"max_attempts": route.retry.max_attempts},
                                 "timeouts": _scaled(timeouts_of(route))}
        if route.idempotent is not None:
            entry["idempotent"] = route.idempotent
        routes.append(entry)
    auth = {"header": "Authorization", "prefix": "Bearer ", "env": "REPLICATE_API_TOKEN"}
    block = {"upstream": upstream, "auth": auth, "timeouts": _scaled(default.timeouts),
             "routes": routes}
    return yaml.safe_dump({"providers": {"replicate": block}}, sort_keys=False)


@asynccontextmanager
async def _client(proxy: str) -> AsyncIterator[replicate.Client]:
    """The SDK pointed at the sidecar; its connections are closed on exit (the SDK has no close)."""
    transport = httpx.AsyncHTTPTransport()
    # No token in the bot: the sidecar injects it. The SDK polls quickly at this time scale.
    client = replicate.Client(api_token=None, base_url=f"{proxy}/replicate", transport=transport)
    client.poll_interval = 0.02
    try:
        yield client
    finally:
        await transport.aclose()


def test_every_default_create_route_outlasts_replicates_longest_hold() -> None:
    """Each Replicate prediction create in the default config: attempt >= 90 s and total >= attempt."""
    routes = {r.name: r for r in _default_replicate().routes}
    creates = {name for name, r in routes.items()
               if r.method == "POST" and r.path.endswith("/predictions")}
    assert creates == CREATES
    for name in creates:
        timeouts = routes[name].timeouts
        assert outlasts_hold(timeouts), (name, timeouts)
        assert timeouts.attempt >= REPLICATE_MAX_HOLD * (1 + MARGIN) == 90.0


@pytest.fixture
async def fake(aiohttp_server: AiohttpServer) -> FakeReplicate:
    """The holding fake Replicate, served by pytest-aiohttp."""
    return await FakeReplicate(answer_after=ANSWER_AFTER).start(aiohttp_server)


@pytest.mark.parametrize(("call", "route_path"), [
    ("run_model", "/v1/models/acme/flux/predictions"),
    ("run_version", "/v1/predictions"),
    ("deployment", "/v1/deployments/acme/flux-prod/predictions"),
])
async def test_sdk_create_held_for_the_whole_wait_gets_through(
        fake: FakeReplicate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        call: str, route_path: str) -> None:
    """With the default route timeouts (scaled), a create held past 60 s (scaled) reaches the bot."""
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    sp = await start_sidecar(_config(fake.url, lambda r: r.timeouts), tmp_path,
                             env={"REPLICATE_API_TOKEN": TOKEN})
    try:
        async with _client(sp.proxy) as client:
            started = time.monotonic()
            if call == "run_model":
                output = await client.async_run("acme/flux", input={"prompt": "a cat"})
            elif call == "run_version":
                output = await client.async_run("acme/flux:v1", input={"prompt": "a cat"})
            else:
                prediction = await client.deployments.predictions.async_create(
                    deployment="acme/flux-prod", input={"prompt": "a cat"}, wait=True)
                await prediction.async_wait()
                output = prediction.output
            elapsed = time.monotonic() - started
    finally:
        await sp.kill()
    assert str(output) == "https://replicate.delivery/out.png"
    (create,) = fake.creates()
    assert (create.path, create.prefer) == (route_path, "wait")  # the SDK asked for the hold
    assert create.authorization == f"Bearer {TOKEN}"
    assert elapsed >= ANSWER_AFTER  # it really was held longer than the old attempt timeout
    assert [s.path for s in fake.seen if s.method == "GET"][-1] == "/v1/predictions/p-1"


async def test_provider_timeouts_lose_a_held_create(
        fake: FakeReplicate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the provider's 60 s attempt (scaled) on the create routes, as before, the bot gets 504
    while Replicate did create the (paid) prediction: the failure the longer route timeouts prevent."""
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    provider_level = _default_replicate().timeouts
    assert provider_level.attempt < HOLD / SCALE * (1 + MARGIN / 2)
    sp = await start_sidecar(_config(fake.url, lambda _: provider_level), tmp_path,
                             env={"REPLICATE_API_TOKEN": TOKEN})
    try:
        async with _client(sp.proxy) as client:
            with pytest.raises(ReplicateError) as info:
                await client.async_run("acme/flux", input={"prompt": "a cat"})
    finally:
        await sp.kill()
    assert info.value.status == 504
    assert (info.value.detail or "").startswith("no response within")  # the sidecar's upstream_timeout
    assert [(s.path, s.prefer) for s in fake.creates()] == [
        ("/v1/models/acme/flux/predictions", "wait")]
