"""Smoke run of ``bench pipeline``: the harness drives the real stack and joins its logs (no timing asserts)."""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest

from bench._pipeline_ceiling import scenario_g
from bench._pipeline_harness import MILESTONES, STAGES, Bench
from bench._pipeline_stall import scenario_f
from bench.pipeline import fanout_target_ms, scenario_a, scenario_b, start_pipeline
from bench.soak import soak

pytestmark = pytest.mark.integration


def test_pipeline_bench_measures_every_post_of_a_tiny_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TT_BENCH_FLOOR", "0")  # (a)'s copy floor: a third of the run, smoked in test_copy_floor_smoke
    with tempfile.TemporaryDirectory(prefix="tt-bench-smoke-") as tmp:
        p = start_pipeline(Path(tmp) / "run")
        try:
            b = Bench(p)
            a = scenario_a(b, 20.0, 1.0, 0.5)
            fan = scenario_b(b, 5, 2)
            p.sim.call(p.sim.sim.rtds.stall)  # RTDS silent: (b)'s trades come by the data-api poller alone
            unheard = scenario_b(b, 3, 1)
            p.sim.call(p.sim.sim.rtds.resume)
            stall = scenario_f(b, rate=10.0, leaders=2, followers=2, duration_s=3.0, stall_at_s=1.0, stall_s=1.0)
            ceiling = scenario_g(b, leaders=2, followers=2, step_s=1.0, rates=(10.0, 20.0), p99_target_ms=10_000.0)
            soaked = soak(b, minutes=0.1, rate=10.0, leaders=2, followers=2, step_s=2.0, window_min=0.05,
                          steady_after_s=0.0)
        finally:
            p.stop(quiet=True)
    assert a["posts"] == a["trades"] == 20
    assert a["latency"]["ingest→POST"]["n"] == 20 and a["latency"]["sim→POST"]["n"] == 20
    assert a["latency"]["ingest→POST"]["p50_ms"] > 0
    # every POST split at the router's decision and the executor's stamps (admitted, POST sent)
    assert {name: s["n"] for name, s in a["stages"].items()} == dict.fromkeys(STAGES, 20)
    assert fan["runs"] == 2 and fan["latency"]["ingest→last POST"]["n"] == 2
    assert [list(marks) for marks in fan["timeline_by_run"]] == [list(MILESTONES)] * 2 and fan["target_last_ms"] == 150
    assert fan["incomplete_runs"] == [] and fan["runs_not_heard_on_rtds"] == []
    # a trade RTDS never delivered is still copied to every follower, and the run says how it came
    assert unheard["incomplete_runs"] == [] and unheard["runs_not_heard_on_rtds"] == [1] and unheard["runs"] == 1
    # the executor stopped for a second: every order still POSTed once, its memory and the drain measured
    assert stall["posts"] == stall["orders_expected"] == 60 and stall["posted_twice"] == 0
    assert stall["executor_rss_mb"]["peak"] >= stall["executor_rss_mb"]["before_stall"] > 0
    assert stall["backlog_drained_s"] is not None and stall["restarts"] == 0
    # the ceiling's steps: every order of each step joined, and the ceiling the last rate of the steps that held from
    # the first (whether a 1-s step held is the machine's load: a growing backlog on a busy machine fails it)
    assert [s["posts"] for s in ceiling["steps"]] == [s["trades"] * 2 for s in ceiling["steps"]]
    assert [s["rate_per_s"] for s in ceiling["steps"]] == [10.0, 20.0]
    held = [s["rate_per_s"] for s in itertools.takewhile(lambda s: s["holds"], ceiling["steps"])]
    assert ceiling["ceiling_trades_per_s"] == (held[-1] if held else 0.0)
    assert all(s["holds"] == (s["posts"] == s["trades"] * 2 and s["latency"]["p99_ms"] <= 10_000.0
                              and not s["backlog_growing"] and s["drained_after_last_trade_ms"] <= 2000.0)
               for s in ceiling["steps"])
    # the soak: every copy once, each service's memory sampled over the run, latency by window
    assert soaked["posts"] == soaked["posts_expected"] == 120 and soaked["posted_twice"] == 0
    assert len(soaked["samples"]) >= 3 and soaked["samples"][-1]["posts"] > soaked["samples"][0]["posts"]
    assert {"ingest", "router", "executor", "guard", "control"} <= set(soaked["rss"])
    assert soaked["logs"]["order_events"]["trimmed_by_age"] and soaked["logs"]["order_events"]["entries_last"] > 0
    assert soaked["armed_triggers"] >= 2 * 4  # each of the 4 followers' positions: a take-profit and a stop-loss
    assert sum(w["n"] for w in soaked["latency_by_window"]) == 120 and len(soaked["latency_by_window"]) >= 2


@pytest.mark.parametrize(("followers", "target_ms"), [(5, 150), (1000, 150), (1001, 1500), (10_000, 1500)])
def test_the_fanout_target_follows_the_issue(followers: int, target_ms: int) -> None:
    assert fanout_target_ms(followers) == target_ms
