"""Configurations and helpers for the job ledger tests: a provider with a creates_job route."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from multidict import CIMultiDict

from sidecar.config import LedgerConfig, RetryConfig, RouteConfig, SidecarConfig, Timeouts
from sidecar.web.app import SERVICES

from ..support.configs import provider
from ..support.metric_samples import metric

CREATE = "/jobs/v1/create"
FAST_RETRY = RetryConfig(base_delay=0.01, max_delay=1.0)


def job_route(**overrides: Any) -> RouteConfig:
    base = RouteConfig(
        name="create", method="POST", path="/v1/create", creates_job=True, retry=FAST_RETRY,
        timeouts=Timeouts(connect=2.0, attempt=5.0, total=10.0),
    )
    return dataclasses.replace(base, **overrides)


def job_config(upstream: str, *, route: RouteConfig | None = None, ledger: LedgerConfig | None = None,
               **provider_overrides: Any) -> SidecarConfig:
    """One provider ``jobs`` whose ``POST /v1/create`` creates jobs, on a memory ledger by default."""
    routes = (route or job_route(),)
    return SidecarConfig(
        providers={"jobs": provider("jobs", upstream, routes=routes, **provider_overrides)},
        ledger=ledger or LedgerConfig(backend="memory"),
    )


def store_of(client: Any) -> Any:
    jobs = client.app[SERVICES].jobs
    assert jobs is not None
    return jobs.store


def counted(client: Any, result: str, provider: str = "jobs") -> float:
    return metric(client, "sidecar_idempotency_total", provider=provider, result=result)


async def post(client: Any, key: str | None = None, body: bytes = b'{"input": 1}',
               path: str = CREATE, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    """POST and read the whole answer: (status, headers, body)."""
    if key is not None:
        headers["Idempotency-Key"] = key
    async with client.post(path, data=body, headers=headers) as resp:
        return resp.status, resp.headers.copy(), await resp.read()


async def until(predicate: Any, within: float = 5.0) -> None:
    """Poll ``predicate()`` until true, failing after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
