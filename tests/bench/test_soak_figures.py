"""``bench soak``'s figures: growth measured over the steady part only, as a slope, and what storage keeps per order."""

from __future__ import annotations

from typing import Any

import pytest

from bench.soak import LEAK_MB_PER_H, LOG_KEPT_MAX_S, growth, logs_held, per_order, slope_per_h, steady


@pytest.mark.parametrize(("points", "slope"), [
    ([], None),
    ([(0.0, 5.0)], None),
    ([(10.0, 1.0), (10.0, 2.0)], None),  # no spread in time: no slope
    ([(0.0, 100.0), (3600.0, 100.0)], 0.0),
    ([(0.0, 100.0), (1800.0, 105.0), (3600.0, 110.0)], 10.0),
    ([(0.0, 0.0), (60.0, -1.0)], -60.0),
    ([(0.0, 0.0), (60.0, 2.0), (120.0, 0.0), (180.0, 2.0)], 24.0),  # least squares, not the end points (40/h)
])
def test_slope_is_least_squares_per_hour(points: list[tuple[float, float]], slope: float | None) -> None:
    got = slope_per_h(points)
    assert got == pytest.approx(slope) if slope is not None else got is None


def _samples(rss: list[float], *, step_s: float = 60.0, posts_per_step: int = 1000,
             redis_mb_per_step: float = 1.0) -> list[dict[str, Any]]:
    return [{"t": i * step_s, "posts": i * posts_per_step, "rss_mb": {"executor": v, "router": 80.0},
             "redis_mb": 10.0 + i * redis_mb_per_step, "postgres_mb": 100.0}
            for i, v in enumerate(rss)]


def test_growth_before_the_steady_part_is_not_a_leak() -> None:
    # climbs 60 MB while the 15-minute windows fill, then flat
    samples = _samples([70.0, 100.0, 130.0, 131.0, 131.0, 130.5, 131.0])
    got = growth(samples, since_s=180.0)
    assert got["executor"]["first_mb"] == 131.0 and got["executor"]["last_mb"] == 131.0
    assert got["executor"]["peak_mb"] == 131.0 and abs(got["executor"]["slope_mb_per_h"]) < 10
    assert got["executor"]["holds"] and got["router"]["holds"]


@pytest.mark.parametrize(("rss", "holds"), [
    ([100.0, 100.2, 100.4, 100.6], False),  # 0.2 MB a minute: 12 MB an hour
    ([100.0, 100.1, 100.2, 100.3], True),  # 6 MB an hour
    ([100.0, 101.0, 102.0, 103.0], False),  # 60 MB/h
    ([240.0, 255.0, 240.0, 240.0], False),  # flat, but over the 250-MB target at its peak
])
def test_a_service_holds_below_the_leak_rate_and_the_rss_target(rss: list[float], holds: bool) -> None:
    assert LEAK_MB_PER_H == 10.0
    assert growth(_samples(rss), since_s=0.0)["executor"]["holds"] is holds


def test_steady_part_needs_three_samples_else_takes_all() -> None:
    samples = _samples([1.0, 2.0, 3.0, 4.0])
    assert steady(samples, since_s=60.0) == samples[1:]
    assert steady(samples, since_s=120.0) == samples  # two late samples are not a steady part
    assert steady(samples, since_s=10_000.0) == samples


def test_storage_kept_per_order_over_the_steady_part() -> None:
    samples = _samples([80.0] * 5, posts_per_step=1000, redis_mb_per_step=0.5)
    # 0.5 MB per 1,000 orders
    assert per_order(samples, 60.0, "redis_mb") == round(0.5 * 2**20 / 1000, 1)
    assert per_order(samples, 60.0, "postgres_mb") == 0.0
    assert per_order(_samples([80.0] * 5, posts_per_step=0), 0.0, "redis_mb") is None


def _log_samples(oldest: list[float], *, readers: int = 2) -> list[dict[str, Any]]:
    return [{"t": i * 60.0, "streams": {"order_events": {"entries": 1000 + i, "oldest_s": v, "readers": readers},
                                       "trigger_events": {"entries": 200, "oldest_s": i * 60.0, "readers": 0}}}
            for i, v in enumerate(oldest)]


@pytest.mark.parametrize(("oldest", "holds"), [
    ([300.0, 900.0, 925.0, 910.0, 930.0], True),  # filled, then trimmed every round
    ([300.0, 900.0, 930.0, 960.0, 990.0], True),  # at the limit
    ([300.0, 900.0, 941.0, 982.0, 1023.0], False),  # trimming falls behind: kept longer every minute
])
def test_a_log_read_by_registered_readers_keeps_its_window_and_no_more(oldest: list[float], holds: bool) -> None:
    assert LOG_KEPT_MAX_S == 1000.0
    got = logs_held(_log_samples(oldest), since_s=60.0)
    assert got["order_events"]["holds"] is holds and got["order_events"]["trimmed_by_age"]
    assert got["order_events"]["oldest_s_max"] == max(oldest[1:]) and got["order_events"]["entries_last"] == 1004
    assert got["trigger_events"] == {"oldest_s_max": 240.0, "entries_last": 200, "entries_max": 200,
                                     "trimmed_by_age": False, "holds": True}  # no readers: capped by length only
