"""Load with faults through the real sidecar subprocess (slow: about 30 s on 2 cores).

``RELIABILITY_REQUESTS`` changes the request count (default 20,000); ``make soak`` runs the same
scenario for a duration and prints the figures.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from ..support.redis_server import RedisServer
from .load import Spec, run_on_uvloop


@pytest.mark.slow
async def test_load_with_faults_keeps_every_invariant(tmp_path: Path) -> None:
    """200 clients, 10% 503, 2% resets, latency and an outage: every invariant holds, among them
    that the breaker opens during the outage and never outside it, that no paid-create key reaches
    the provider twice, and that a repeat of a created job is answered from the ledger."""
    spec = Spec(requests=int(os.environ.get("RELIABILITY_REQUESTS", "20000")))
    # Its own thread and uvloop: the generator stays light, and the test's loop stays free.
    report = await asyncio.to_thread(run_on_uvloop, spec, tmp_path)
    print(report.summary())
    assert report.problems() == []
    assert report.requests == spec.requests == sum(report.by_code.values())
    # The faults really happened, retries really ran, and the outage really opened the breaker.
    # (Bounds well under the 10%/2% mix: the outage and the clean window after it take a share of
    # the run that grows as the sidecar gets faster.)
    assert report.provider_faults["status"] > 0.02 * spec.requests
    assert report.provider_faults["reset"] > 0.002 * spec.requests
    assert report.retries > 0
    assert report.job_replays > 0  # repeats of paid creates really met the ledger
    assert len(report.outages) == 1 and report.by_code["503 circuit_open"] > 0
    assert report.outage_provider_share[0] < 0.5  # the open breaker kept most traffic off the provider


@pytest.mark.slow
async def test_two_sidecars_on_one_redis_never_send_a_key_twice(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The same load and faults through two sidecars sharing a Redis ledger, a key on every POST,
    each repeat of a created job sent to the other sidecar: no paid-create key reaches the provider
    twice, and every repeat is answered from the ledger the first sidecar wrote."""
    spec = Spec(requests=int(os.environ.get("RELIABILITY_REQUESTS", "20000")) // 2, sidecars=2,
                redis_url=redis_server.url, keys_on_every_post=True)
    report = await asyncio.to_thread(run_on_uvloop, spec, tmp_path)
    print(report.summary())
    assert report.problems() == []
    assert report.requests == spec.requests == sum(report.by_code.values())
    assert report.provider_faults["status"] > 0.02 * spec.requests
    assert report.job_duplicates == 0
    assert report.job_replays > 0.05 * spec.requests  # a sixth are creates; most succeed
