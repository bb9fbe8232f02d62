"""Guard's stats log names the stages of its median fire and of its p99 one (by the stages' sum)."""

from __future__ import annotations

import pytest

from services.guard.fire_bookkeeping import FireStats


def test_no_fire_no_stages() -> None:
    summary = FireStats().summary()
    assert "median_fire_ms" not in summary and "p99_fire_ms" not in summary


@pytest.mark.parametrize(("n", "median_reads", "p99_reads"), [(1, 0.0, 0.0), (2, 1.0, 1.0), (100, 50.0, 98.0),
                                                               (101, 50.0, 99.0), (1000, 500.0, 989.0)])
def test_the_median_and_p99_fires_by_their_stages_sum(n: int, median_reads: float, p99_reads: float) -> None:
    stats = FireStats()
    for i in reversed(range(n)):  # in any order
        stats.stages_ms.append((0.1, float(i), 1.0, 2.0))
        stats.before_ms.append((float(i), 0.5))
    summary = stats.summary()
    assert summary["median_fire_ms"] == {"slot": 0.1, "reads": median_reads, "commit": 1.0, "submit": 2.0}
    assert summary["p99_fire_ms"]["reads"] == p99_reads
    assert summary["p99_before_fire_ms"] == {"ingest_to_tick_handled": p99_reads, "handled_to_fire_task": 0.5}
