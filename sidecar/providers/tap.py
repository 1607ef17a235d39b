"""What one first request of a paid job did upstream, and the relay that copies its answer.

The proxy fills a ``Tap`` while it forwards (the status and headers when a response head came back,
whether any byte of the request was written when none did) and ``relay_tapped`` streams the body
to the client while a ``BodyCapture`` keeps a bounded copy. The ledger settles the claim from the
tap once the client has the whole answer, so the client never waits for the store.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ..state import BodyCapture, Outcome, settle
from ..upstream.h1pool import H1Response

__all__ = ["Tap", "relay_tapped"]

_NO_BODY_STATUSES = frozenset({204, 304})
_UPSTREAM_ERRORS = (TimeoutError, aiohttp.ClientError, OSError)


class Tap:
    def __init__(self, limit: int) -> None:
        self.capture = BodyCapture(limit)
        self.status: int | None = None
        self.headers: tuple[tuple[str, str], ...] = ()
        self.sent = False
        self.ended = False  # the whole body was read from the provider

    def answered(self, status: int, headers: CIMultiDict[str]) -> None:
        """A response head came back; ``headers`` are the ones the client gets (stored for replay)."""
        self.status = status
        self.headers = tuple(headers.items())
        self.sent = True

    def unanswered(self, sent: bool) -> None:
        """No response head: ``sent`` says whether any byte of the request went upstream."""
        self.sent = sent

    @property
    def outcome(self) -> Outcome:
        return settle(self.status, request_sent=self.sent)


async def relay_tapped(
    request: web.Request, up: H1Response, headers: CIMultiDict[str], tap: Tap
) -> web.StreamResponse:
    """Stream the answer to the client, copying it into the tap; write it whole before returning.

    A client that goes away does not stop the copy: the provider's answer is still read (up to
    the capture's limit) so that a repeat of the request can be given it.
    """
    resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
    if up.content_length is not None:
        resp.content_length = up.content_length
    if request.method == "HEAD" or up.status in _NO_BODY_STATUSES:
        up.release()
        tap.ended = True
        await _send_head(request, resp)
        return resp
    client_ok = await _send_head(request, resp)
    try:
        async for chunk in up.content.iter_any():
            tap.capture.feed(chunk)
            if client_ok:
                client_ok = await _write(resp, chunk)
            elif tap.capture.too_large:
                break  # nobody to give it to, and too large to keep: stop reading
        else:
            tap.ended = True
    except _UPSTREAM_ERRORS:
        up.close()  # the provider died mid-body: a truncated body must never look complete
        _abort(request)
        return resp
    finally:
        up.release()
    if client_ok and tap.ended:
        try:
            await resp.write_eof()
        except _UPSTREAM_ERRORS:
            _abort(request)
    elif not tap.ended:
        _abort(request)
    return resp


async def _send_head(request: web.Request, resp: web.StreamResponse) -> bool:
    try:
        await resp.prepare(request)
    except (ConnectionError, OSError, RuntimeError):
        return False
    return True


async def _write(resp: web.StreamResponse, chunk: bytes) -> bool:
    try:
        await resp.write(chunk)
    except (ConnectionError, OSError, aiohttp.ClientError):
        return False
    return True


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()
