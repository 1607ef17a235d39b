"""An upstream that streams N bytes of zeros, for the sidecar's memory-under-streaming figure.

nginx would need the 1 GiB on disk; this sends one preallocated chunk over and over, so the bytes
are cheap and the figure measures the proxy, not the upstream.

    python -m bench.zeros_upstream --port 8000
    # GET /zeros?size=1073741824 streams that many zeros; any other path answers the small JSON
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

from bench.configs import SMALL_BODY

CHUNK = b"\0" * (256 * 1024)


async def zeros(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", "0"))
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = size
    await response.prepare(request)
    full, rest = divmod(size, len(CHUNK))
    for _ in range(full):
        await response.write(CHUNK)
    await response.write(CHUNK[:rest])
    await response.write_eof()
    return response


async def small(request: web.Request) -> web.Response:
    return web.Response(text=SMALL_BODY, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/zeros", zeros)
    app.router.add_route("*", "/{tail:.*}", small)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
