"""Smoke run of ``bench hops``: every transport is measured between real processes (no timing asserts);
the chain floors drawn from the samples."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bench import summarize
from bench.hops import (
    CHAIN,
    COPY_CPU_CHAIN,
    GUARD_CHAIN,
    GUARD_REQUIRED_CHAIN,
    TRANSPORTS,
    Cpu,
    chain_draws,
    chains,
    cpu_floor_us,
    floors,
    measure,
)


@pytest.mark.integration
async def test_hops_bench_measures_every_transport_of_both_chains(redis_url: str, db_url: str,
                                                                  tmp_path: Path) -> None:
    cpu: dict[str, dict[str, Cpu]] = {}
    raw = await measure(redis_url, db_url, tmp_path, [0.001], 5, cpu=cpu)

    assert set(cpu["1 ms"]) == set(TRANSPORTS)
    assert all(c.near_us > 0 and c.far_us > 0 for c in cpu["1 ms"].values())  # both ends of every hop, measured
    assert cpu_floor_us(cpu["1 ms"]) > 0
    runs = raw["1 ms"]
    for chain in (CHAIN, GUARD_CHAIN):
        assert all(len(runs[t]) == 5 and min(runs[t]) > 0 for _, t in chain)
    hops = {k: summarize(v) for k, v in runs.items()}
    floor = chains({"1 ms": hops})["1 ms"]
    assert floor["p50_sum_ms"] == pytest.approx(sum(hops[t]["p50_ms"] for _, t in CHAIN), abs=1e-3)
    drawn = floors(raw, GUARD_CHAIN, random.Random(1))["1 ms"]
    assert sum(min(runs[t]) for _, t in GUARD_CHAIN) <= drawn["drawn_p50_ms"] <= drawn["p99_sum_ms"] + 1e-3


@pytest.mark.parametrize(("samples", "expected"), [
    ({"a": [1.0], "b": [2.0]}, {3.0}),  # one sample each: one total
    ({"a": [1.0, 2.0], "b": [10.0]}, {11.0, 12.0}),
    ({"a": [0.5, 1.5], "b": [1.0, 3.0]}, {1.5, 3.5, 2.5, 4.5}),
])
def test_chain_draws_add_one_sample_of_every_hop(samples: dict[str, list[float]], expected: set[float]) -> None:
    chain = [(f"hop {t}", t) for t in samples]
    totals = chain_draws(samples, chain, random.Random(3), draws=2000)

    assert len(totals) == 2000
    assert set(totals) == expected  # every combination turns up in 2,000 draws, and nothing else


def test_a_hop_repeated_in_the_chain_is_drawn_once_per_use() -> None:
    totals = chain_draws({"r": [1.0, 2.0]}, [("first", "r"), ("second", "r")], random.Random(0), draws=1000)

    assert set(totals) == {2.0, 3.0, 4.0}


def test_a_hop_without_samples_is_refused() -> None:
    with pytest.raises(ValueError, match="needs samples"):
        chain_draws({"a": [1.0], "b": []}, [("a", "a"), ("b", "b")], random.Random(0))


@pytest.mark.integration
async def test_hops_bench_measures_only_the_transports_asked_for(redis_url: str, db_url: str,
                                                                 tmp_path: Path) -> None:
    raw = await measure(redis_url, db_url, tmp_path, [0.001], 3, only={"redis_rtt", "pg_rtt"})

    assert set(raw["1 ms"]) == {"redis_rtt", "pg_rtt"}


def test_the_required_guard_chain_keeps_the_contracts_hops_in_order() -> None:
    assert [label for label, _ in GUARD_REQUIRED_CHAIN] == [
        "ingest → guard (tick log append + read)", "guard → executor (SubmitOrder request)",
        "executor: intent INSERT + commit", "executor → Insiders API (POST)"]
    assert set(GUARD_REQUIRED_CHAIN) < set(GUARD_CHAIN)


@pytest.mark.parametrize(("side", "expected"), [("near", 1.0), ("far", 10.0), ("both", 11.0)])
def test_the_cpu_floor_counts_the_side_of_each_hop_it_names(side: str, expected: float) -> None:
    cpu = {"t": Cpu(1.0, 10.0)}

    assert cpu_floor_us(cpu, [("a hop", "t", side)]) == expected
    assert cpu_floor_us(cpu, [("a hop", "t", side), ("again", "t", side)]) == 2 * expected


def test_the_copy_cpu_chain_counts_our_side_of_every_hop_of_the_copy_chain() -> None:
    assert {t for _label, t in CHAIN} <= {t for _label, t, _side in COPY_CPU_CHAIN}
    assert {side for _label, _t, side in COPY_CPU_CHAIN} <= {"near", "far", "both"}
    # the venue's send and the Insiders API's receipt are not ours; the router reads Redis beside PostgreSQL
    assert [side for label, _t, side in COPY_CPU_CHAIN if "Insiders API" in label or "RTDS" in label] == [
        "far", "near", "far"]
    assert sum(1 for _label, t, _side in COPY_CPU_CHAIN if t == "redis_rtt") == 4
