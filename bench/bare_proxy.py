"""The floor our stack allows: an aiohttp + uvloop reverse proxy that does nothing but forward.

Method, raw path and query, headers and body go out through one pooled ClientSession; status,
headers and body come back streamed. No breaker, retry, metrics or logging: whatever the sidecar
costs above this is the price of its features, and whatever this costs above HAProxy is the price
of Python.

    python -m bench.bare_proxy --port 8081 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Mapping

import uvloop
from aiohttp import ClientSession, TCPConnector, web
from multidict import CIMultiDict
from yarl import URL

# RFC 9110 §7.6.1, plus Host (the session sets the upstream's) and the framing headers, which
# aiohttp recomputes for the body it actually sends.
_DROP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def _forwardable(headers: Mapping[str, str]) -> CIMultiDict[str]:
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        if name.lower() not in _DROP:
            out.add(name, value)
    return out


async def forward(request: web.Request) -> web.StreamResponse:
    """Send the request upstream as is and stream the answer back."""
    url = URL(request.app[UPSTREAM] + request.raw_path, encoded=True)
    body = request.content if request.body_exists else None
    headers = _forwardable(request.headers)
    if body is not None:
        headers.popall("Content-Length", None)  # aiohttp streams the body chunked
    async with request.app[SESSION].request(
        request.method, url, headers=headers, data=body, allow_redirects=False
    ) as upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.update(_forwardable(upstream.headers))
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = TCPConnector(limit=0, keepalive_timeout=60)
    async with ClientSession(connector=connector, auto_decompress=False) as session:
        app[SESSION] = session
        yield


def create_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(host: str, port: int, upstream: str) -> None:
    runner = web.AppRunner(create_app(upstream), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=4096).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
