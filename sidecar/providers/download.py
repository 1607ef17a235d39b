"""``GET|HEAD /<download provider>?url=<URL>``: fetch a file for the bot, safely, and stream it back.

Every hop (the first URL and each redirect, at most ``max_redirects``) is checked against the
scheme and host allow-lists and the address rules of ``ssrf`` before it is sent, and again by the
session's resolver and socket factory when it connects. Each hop goes through the attempt loop with
its host's own breaker (``policy.host_breakers``), so retries happen only before the first byte
reaches the client. A refused target is never a breaker call. ``max_download_size`` is enforced from
Content-Length before anything is sent (413) and while streaming (the client connection is cut).

A ``url=`` that is missing, unparsable or has no scheme is 400 ``bad_request``; one whose scheme is
not in ``allowed_schemes`` (``file:``, ``data:``, ``javascript:`` ...) is 403 ``forbidden_target``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, istr
from yarl import URL

from ..config import DownloadConfig, RouteConfig
from ..errors import ErrorCode, SidecarError, to_response
from ..headers import ATTEMPTS, REQUEST_ID
from ..logs import get_logger
from ..policy.breaker import CircuitBreaker
from ..policy.retry import RetryBudget
from ..upstream.attempts import AttemptLoop
from ..upstream.observer import AttemptMetrics
from ..upstream.ssrf import ForbiddenTarget, HostAllowList, canonical_host, parse_ip, refusal
from ..upstream.transports import session_send
from .registry import ProviderRegistry
from .runtime import DownloadRuntime

# Request headers worth sending to a file host; nothing else of the bot's (no cookies, no
# credentials, no Accept-Encoding: the bot wants the file's bytes, not a compressed transfer).
FORWARD: tuple[istr, ...] = tuple(istr(h) for h in (
    "Accept", "Accept-Language", "User-Agent", "Range", "If-Range", "If-None-Match",
    "If-Modified-Since",
))
# Response headers that describe the file. Set-Cookie, HSTS, Alt-Svc, CORS and the like are
# dropped: the sidecar is one origin (127.0.0.1) for every host, so they would apply to the wrong site.
PASS: tuple[istr, ...] = tuple(istr(h) for h in (
    "Content-Type", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Range",
    "Accept-Ranges", "ETag", "Last-Modified", "Cache-Control", "Expires",
))
REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NO_BODY = frozenset({204, 304})
# RFC 3986 scheme; "host:port/..." (``localhost:8080/f``) has the same shape but names no scheme.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_HOST_PORT = re.compile(r"[^:/?#]+:[0-9]+(?:[/?#].*)?", re.DOTALL)


@dataclasses.dataclass(slots=True)
class HostTarget:
    """One download host as the attempt loop sees it (``upstream.attempts.Target``): the host's
    own breaker with the provider's budget and metrics."""

    name: str
    host: str
    breaker: CircuitBreaker
    budget: RetryBudget
    metrics: AttemptMetrics


@dataclasses.dataclass(frozen=True, slots=True)
class DownloadGuard:
    """The URL checks of one download provider, built once from its config."""

    schemes: frozenset[str]
    hosts: HostAllowList
    allow_private: bool

    @classmethod
    def of(cls, cfg: DownloadConfig) -> DownloadGuard:
        return cls(frozenset(cfg.allowed_schemes), HostAllowList(cfg.allowed_hosts),
                   cfg.allow_private_networks)

    def scheme_refusal(self, scheme: str) -> str | None:
        """Why this scheme may not be fetched (``file``, ``data``, ``ftp`` ...), or None."""
        if scheme in self.schemes:
            return None
        return f"scheme {scheme!r} is not allowed (allowed_schemes: {', '.join(sorted(self.schemes))})"

    def check(self, url: URL) -> str | None:
        """Why this URL may not be fetched, or None (addresses are checked again on connect)."""
        reason = self.scheme_refusal(url.scheme)
        if reason is not None:
            return reason
        host = url.raw_host or ""
        if not self.hosts.allows(host):
            return f"host {canonical_host(host)!r} is not in allowed_hosts"
        ip = parse_ip(host)
        reason = None if ip is None else refusal(ip, self.allow_private)
        return None if reason is None else f"address {ip} is {reason}"


def url_param(values: Sequence[str]) -> str:
    """The one non-empty ``url=`` value; anything else is 400 bad_request."""
    if len(values) != 1 or not values[0].strip():
        raise SidecarError(ErrorCode.BAD_REQUEST, "exactly one url= query parameter is required")
    return values[0].strip()


def url_scheme(text: str) -> str:
    """The scheme of ``url=``, lower-cased; a URL without one is 400 bad_request."""
    match = _SCHEME.match(text)
    if match is None or _HOST_PORT.fullmatch(text):
        raise SidecarError(ErrorCode.BAD_REQUEST, "url= must be an absolute URL with a scheme")
    return match.group(1).lower()


def parse_download_url(text: str) -> URL:
    """The absolute URL of ``url=`` (its scheme already allowed); unparsable, host-less or
    credentialed is 400 bad_request."""
    try:
        url = to_url(text)
        host = url.raw_host
    except (ValueError, TypeError) as exc:
        raise SidecarError(ErrorCode.BAD_REQUEST, f"url= is not a valid URL: {exc}") from None
    if "://" not in text:
        raise SidecarError(ErrorCode.BAD_REQUEST, "url= must be an absolute URL like https://host/path")
    if not host:
        raise SidecarError(ErrorCode.BAD_REQUEST, "url= has no host")
    if url.raw_user is not None or url.raw_password is not None:
        raise SidecarError(ErrorCode.BAD_REQUEST, "url= must not carry credentials")
    return url.with_fragment(None)


def to_url(text: str) -> URL:
    """Keep an already-encoded URL byte for byte (signed URLs break if ``%2F`` becomes ``/``);
    only a URL with spaces or non-ASCII characters is quoted."""
    if all("!" <= c <= "~" for c in text):
        return URL(text, encoded=True)
    return URL(text)


def host_key(url: URL) -> str:
    """The per-host breaker key: the origin's host and port."""
    return f"{canonical_host(url.raw_host or '')}:{url.port}"


class DownloadHandler:
    """Serves the download providers (``kind: download``)."""

    def __init__(self, registry: ProviderRegistry, loop: AttemptLoop) -> None:
        self._clock = registry.clock
        self._loop = loop
        self._log = get_logger("download")
        self._guards = {  # built once: every hop of every download is checked against these
            name: DownloadGuard.of(rt.download)
            for name, rt in registry.providers.items()
            if isinstance(rt, DownloadRuntime)
        }

    async def forward(
        self, request: web.Request, rt: DownloadRuntime, rest: str, query: str,
        route: RouteConfig, request_id: str,
    ) -> web.StreamResponse:
        """Check the request, fetch the file; a refusal is answered as JSON with the request id."""
        try:
            if request.method not in ("GET", "HEAD"):
                raise SidecarError(ErrorCode.METHOD_NOT_ALLOWED, "downloads are GET or HEAD",
                                   provider=rt.name)
            if rest not in ("", "/"):
                raise SidecarError(ErrorCode.BAD_REQUEST, "downloads take no path, only ?url=",
                                   provider=rt.name)
            text = url_param(request.query.getall("url", []))
            # A refused scheme is 403 before any parsing: file:, data: and javascript: URLs have
            # no host, and their shape says nothing about whether they could be fetched.
            reason = self._guards[rt.name].scheme_refusal(url_scheme(text))
            if reason is not None:
                raise self._refuse(rt, None, reason, 0)
            url = parse_download_url(text)
            return await self._fetch(request, rt, url, route, request_id)
        except SidecarError as err:
            resp = to_response(err.with_context(provider=rt.name))
            resp.headers[REQUEST_ID] = request_id
            return resp

    def _refuse(self, rt: DownloadRuntime, url: URL | None, reason: str, hop: int) -> SidecarError:
        self._log.warning("download_refused", provider=rt.name,
                          host=None if url is None else url.raw_host, hop=hop, reason=reason)
        return SidecarError(ErrorCode.FORBIDDEN_TARGET, reason, provider=rt.name)

    async def _fetch(
        self, request: web.Request, rt: DownloadRuntime, url: URL, route: RouteConfig,
        request_id: str,
    ) -> web.StreamResponse:
        """Follow redirects hop by hop, each one checked and sent under its host's breaker."""
        cfg = rt.download
        hosts = rt.hosts
        guard = self._guards[rt.name]
        headers = CIMultiDict((h, v) for h in FORWARD for v in request.headers.getall(h, ()))
        deadline = self._clock() + route.timeouts.total
        attempts = 0
        for hop in range(cfg.max_redirects + 1):
            reason = guard.check(url)
            if reason is not None:
                raise self._refuse(rt, url, reason, hop)
            hop_route = self._remaining(route, deadline)
            key = host_key(url)
            target = HostTarget(rt.name, key, hosts.breaker(key), rt.budget, rt.metrics)
            send = session_send(rt.session, request.method, url, headers, None)
            try:
                exchange = await self._loop.run(target, send, route=hop_route, retryable=True)
            except ForbiddenTarget as exc:
                raise self._refuse(rt, url, exc.reason, hop) from None
            attempts += exchange.attempts
            if exchange.response is None:
                assert exchange.error is not None
                raise exchange.error.with_context(attempts=attempts)
            up = exchange.response
            location = up.headers.get("Location") if up.status in REDIRECTS else None
            if location is None:
                return await self._relay(request, up, attempts, request_id, cfg.max_download_size)
            up.release()
            url = _next_hop(url, location, rt.name)
        raise SidecarError(ErrorCode.TOO_MANY_REDIRECTS,
                           f"more than {cfg.max_redirects} redirects", attempts=attempts)

    def _remaining(self, route: RouteConfig, deadline: float) -> RouteConfig:
        """The provider's route with ``timeouts.total`` shrunk to what is left for later hops."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise SidecarError(ErrorCode.UPSTREAM_TIMEOUT, "redirects used up timeouts.total")
        return dataclasses.replace(
            route, timeouts=dataclasses.replace(route.timeouts, total=remaining)
        )

    async def _relay(
        self, request: web.Request, up: aiohttp.ClientResponse, attempts: int, request_id: str,
        limit: int,
    ) -> web.StreamResponse:
        """Headers the client may see, then the body unless HEAD; 413 from Content-Length."""
        length = up.content_length
        if length is not None and length > limit:
            up.close()  # not drained: the rest of an oversized body is not worth reading
            raise SidecarError(ErrorCode.BODY_TOO_LARGE,
                               f"Content-Length {length} exceeds max_download_size {limit}",
                               attempts=attempts)
        headers = CIMultiDict((h, v) for h in PASS for v in up.headers.getall(h, ()))
        headers[ATTEMPTS] = str(attempts)
        headers[REQUEST_ID] = request_id
        resp = web.StreamResponse(status=up.status, reason=up.reason, headers=headers)
        if length is not None:
            resp.content_length = length
        if request.method == "HEAD" or up.status in _NO_BODY:
            up.release()
            return resp
        return await self._stream(request, up, resp, limit)

    async def _stream(
        self, request: web.Request, up: aiohttp.ClientResponse, resp: web.StreamResponse,
        limit: int,
    ) -> web.StreamResponse:
        """Stream the body; past ``limit`` or on an upstream error, cut the client's connection."""
        sent = 0
        try:
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                sent += len(chunk)
                if sent > limit:
                    self._log.warning("download_cut", url_host=up.url.raw_host, limit=limit)
                    return _cut(request, up, resp)
                await resp.write(chunk)
            await resp.write_eof()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self._log.warning("download_interrupted", url_host=up.url.raw_host, sent=sent,
                              error=type(exc).__name__)
            return _cut(request, up, resp)
        finally:
            up.release()
        return resp


def _cut(request: web.Request, up: aiohttp.ClientResponse, resp: web.StreamResponse) -> web.StreamResponse:
    """Abort both connections so a truncated body can never look complete to the client."""
    up.close()
    if request.transport is not None:
        request.transport.abort()
    return resp


def _next_hop(url: URL, location: str, provider: str) -> URL:
    """The absolute URL a redirect points to (relative Locations resolved against ``url``)."""
    try:
        nxt = url.join(to_url(location.strip()))
        _ = nxt.raw_host  # a bad IPv6 literal or port fails here, not at connect time
    except (ValueError, TypeError):
        raise SidecarError(ErrorCode.UPSTREAM_UNREACHABLE, "redirect with an invalid Location",
                           provider=provider) from None
    return nxt.with_fragment(None)
