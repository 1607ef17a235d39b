"""SettledAnswers: fresh for a while on its own clock, never past a record's expiry, bounded in bytes."""

from __future__ import annotations

from sidecar.providers.settled import SettledAnswers
from sidecar.state import LedgerRecord, RecordState, StoredResponse
from tests.support.fakes import FakeClock


def record(key: str, body: bytes = b"{}", expires_at: float = 1e12) -> LedgerRecord:
    return LedgerRecord(
        provider="jobs", key=key, fingerprint="f", state=RecordState.DONE, owner="pod-a",
        claim_id="c", claimed_at=0.0, sent_at=0.0, expires_at=expires_at,
        response=StoredResponse(201, (), body),
    )


def test_a_record_is_served_while_fresh_then_forgotten() -> None:
    """A record is served for ``fresh`` seconds of the clock, then the store must be asked again."""
    clock = FakeClock()
    answers = SettledAnswers(clock=clock, fresh=10.0)
    answers.put(record("k"))
    clock.advance(9.9)
    assert answers.get("jobs", "k", now_wall=0.0) is not None
    clock.advance(0.1)
    assert answers.get("jobs", "k", now_wall=0.0) is None
    assert len(answers) == 0


def test_never_past_the_records_own_expiry() -> None:
    """A record whose ledger ttl has passed is not served, however fresh the entry is."""
    answers = SettledAnswers(clock=FakeClock(), fresh=10.0)
    answers.put(record("k", expires_at=100.0))
    assert answers.get("jobs", "k", now_wall=99.9) is not None
    assert answers.get("jobs", "k", now_wall=100.0) is None


def test_bodies_are_bounded_oldest_used_first_out() -> None:
    """Over ``max_bytes`` the least recently used go first; a body larger than the bound is not kept."""
    answers = SettledAnswers(clock=FakeClock(), max_bytes=300)
    for key in ("a", "b", "c"):
        answers.put(record(key, b"x" * 100))
    assert answers.get("jobs", "a", now_wall=0.0) is not None  # "a" becomes the most recent
    answers.put(record("d", b"x" * 100))
    assert [k for k in "abcd" if answers.get("jobs", k, now_wall=0.0)] == ["a", "c", "d"]
    answers.put(record("huge", b"x" * 301))
    assert answers.get("jobs", "huge", now_wall=0.0) is None


def test_drop_forgets_at_once() -> None:
    """An operator's release on this sidecar drops the answer before its freshness runs out."""
    answers = SettledAnswers(clock=FakeClock())
    answers.put(record("k"))
    answers.drop("jobs", "k")
    assert answers.get("jobs", "k", now_wall=0.0) is None
