"""Smoke run of ``bench hops``: every transport is measured between real processes (no timing asserts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.hops import CHAIN, chains, measure

pytestmark = pytest.mark.integration


async def test_hops_bench_measures_every_transport_of_the_chain(redis_url: str, db_url: str, tmp_path: Path) -> None:
    results = await measure(redis_url, db_url, tmp_path, [0.001], 5)

    hops = results["1 ms"]
    assert {t for _, t in CHAIN} <= hops.keys()
    assert all(hops[t]["n"] == 5 and hops[t]["p50_ms"] > 0 for _, t in CHAIN)
    floor = chains(results)["1 ms"]
    assert floor["p50_sum_ms"] == pytest.approx(sum(hops[t]["p50_ms"] for _, t in CHAIN), abs=1e-3)
