"""Circuit breaker state machine (time passed in)."""

from __future__ import annotations

import pytest

from services.executor.domain.breaker import (
    Admission,
    Breaker,
    BreakerConfig,
    BreakerState,
    abandon_probe,
    admit,
    record_failure,
    record_success,
)

CFG = BreakerConfig(threshold=5, open_ms=60_000)
C, OPEN, H = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def test_five_consecutive_failures_open_it() -> None:
    b = Breaker()
    for i in range(4):
        b = record_failure(b, 1000 + i, CFG)
        assert b.state is C and b.failures == i + 1
    b = record_failure(b, 2000, CFG)
    assert (b.state, b.opened_at_ms) == (OPEN, 2000)


def test_a_success_resets_the_count() -> None:
    b = Breaker()
    for _ in range(4):
        b = record_failure(b, 0, CFG)
    b = record_success(b, 0, CFG)
    assert b == Breaker()
    for _ in range(4):
        b = record_failure(b, 0, CFG)
    assert b.state is C


@pytest.mark.parametrize(("breaker", "now", "admission", "after"), [
    (Breaker(), 0, Admission(True), Breaker()),
    (Breaker(OPEN, 5, 1000), 1000 + 59_999, Admission(False), Breaker(OPEN, 5, 1000)),
    (Breaker(OPEN, 5, 1000), 1000 + 60_000, Admission(True, probe=True), Breaker(H, 5, 1000, probe_out=True)),
    (Breaker(H, 5, 1000, probe_out=True), 99_999, Admission(False), Breaker(H, 5, 1000, probe_out=True)),
    (Breaker(H, 5, 1000, probe_out=False), 99_999, Admission(True, probe=True), Breaker(H, 5, 1000, probe_out=True)),
])
def test_admit(breaker: Breaker, now: int, admission: Admission, after: Breaker) -> None:
    assert admit(breaker, now, CFG) == (admission, after)


@pytest.mark.parametrize(("breaker", "failure", "after"), [
    (Breaker(H, 5, 1000, True), False, Breaker()),  # probe succeeded: closed
    (Breaker(H, 5, 1000, True), True, Breaker(OPEN, 6, 70_000)),  # probe failed: open again, new clock
    (Breaker(OPEN, 5, 1000), False, Breaker(OPEN, 5, 1000)),  # late answers while open change nothing
    (Breaker(OPEN, 5, 1000), True, Breaker(OPEN, 5, 1000)),
    (Breaker(C, 2), True, Breaker(C, 3)),
    (Breaker(C, 2), False, Breaker()),
])
def test_record(breaker: Breaker, failure: bool, after: Breaker) -> None:
    now = 70_000
    assert (record_failure(breaker, now, CFG) if failure else record_success(breaker, now, CFG)) == after


def test_full_cycle_with_one_probe() -> None:
    b = Breaker()
    for _ in range(5):
        b = record_failure(b, 0, CFG)
    assert admit(b, 30_000, CFG)[0] == Admission(False)
    first, b = admit(b, 60_000, CFG)
    second, b = admit(b, 60_001, CFG)
    assert first == Admission(True, probe=True) and second == Admission(False)
    b = record_failure(b, 60_010, CFG)
    assert admit(b, 60_010 + 59_999, CFG)[0] == Admission(False)
    probe, b = admit(b, 60_010 + 60_000, CFG)
    assert probe.probe
    b = record_success(b, 120_100, CFG)
    assert admit(b, 120_101, CFG) == (Admission(True), Breaker())


def test_abandoned_probe_lets_the_next_call_probe() -> None:
    _, b = admit(Breaker(OPEN, 5, 0), 60_000, CFG)
    b = abandon_probe(b)
    assert admit(b, 60_001, CFG)[0] == Admission(True, probe=True)
    assert abandon_probe(Breaker()) == Breaker()


@pytest.mark.parametrize("breaker", [Breaker(), Breaker(OPEN, 7, 123), Breaker(H, 5, 9, True)])
def test_hash_round_trip(breaker: Breaker) -> None:
    assert Breaker.from_hash(breaker.to_hash()) == breaker


def test_unreadable_hash_is_closed() -> None:
    assert Breaker.from_hash({"state": "WEIRD"}) == Breaker()
