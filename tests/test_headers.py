"""Header rules: hop-by-hop names are dropped whatever their case, everything else kept as sent."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.headers import REQUEST_DROP, RESPONSE_DROP, filter_headers


def _proxy(pairs: list[tuple[str, str]]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_lower_and_upper_case_hop_by_hop_names_are_dropped() -> None:
    """h11, Node and curl scripts send lower-case names; "connection" is as hop-by-hop as "Connection"."""
    out = filter_headers(
        _proxy([("connection", "close"), ("HOST", "x"), ("te", "trailers"), ("x-a", "1")]), REQUEST_DROP
    )
    assert list(out.items()) == [("x-a", "1")]


def test_names_listed_in_connection_are_dropped_in_any_case() -> None:
    """A header named by Connection is dropped however either side spells it."""
    headers = _proxy(
        [("Connection", "X-Hop, KEEP-ALIVE"), ("x-hop", "1"), ("Keep-Alive", "5"), ("X-Kept", "y")]
    )
    assert list(filter_headers(headers, REQUEST_DROP).items()) == [("X-Kept", "y")]


def test_response_framing_headers_are_dropped_in_any_case() -> None:
    """The server recomputes framing: a lower-case content-length or transfer-encoding never passes."""
    headers = _proxy([("content-length", "5"), ("transfer-encoding", "chunked"), ("Content-Type", "a/b")])
    assert list(filter_headers(headers, RESPONSE_DROP).items()) == [("Content-Type", "a/b")]


def test_repeated_headers_keep_their_order_and_case() -> None:
    """Repeated names survive as separate fields in their order, spelled as sent."""
    headers = _proxy([("X-A", "1"), ("x-a", "2"), ("Accept", "a")])
    out = filter_headers(headers, REQUEST_DROP)
    assert list(out.items()) == [("X-A", "1"), ("x-a", "2"), ("Accept", "a")]
