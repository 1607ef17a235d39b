"""A copy of a streamed response body for the ledger, bounded by ``max_stored_body``.

``feed`` runs on every chunk on its way to the client: it only appends bytes (no I/O, no await), and
once the body passes the limit it lets the copy go and only counts. The store is written after the
response has ended, so the client never waits for the ledger. A body that never ends costs at most
``limit`` bytes.
"""

from __future__ import annotations

from collections.abc import Iterable

from .records import StoredResponse

__all__ = ["BodyCapture"]


class BodyCapture:
    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        self.limit = limit
        self.size = 0  # bytes seen, kept or not
        self.too_large = False
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.too_large:
            return
        if self.size > self.limit:
            self.too_large = True
            self._buffer = bytearray()  # let the partial copy go at once
            return
        self._buffer += chunk

    @property
    def held(self) -> int:
        """Bytes held right now: never more than ``limit``."""
        return len(self._buffer)

    @property
    def body(self) -> bytes | None:
        return None if self.too_large else bytes(self._buffer)

    def response(self, status: int, headers: Iterable[tuple[str, str]]) -> StoredResponse:
        """The answer to store once the body has ended."""
        return StoredResponse(
            status=status, headers=tuple(headers), body=self.body, body_too_large=self.too_large
        )
