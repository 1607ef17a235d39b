"""Property-based fuzzing of the routing and header code: what no request target or header set can do."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from sidecar.config import RouteConfig
from sidecar.headers import HOP_BY_HOP, REQUEST_DROP, RESPONSE_DROP, filter_headers
from sidecar.policy.routes import RouteTable
from sidecar.providers.proxy import split_target, upstream_target
from sidecar.upstream.h1pool import H1Pool

FUZZ = settings(max_examples=200, deadline=None)
# Every byte a request line may carry in its target (visible ASCII), weighted towards the tricky ones.
TARGET_CHARS = st.sampled_from(string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@%/?#[]\\\"<>^`{|}")
TRICKY = st.sampled_from(["/", "//", "..", "%2F", "%2f", "%2e%2e", "@", "?", "#", "\\", ":", "%00", "%0d%0a"])
RAW_TAIL = st.lists(st.one_of(TARGET_CHARS, TRICKY), max_size=40).map("".join)
BASES = st.sampled_from([
    "https://api.replicate.com", "https://api.elevenlabs.io/v1", "http://127.0.0.1:8443/api/v2",
    "https://xyz.supabase.co/rest/v1",
])


@FUZZ
@given(RAW_TAIL)
def test_split_target_never_lets_a_slash_into_the_provider(tail: str) -> None:
    """The provider segment never contains "/", and the three parts put back together are the target."""
    raw = "/" + tail
    name, rest, query = split_target(raw)
    assert "/" not in name
    assert rest == "" or rest.startswith("/")
    assert "?" not in name + rest
    assert "/" + name + rest + ("?" + query if "?" in raw else "") == raw


@FUZZ
@given(BASES, RAW_TAIL)
def test_upstream_request_always_goes_to_the_provider_host(base: str, tail: str) -> None:
    """Whatever the raw target, the request written upstream names the provider's host and path prefix."""
    _, rest, query = split_target("/p" + ("/" + tail if tail and not tail.startswith("?") else tail))
    pool = H1Pool(base)
    head = pool._head("GET", upstream_target(pool.prefix, rest, query), CIMultiDict(), None).decode()
    request_line, host_line = head.split("\r\n")[:2]
    method, sent, version = request_line.split(" ")
    expected = URL(base)
    assert (method, version) == ("GET", "HTTP/1.1")
    assert sent.startswith(expected.raw_path.rstrip("/") + "/")
    default = 443 if expected.scheme == "https" else 80
    authority = expected.raw_host if expected.port == default else f"{expected.raw_host}:{expected.port}"
    assert host_line == f"Host: {authority}"


HEADER_NAMES = st.one_of(
    st.sampled_from([*sorted(HOP_BY_HOP | REQUEST_DROP), "X-Request-Id", "Authorization", "X-Custom"]),
    st.text(string.ascii_letters + "-", min_size=1, max_size=12),
)
HEADER_VALUES = st.text(string.printable.replace("\r", "").replace("\n", ""), max_size=30)


@FUZZ
@given(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=12),
       st.sampled_from([REQUEST_DROP, RESPONSE_DROP]))
def test_filter_headers_drops_exactly_the_hop_by_hop_ones(
    pairs: list[tuple[str, str]], drop: frozenset[str]
) -> None:
    """Dropped names and Connection-named ones never survive; every other header survives, in order."""
    headers = CIMultiDictProxy(CIMultiDict(pairs))
    named = {t.strip().lower() for v in headers.getall("Connection", ()) for t in v.split(",") if t.strip()}
    out = filter_headers(headers, drop)
    # Header names are case-insensitive: "connection" and "TE" are as hop-by-hop as "Connection".
    expected = [(k, v) for k, v in headers.items() if k.lower() not in drop and k.lower() not in named]
    assert list(out.items()) == expected
    assert not any(k.lower() in drop or k.lower() in named for k in out)


SEGMENT = st.text(string.ascii_letters + string.digits + "-._~%:@!$&'()*+,;=", min_size=1, max_size=10)
TEMPLATE = "/v1/models/{owner}/{name}/versions/{version}/trainings"


@FUZZ
@given(st.tuples(SEGMENT, SEGMENT, SEGMENT), st.sampled_from(["GET", "POST", "post"]))
def test_route_variables_match_exactly_one_segment(values: tuple[str, str, str], method: str) -> None:
    """Any three segments fill the template; a slash inside one, or an extra segment, never matches."""
    route = RouteConfig(name="create_training", method="POST", path=TEMPLATE)
    table = RouteTable([route, RouteConfig(name="any", path="/v1/{rest}")])
    owner, name, version = values
    path = f"/v1/models/{owner}/{name}/versions/{version}/trainings"
    matched = table.match(method, path)
    assert (matched is route) == (method.upper() == "POST")
    assert table.match("POST", path.replace(f"/{owner}/", f"/{owner}/x/", 1)) is not route
    assert table.match("POST", path + "/") is not route
    assert table.match("POST", path.replace("/v1/", "/v1//", 1)) is not route
