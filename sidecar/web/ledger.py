"""Building the job ledger from the configuration: the store it names, observed by the metrics."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..config import LedgerConfig, SidecarConfig
from ..ops.metrics import Metrics
from ..providers.ledger import JobLedger
from ..state import LedgerBackend, LedgerSettings, OnUnavailable, open_store

__all__ = ["ledger_settings", "open_job_ledger"]


def ledger_settings(config: LedgerConfig) -> LedgerSettings:
    return LedgerSettings(
        backend=LedgerBackend(config.backend),
        path=config.path,
        url=config.url,
        prefix=config.prefix,
        ttl=config.ttl,
        max_stored_body=config.max_stored_body,
        max_entries=config.max_entries,
        on_unavailable=OnUnavailable(config.on_unavailable),
    )


def open_job_ledger(
    config: SidecarConfig, metrics: Metrics, *, instance_id: str, environ: Mapping[str, str],
    wall: Callable[[], float],
) -> JobLedger | None:
    """The ledger (its store not started yet), or None when no route creates jobs.

    ``environ``: ``SIDECAR_STATE_DIR`` places the SQLite file (see ``state.settings``).
    """
    providers = [name for name, p in config.providers.items() if any(r.creates_job for r in p.routes)]
    if not providers:
        return None
    counter = metrics.jobs(providers)
    settings = ledger_settings(config.ledger)
    store = open_store(settings, instance_id=instance_id, environ=environ, clock=wall, observer=counter)
    return JobLedger(
        store, counter, max_stored_body=settings.max_stored_body,
        refuse_when_unavailable=settings.on_unavailable is OnUnavailable.REFUSE, wall=wall,
    )
