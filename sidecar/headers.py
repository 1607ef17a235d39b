"""Header rules for forwarding: which headers never cross the proxy, computed once at import.

Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, not the message, so they are
dropped in both directions, along with any header the sender named in its own ``Connection``.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy, istr

# Lower-case names: header names are case-insensitive and clients send any case ("connection",
# "HOST"), so every lookup below lower-cases the name first. (istr is only a marker type: a set
# of istr matches exact case only.)
HOP_BY_HOP: frozenset[str] = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)

# Never forwarded upstream: the client's view of the sidecar (Host), things the client recomputes or
# answers itself (Expect: 100-continue), and the sidecar's own control header.
REQUEST_DROP: frozenset[str] = HOP_BY_HOP | frozenset(
    h.lower() for h in ("Host", "Expect", "X-Sidecar-Operation")
)

# Recomputed by the server for the response it writes.
RESPONSE_DROP: frozenset[str] = HOP_BY_HOP | frozenset(h.lower() for h in ("Content-Length",))

REQUEST_ID = istr("X-Request-Id")
ATTEMPTS = istr("X-Sidecar-Attempts")
SIDECAR_ERROR = istr("X-Sidecar-Error")
CALLER_OPERATION = istr("X-Sidecar-Operation")  # the bot's own name for what it is doing
IDEMPOTENCY_KEY = istr("Idempotency-Key")
RETRY_AFTER = istr("Retry-After")


def _connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """Header names listed in Connection are hop-by-hop for this message only (lower-cased)."""
    values = headers.getall("Connection", ())
    if not values:
        return frozenset()
    return frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())


def filter_headers(headers: CIMultiDictProxy[str], drop: frozenset[str]) -> CIMultiDict[str]:
    """Copy headers, keeping repeated ones and their case, minus ``drop`` and Connection-named ones.

    ``drop`` holds lower-case names.
    """
    extra = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    add = out.add
    for name, value in headers.items():
        low = name.lower()
        if low in drop or (extra and low in extra):
            continue
        add(name, value)
    return out
