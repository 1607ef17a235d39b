"""Claim ids and the store-side checks every backend shares."""

from __future__ import annotations

import secrets

from .records import check_name

__all__ = ["check_key", "new_claim_id"]


def new_claim_id() -> str:
    """128 random bits: a claim token nobody can guess or repeat by accident."""
    return secrets.token_hex(16)


def check_key(provider: str, key: str) -> tuple[str, str]:
    return check_name("provider", provider), check_name("key", key)
