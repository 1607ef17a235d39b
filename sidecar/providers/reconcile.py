"""Asking Replicate what became of a create whose outcome is unknown, through the provider's pool.

The list calls (``GET /v1/predictions`` or ``/v1/trainings``, free) go through the provider's own
connection pool with its auth header, but not through its breaker or retries: they are the
sidecar's bookkeeping, not the bot's traffic, and a failure only means "can't tell" (409
``outcome_unknown``), never a duplicate. Every page shares the seconds the repeat has left.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from multidict import CIMultiDict

from ..state import Reconciliation, reconcile_replicate, replicate_job
from .ledger import Reconcile
from .runtime import ProxyRuntime

__all__ = ["MAX_PAGE_BYTES", "replicate_reconciler"]

MAX_PAGE_BYTES = 8 * 1024 * 1024  # a list page is ~100 jobs; far larger is not a list page


def replicate_reconciler(rt: ProxyRuntime, path: str, body: bytes) -> Reconcile | None:
    """How to reconcile the create ``path`` + ``body``; None when it is not a create Replicate lists."""
    job = replicate_job(path, body)
    if job is None:
        return None

    async def reconcile(sent_at: float, seconds: float) -> Reconciliation:
        deadline = asyncio.get_running_loop().time() + seconds
        return await reconcile_replicate(lambda target: _fetch(rt, target, deadline), job, sent_at)

    return reconcile


async def _fetch(rt: ProxyRuntime, target: str, deadline: float) -> tuple[int, Any]:
    """One list page: its status and JSON (None unless 200). Raises on any failure."""
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise TimeoutError("no time left to ask the provider")
    pool = rt.pool
    headers: CIMultiDict[str] = CIMultiDict(rt.auth_headers)
    headers["Accept"] = "application/json"
    up = await pool.request("GET", pool.prefix + target, headers, None, left)
    try:
        async with asyncio.timeout(max(0.0, deadline - asyncio.get_running_loop().time())):
            raw = await _read_capped(up.content)
    finally:
        if up.content.is_eof():
            up.release()
        else:
            up.close()
    return up.status, json.loads(raw) if up.status == 200 else None


async def _read_capped(content: aiohttp.StreamReader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > MAX_PAGE_BYTES:
            raise ValueError(f"list page over {MAX_PAGE_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
