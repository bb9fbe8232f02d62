"""Smoke run of ``bench pipeline``: the harness drives the real stack and joins its logs (no timing asserts)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench.pipeline import Bench, scenario_a, scenario_b, start_pipeline

pytestmark = pytest.mark.integration


def test_pipeline_bench_measures_every_post_of_a_tiny_run() -> None:
    with tempfile.TemporaryDirectory(prefix="tt-bench-smoke-") as tmp:
        p = start_pipeline(Path(tmp) / "run")
        try:
            b = Bench(p)
            a = scenario_a(b, 20.0, 1.0, 0.5)
            fan = scenario_b(b, 5, 2)
        finally:
            p.stop(quiet=True)
    assert a["posts"] == a["trades"] == 20
    assert a["latency"]["ingest→POST"]["n"] == 20 and a["latency"]["sim→POST"]["n"] == 20
    assert a["latency"]["ingest→POST"]["p50_ms"] > 0
    assert fan["runs"] == 2 and fan["latency"]["ingest→last POST"]["n"] == 2
