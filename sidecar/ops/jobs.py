"""``/admin/jobs``: the job ledger's records (never their bodies), and releasing a key by hand.

``GET /admin/jobs?provider=P&limit=N`` lists recent records, newest claim first; ``GET
/admin/jobs/<provider>/<key>`` shows one (the key percent-encoded in the path); ``POST
/admin/jobs/<provider>/<key>/release`` forgets it, so the bot's next request with that key is a
first request again. The access rule is ``/admin``'s. ``ledger_health`` is the ``ledger`` object of
``/health/detailed``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from aiohttp import web

from ..errors import ErrorCode, error_response
from ..logs import get_logger
from ..providers.ledger import JobLedger
from ..state import InvalidName, LedgerRecord, StoreError
from ..state.ledger import WINDOW_SCOPE_SUFFIX

__all__ = ["JobsAdmin", "ledger_health", "record_view"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
Guard = Callable[[Handler], Handler]
MAX_LIMIT = 1000


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_view(record: LedgerRecord) -> dict[str, object]:
    """A record as JSON: its state and times, the stored status and size, no body, no claim token."""
    response = record.response
    provider, _, window = record.provider.partition("#")
    return {
        "provider": provider,
        "key": record.key,
        "keyless_window": bool(window),  # keyed by the request's fingerprint (idempotency_window)
        "state": record.state.value,
        "fingerprint": record.fingerprint,
        "owner": record.owner,
        "claimed_at": _iso(record.claimed_at),
        "sent_at": _iso(record.sent_at),
        "expires_at": _iso(record.expires_at),
        "response": None if response is None else {
            "status": response.status,
            "body_bytes": None if response.body is None else len(response.body),
            "body_kept": not response.body_too_large,
        },
    }


async def ledger_health(jobs: JobLedger | None) -> dict[str, object] | None:
    """The ``ledger`` object of ``/health/detailed``; None when no route creates jobs."""
    if jobs is None:
        return None
    health = await jobs.store.health()
    return {"backend": health.backend, "ok": health.ok, "entries": health.entries,
            "evictions": health.evictions, "error": health.error, "unprotected": jobs.unprotected}


class JobsAdmin:
    def __init__(self, jobs: JobLedger | None, providers: list[str]) -> None:
        self.jobs = jobs
        self.providers = providers
        self._log = get_logger("admin")

    def add_routes(self, app: web.Application, guard: Guard) -> None:
        app.router.add_get("/admin/jobs", guard(self.list))
        app.router.add_get("/admin/jobs/{provider}/{key}", guard(self.show))
        app.router.add_post("/admin/jobs/{provider}/{key}/release", guard(self.release))

    def _refusal(self, provider: str | None) -> web.Response | None:
        if self.jobs is None:
            return error_response(ErrorCode.NOT_FOUND, "no route of this configuration creates jobs")
        if provider is not None and provider not in self.providers:
            return error_response(ErrorCode.UNKNOWN_PROVIDER, "no such provider", provider=provider,
                                  extra={"known_providers": self.providers})
        return None

    async def list(self, request: web.Request) -> web.Response:
        provider = request.query.get("provider") or None
        refused = self._refusal(provider)
        if refused is not None:
            return refused
        assert self.jobs is not None
        try:
            limit = min(MAX_LIMIT, max(1, int(request.query.get("limit", "100"))))
        except ValueError:
            return error_response(ErrorCode.BAD_REQUEST, "limit must be an integer")
        store = self.jobs.store
        try:
            records = await store.list(provider, limit)
            if provider is not None:  # and its keyless repeats
                records += await store.list(provider + WINDOW_SCOPE_SUFFIX, limit)
        except StoreError as exc:
            return error_response(ErrorCode.LEDGER_UNAVAILABLE, str(exc))
        records.sort(key=lambda r: r.claimed_at, reverse=True)
        return web.json_response({"jobs": [record_view(r) for r in records[:limit]]})

    async def _on_key(
        self, request: web.Request, op: Callable[[JobLedger, str, str], Awaitable[T]]
    ) -> tuple[str, str, T] | web.Response:
        """The provider and key of the path, and ``op`` on them; or the error answer instead."""
        provider, key = request.match_info["provider"], request.match_info["key"]
        refused = self._refusal(provider)
        if refused is not None:
            return refused
        assert self.jobs is not None
        try:
            return provider, key, await op(self.jobs, provider, key)
        except InvalidName as exc:  # a key no request could have: not 1..255 printable ASCII
            return error_response(ErrorCode.BAD_REQUEST, str(exc), provider=provider)
        except StoreError as exc:
            return error_response(ErrorCode.LEDGER_UNAVAILABLE, str(exc), provider=provider)

    async def show(self, request: web.Request) -> web.Response:
        found = await self._on_key(request, lambda jobs, p, k: jobs.store.get(p, k))
        if isinstance(found, web.Response):
            return found
        provider, _, record = found
        if record is None:
            return error_response(ErrorCode.NOT_FOUND, "no record for this key", provider=provider)
        return web.json_response(record_view(record))

    async def release(self, request: web.Request) -> web.Response:
        done = await self._on_key(request, _release)
        if isinstance(done, web.Response):
            return done
        provider, key, released = done
        self._log.warning("admin_job_release", provider=provider, key=key, released=released,
                          remote=request.remote)
        return web.json_response({"provider": provider, "key": key, "released": released})


async def _release(jobs: JobLedger, provider: str, key: str) -> bool:
    """Forget the key in the store and in this sidecar's recent answers."""
    released = await jobs.store.release(provider, key)
    if released:
        jobs.released(provider, key)
    return released
