"""What the state layer raises::

    StoreError                 any failure of a ledger store
     ├── StoreUnavailable      the backend can't be reached or didn't answer in time: the caller
     │                         decides (forward unprotected, or refuse) and may try again later
     └── InvalidName           a provider or key outside 1..255 printable ASCII characters
                               (also a ``ValueError``): refused before it reaches the storage
"""

from __future__ import annotations

__all__ = ["InvalidName", "StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """A ledger store failed an operation."""


class StoreUnavailable(StoreError):
    """The backend could not be reached, or did not answer within the operation timeout."""

    def __init__(self, backend: str, detail: str) -> None:
        super().__init__(f"{backend} ledger unavailable: {detail}")
        self.backend = backend
        self.detail = detail


class InvalidName(StoreError, ValueError):
    """A provider or key that the store refuses to hold."""
