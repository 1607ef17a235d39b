"""Records as Redis hash fields, and the escaping that turns (provider, key) into a Redis key part."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import quote, unquote

from .records import LedgerRecord, RecordState, StoredResponse

__all__ = ["NO_BODY_FIELDS", "as_bytes", "as_text", "decode_record", "encode_claim", "member", "split_member"]

# Everything but the body: what ``list`` reads.
NO_BODY_FIELDS = ("p", "k", "fp", "st", "ow", "id", "ca", "sa", "ea", "rs", "rh", "rl")


def member(provider: str, key: str) -> str:
    """Percent-encode both parts (``/`` included), so the pair is recoverable and never ambiguous."""
    return f"{quote(provider, safe='')}/{quote(key, safe='')}"


def split_member(value: str) -> tuple[str, str]:
    provider, _, key = value.partition("/")
    return unquote(provider), unquote(key)


def encode_claim(record: LedgerRecord) -> list[str]:
    """Field/value pairs of a fresh ``in_flight`` record, flat, for HSET."""
    return [
        "p", record.provider, "k", record.key, "fp", record.fingerprint, "st", record.state.value,
        "ow", record.owner, "id", record.claim_id, "ca", repr(record.claimed_at),
        "ea", repr(record.expires_at),
    ]


def as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def decode_record(fields: Mapping[bytes | str, bytes | str | None], now: float) -> LedgerRecord | None:
    """A record from HGETALL/HMGET fields; None when absent, incomplete or expired at ``now``."""
    text = {as_text(name): as_bytes(value) for name, value in fields.items() if value is not None}
    if "ea" not in text or "st" not in text or float(text["ea"]) <= now:
        return None

    def s(name: str) -> str:
        return text[name].decode()

    response = None
    if "rs" in text:
        response = StoredResponse(
            status=int(text["rs"]),
            headers=tuple((n, v) for n, v in json.loads(text["rh"])),
            body=text.get("rb"),
            body_too_large=text.get("rl") == b"1",
        )
    return LedgerRecord(
        provider=s("p"), key=s("k"), fingerprint=s("fp"), state=RecordState(s("st")), owner=s("ow"),
        claim_id=s("id"), claimed_at=float(text["ca"]),
        sent_at=float(text["sa"]) if "sa" in text else None, expires_at=float(text["ea"]),
        response=response,
    )
