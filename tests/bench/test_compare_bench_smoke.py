"""Smoke run of ``bench compare``: every side of every comparison runs in its own process against real
Redis and the real Insiders fake and reports its metrics (no timing asserts)."""

from __future__ import annotations

import pytest

from bench.compare import COMPONENTS, compare


@pytest.mark.integration
@pytest.mark.parametrize("component", COMPONENTS)
def test_every_side_of_the_comparison_reports_every_metric(component: str) -> None:
    result = compare(component, 1, {"ops": 30, "bursts": 1, "quick": True})

    sides = result["sides"]
    assert len(sides) >= 2
    metrics = set(result["rounds"][sides[0]])
    assert metrics and all(set(result["rounds"][s]) == metrics for s in sides)
    assert all(len(v) == 1 and v[0] >= 0 for s in sides for v in result["rounds"][s].values())
    if component == "tickwire":
        assert result["rounds"]["tickwire"]["tick.equal"] == [1.0]  # the same bytes both ways
