"""The ledger's pure decisions: fingerprints, Idempotency-Key checks, statuses, repeats, staleness."""

from __future__ import annotations

import hashlib
import re
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.state import (
    Fingerprinter,
    InvalidIdempotencyKey,
    LedgerRecord,
    Outcome,
    RecordState,
    Repeat,
    StoredResponse,
    classify_repeat,
    fingerprint,
    in_flight_is_stale,
    settle,
    validate_idempotency_key,
    window_scope,
)
from sidecar.state.ledger import fingerprint_prefix


def test_fingerprint_is_sha256_of_the_documented_encoding() -> None:
    """The digest is SHA-256 over tag, length-prefixed method/path/query, then the body."""
    def field(b: bytes) -> bytes:
        return struct.pack(">Q", len(b)) + b

    canonical = (b"sidecar-ledger-fingerprint/1\n" + field(b"POST") + field(b"/v1/predictions")
                 + field(b"a=1&b=%2F") + b'{"input": {}}')
    assert fingerprint("post", "/v1/predictions", "a=1&b=%2F", b'{"input": {}}') == (
        hashlib.sha256(canonical).hexdigest()
    )


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (("POST", "/a", "b=c", b""), ("POST", "/a?b=c", "", b"")),  # query moved into the path
        (("POST", "/a", "", b"b=c"), ("POST", "/a", "b=c", b"")),  # body moved into the query
        (("POST", "/ab", "", b""), ("POST", "/a", "b", b"")),  # path/query boundary
        (("POS", "T/a", "", b""), ("POST", "/a", "", b"")),  # method/path boundary
        (("POST", "/a", "x", b"\x00"), ("POST", "/a", "x\x00", b"")),  # query/body boundary
        (("POST", "/a%2Fb", "", b""), ("POST", "/a/b", "", b"")),  # no path normalising
        (("POST", "/a", "", b"{}"), ("PUT", "/a", "", b"{}")),
    ],
)
def test_different_splits_of_the_same_bytes_never_collide(
    one: tuple[str, str, str, bytes], two: tuple[str, str, str, bytes]
) -> None:
    """Moving bytes from one field to the next gives a different fingerprint."""
    assert fingerprint(*one) != fingerprint(*two)


@given(
    st.tuples(st.text(max_size=8), st.text(max_size=20), st.text(max_size=20), st.binary(max_size=20)),
    st.tuples(st.text(max_size=8), st.text(max_size=20), st.text(max_size=20), st.binary(max_size=20)),
)
def test_the_canonical_encoding_is_one_to_one(
    one: tuple[str, str, str, bytes], two: tuple[str, str, str, bytes]
) -> None:
    """Two requests have the same canonical bytes only if they are the same request (method case aside)."""
    def encoded(r: tuple[str, str, str, bytes]) -> bytes:
        return fingerprint_prefix(r[0], r[1], r[2]) + r[3]

    same = (one[0].upper(), *one[1:]) == (two[0].upper(), *two[1:])
    assert (encoded(one) == encoded(two)) == same


def test_streamed_and_whole_bodies_hash_alike() -> None:
    """Hashing the body chunk by chunk gives the one-shot fingerprint; lone surrogates don't crash it."""
    hasher = Fingerprinter("POST", "/v1/x\udcff", "q")
    for chunk in (b"ab", b"", b"cd" * 1000):
        hasher.update(chunk)
    assert hasher.hexdigest() == fingerprint("POST", "/v1/x\udcff", "q", b"ab" + b"cd" * 1000)


@pytest.mark.parametrize("key", ["a", " ", "~", "x" * 255, "".join(chr(c) for c in range(0x20, 0x7F))])
def test_printable_ascii_keys_up_to_255_are_valid(key: str) -> None:
    """Every printable ASCII character, from 1 to 255 of them, is a valid Idempotency-Key."""
    assert validate_idempotency_key(key) == key


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("x" * 256, "at most 255 characters, got 256"),
        ("x" * 10_000, "got 10000"),
        ("tab\there", "U+0009"),
        ("nul\x00", "U+0000"),
        ("del\x7f", "U+007F"),
        ("ключ", "U+043A"),
        ("café", "U+00E9"),
    ],
)
def test_other_keys_are_refused_saying_why(key: str, message: str) -> None:
    """Empty, over 255, control characters and non-ASCII raise InvalidIdempotencyKey with the reason."""
    with pytest.raises(InvalidIdempotencyKey, match=re.escape(message)):
        validate_idempotency_key(key)


def test_every_control_character_is_refused() -> None:
    """0x00-0x1F and 0x7F are all refused; InvalidIdempotencyKey is a ValueError."""
    for code in [*range(0x20), 0x7F]:
        with pytest.raises(ValueError):
            validate_idempotency_key(f"k{chr(code)}")


@pytest.mark.parametrize(
    ("status", "sent", "outcome"),
    [
        (200, True, Outcome.DONE), (201, True, Outcome.DONE), (204, True, Outcome.DONE),
        (400, True, Outcome.DONE), (401, True, Outcome.DONE), (404, True, Outcome.DONE),
        (422, True, Outcome.DONE), (499, True, Outcome.DONE),
        (429, True, Outcome.RELEASE), (503, True, Outcome.RELEASE),
        (408, True, Outcome.UNKNOWN), (409, True, Outcome.UNKNOWN), (425, True, Outcome.UNKNOWN),
        (500, True, Outcome.UNKNOWN), (502, True, Outcome.UNKNOWN), (504, True, Outcome.UNKNOWN),
        (599, True, Outcome.UNKNOWN), (302, True, Outcome.UNKNOWN), (100, True, Outcome.UNKNOWN),
        (None, True, Outcome.UNKNOWN), (None, False, Outcome.RELEASE),
    ],
)
def test_what_a_status_means_for_the_claim(status: int | None, sent: bool, outcome: Outcome) -> None:
    """2xx and most 4xx settle; 429/503 free the key; 408/409/425/5xx/none-after-sending are unknown."""
    assert settle(status, request_sent=sent) is outcome


def record(state: RecordState, fp: str = "a" * 64, response: StoredResponse | None = None) -> LedgerRecord:
    return LedgerRecord("replicate", "k", fp, state, "pod-a", "c1", 100.0, None, 200.0, response)


@pytest.mark.parametrize(
    ("held", "fp", "repeat"),
    [
        (record(RecordState.DONE, response=StoredResponse(201, (), b"{}")), "a" * 64, Repeat.REPLAY),
        (record(RecordState.DONE, response=StoredResponse(201, (), b"")), "a" * 64, Repeat.REPLAY),
        (record(RecordState.DONE, response=StoredResponse(200, (), None, True)), "a" * 64,
         Repeat.REPLAY_UNAVAILABLE),
        (record(RecordState.IN_FLIGHT), "a" * 64, Repeat.IN_FLIGHT),
        (record(RecordState.UNKNOWN), "a" * 64, Repeat.UNKNOWN),
        (record(RecordState.DONE, response=StoredResponse(201, (), b"{}")), "b" * 64, Repeat.REUSED),
        (record(RecordState.IN_FLIGHT), "b" * 64, Repeat.REUSED),
    ],
)
def test_what_a_repeat_meets(held: LedgerRecord, fp: str, repeat: Repeat) -> None:
    """Another fingerprint is reuse whatever the state; else the state and the stored body decide."""
    assert classify_repeat(held, fp) is repeat


def test_an_in_flight_record_goes_stale_after_the_longest_request() -> None:
    """Only an in_flight record older than max_in_flight is stale; settled ones never are."""
    held = record(RecordState.IN_FLIGHT)
    assert not in_flight_is_stale(held, 100.0 + 150, max_in_flight=150)
    assert in_flight_is_stale(held, 100.0 + 150.1, max_in_flight=150)
    assert not in_flight_is_stale(record(RecordState.UNKNOWN), 10_000, max_in_flight=150)


def test_keyless_records_live_apart_from_keyed_ones() -> None:
    """The window scope can't be a provider name, so it never meets a client's key."""
    assert window_scope("replicate") == "replicate#window"
