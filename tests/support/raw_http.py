"""HTTP as raw bytes on a socket: for requests a client library would refuse or normalise."""

from __future__ import annotations

import asyncio

__all__ = ["raw_get", "raw_http"]


async def raw_http(port: int, data: bytes, wait: float = 5.0) -> bytes:
    """Send bytes as they are (no client normalisation) and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()


async def raw_get(port: int, target: str) -> tuple[int, bytes]:
    """GET an exact request target; returns (status, body)."""
    data = await raw_http(
        port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
