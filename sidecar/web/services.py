"""What both listeners share, built once per process: the single owner of start-up and shutdown.

``running()`` is the one lifecycle: it opens the providers' upstream connections, then starts the
probes, and closes them in the reverse order. ``create_app`` enters it through ``cleanup_ctx`` when
the app owns its services (tests, a single listener); ``serve`` enters it around both listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from .. import __version__
from ..config import SidecarConfig
from ..fleet.wiring import FleetState
from ..logs import get_logger
from ..ops.health import ProcessStatus
from ..ops.metrics import Metrics
from ..ops.probes import ProbeRunner
from ..providers.admission import Limits
from ..providers.ledger import JobLedger
from ..providers.registry import ProviderRegistry
from ..providers.shared_breaker import shared_breakers
from ..state import StoreError, instance_id_from
from ..upstream.attempts import AttemptLoop
from .ledger import open_job_ledger

__all__ = ["Services"]


class Services:
    """Metrics, the provider registry, the attempt loop, the probes, the process status, and the
    limits (this sidecar's, or the fleet's through Redis).

    ``clock`` (monotonic seconds), ``wall`` (epoch seconds), ``sleep`` and ``rng`` reach every part
    that waits, times or draws, so tests can inject all of them in one place.
    """

    def __init__(
        self,
        config: SidecarConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        rng = rng or random.Random()
        self.config = config
        self.clock = clock
        self.wall = wall
        self.rng = rng
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.metrics = Metrics(__version__)
        self.registry = ProviderRegistry(config, metrics=self.metrics, clock=clock)
        self.attempts = AttemptLoop(clock=clock, sleep=sleep, rng=rng, wall=wall)
        self.probes = ProbeRunner(
            self.registry, self.metrics, clock=clock, wall=wall, sleep=sleep, rng=rng
        )
        self.status = ProcessStatus(clock)
        fallbacks = self.metrics.limit_families.fallback
        self.fleet = FleetState.build(
            config, clock=clock, sleep=sleep, environ=self.environ,
            on_switch=lambda mode: fallbacks("limiter", mode),
        )
        self.limits = Limits(config.providers.values(), self.fleet, metrics=self.metrics, wall=wall)
        fleet = self.fleet

        def breakers_reachable(up: bool) -> None:
            fleet.breakers_reachable = up
            fallbacks("breaker", "fleet" if up else "local")

        self.shared = shared_breakers(self.registry, fleet, clock=clock, on_reachable=breakers_reachable)
        # SIDECAR_INSTANCE_ID: this process's name in a shared ledger (see open_job_ledger).
        self.instance_id = instance_id_from(self.environ)
        self.jobs: JobLedger | None = open_job_ledger(
            config, self.metrics, instance_id=self.instance_id, environ=self.environ, wall=wall
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Services]:
        """Open the upstream connections and start the probes; close both on the way out."""
        await self.registry.start()
        try:
            await self._start_ledger()
            self.probes.start()
            yield self
        finally:
            try:
                await self.probes.close()
            finally:
                try:
                    if self.jobs is not None:
                        await self.jobs.close()
                finally:
                    try:
                        await self.registry.close()
                    finally:
                        await self.limits.aclose()

    async def _start_ledger(self) -> None:
        """Open the store and turn what this instance's previous process left in flight unknown.

        A store that can't be reached (Redis down, an unwritable file) doesn't stop the start:
        requests then meet ``ledger.on_unavailable`` and ``/health/detailed`` shows the error.
        """
        if self.jobs is None:
            return
        store = self.jobs.store
        log = get_logger("ledger")
        try:
            await store.start()
            adopted = await store.adopt_orphans(self.instance_id)
        except StoreError as exc:
            log.error("ledger_start_failed", backend=store.backend, error=str(exc))
            return
        log.info("ledger_started", backend=store.backend, instance_id=self.instance_id,
                 adopted_unknown=adopted)
