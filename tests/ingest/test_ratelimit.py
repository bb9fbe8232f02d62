"""Token bucket (pure)."""

from __future__ import annotations

import pytest

from services.ingest.ratelimit import TokenBucket


def test_burst_then_rate() -> None:
    b = TokenBucket(rate_per_s=10, burst=3, now_s=0)
    assert [b.reserve(0) for _ in range(3)] == [0, 0, 0]
    assert b.reserve(0) == pytest.approx(0.1)
    assert b.reserve(0) == pytest.approx(0.2)
    assert b.reserve(10) == 0  # refilled (capped at the burst)


def test_pause_after_429_holds_everything() -> None:
    b = TokenBucket(rate_per_s=100, burst=100, now_s=0)
    b.pause(5.0)
    assert b.reserve(1.0) == pytest.approx(4.0)
    assert b.reserve(6.0) == 0


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_rejects_bad_parameters(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0)
