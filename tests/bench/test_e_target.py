"""(e)'s verdict: ingest → SELL POST p99 against twice the required hops' drawn p99 at the crossings' spacing; and the
CPU a crossing's fire adds."""

from __future__ import annotations

from typing import Any

import pytest

from bench._pipeline_guard_readings import e_target, fire_cpu_ms


def _floor(p99_100ms: float, p99_5ms: float = 1.0) -> dict[str, Any]:
    return {"5 ms": {"required_chain": {"drawn_p50_ms": 0.5, "drawn_p99_ms": p99_5ms}},
            "100 ms": {"required_chain": {"drawn_p50_ms": 0.6, "drawn_p99_ms": p99_100ms}}}


@pytest.mark.parametrize(("p99_ms", "floor", "met"), [
    (17.7, _floor(16.5), True),  # against the 100 ms floor, not the 5 ms one
    (33.0, _floor(16.5), True),  # exactly twice the floor
    (33.1, _floor(16.5), False),
    (9.0, _floor(4.0, p99_5ms=10.0), False),
])
def test_the_limit_is_twice_the_floor_at_the_crossings_spacing(p99_ms: float, floor: dict[str, Any],
                                                               met: bool) -> None:
    target = e_target(p99_ms, floor)
    assert target is not None
    assert target["met"] is met
    assert target["limit_p99_ms"] == round(2 * floor["100 ms"]["required_chain"]["drawn_p99_ms"], 3)
    assert target["spacing"] == "100 ms"


@pytest.mark.parametrize(("p99_ms", "floor"), [
    (10.0, None),  # the floor was skipped (TT_BENCH_FLOOR=0) or failed
    (10.0, {"5 ms": {"required_chain": {"drawn_p50_ms": 0.5, "drawn_p99_ms": 1.0}}}),
    (10.0, {"100 ms": {"required_chain": None}}),
    (float("nan"), _floor(16.5)),  # no SELL measured
])
def test_no_verdict_without_a_floor_or_a_measurement(p99_ms: float, floor: dict[str, Any] | None) -> None:
    assert e_target(p99_ms, floor) is None


@pytest.mark.parametrize(("window", "alone", "ticks", "fires", "expected"), [
    # 10 µs a tick more in the window than alone, over 500,000 ticks and 500 fires: 10 ms a fire
    ({"guard": 13.0, "bench+sim": 12.0}, {"guard": 3.0, "bench+sim": 11.0}, 500_000, 500,
     {"guard": 10.0, "bench+sim": 1.0, "total": 10.0}),
    ({"guard": 2.0}, {"guard": 3.0}, 500_000, 500, {"guard": 0.0, "total": 0.0}),  # noise below the ticks' own
    ({"guard": 13.0}, {}, 1000, 0, {}),  # nothing fired: nothing to divide
])
def test_fire_cpu_is_the_windows_excess_over_the_ticks_alone_per_fire(
        window: dict[str, float], alone: dict[str, float], ticks: int, fires: int, expected: dict[str, float]) -> None:
    assert fire_cpu_ms(window, alone, ticks, fires) == expected
