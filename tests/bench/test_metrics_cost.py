"""bench metrics_cost's summary: medians over the rounds, off against on, and the 5 % target."""

from __future__ import annotations

from typing import Any

import pytest

from bench.metrics_cost import summary


def rounds(off: list[tuple[float, float]], on: list[tuple[float, float]]) -> list[dict[str, Any]]:
    """(p50, services' CPU per trade) per round."""
    return [{"metrics": state, "p50_ms": p50, "p99_ms": p50 * 3, "services_cpu_ms_per_trade": cpu}
            for state, rows in (("off", off), ("on", on)) for p50, cpu in rows]


@pytest.mark.parametrize(("off", "on", "p50_pct", "cpu_pct", "ok"), [
    ([(3.0, 3.0)], [(3.0, 3.0)], 0.0, 0.0, True),
    ([(3.0, 3.0), (9.0, 3.1), (3.2, 2.9)], [(3.1, 3.1), (3.3, 3.05), (20.0, 3.0)], 3.1, 1.7, True),  # medians
    ([(3.0, 3.0)], [(3.0, 3.3)], 0.0, 10.0, False),
    ([(3.0, 3.0)], [(3.3, 3.0)], 10.0, 0.0, False),
])
def test_summary(off: list[tuple[float, float]], on: list[tuple[float, float]], p50_pct: float, cpu_pct: float,
                 ok: bool) -> None:
    s = summary(rounds(off, on))
    assert s["p50_ms"]["overhead_pct"] == p50_pct
    assert s["services_cpu_ms_per_trade"]["overhead_pct"] == cpu_pct
    assert s["within_target"] is ok
