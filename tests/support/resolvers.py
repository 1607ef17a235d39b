"""A DNS resolver for aiohttp that answers from a table: no real lookups in tests."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult

__all__ = ["StaticResolver"]


class StaticResolver(AbstractResolver):
    """Answers from a fixed table instead of DNS."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=ip, port=port,
                          family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                          proto=0, flags=socket.AI_NUMERICHOST)
            for ip in self.table[host]
        ]

    async def close(self) -> None:
        self.closed = True
