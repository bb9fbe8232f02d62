"""Guard's per-tick path in process: which ticks are skipped cheaply, and that skipping changes no outcome."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.guard.coordinator import Guard
from services.guard.domain import tick_view
from services.guard.domain.trigger_model import Kind, TriggerSpec
from tests.guard.inprocess import NOW_NS, FakeStore, in_process_guard, price_tick
from tradingtools.market.v1 import market_pb2 as mpb

A = "asset-1"
D = Decimal


def _guard(specs: list[TriggerSpec]) -> tuple[Guard, FakeStore]:
    return in_process_guard(specs)


def _tick(bid: str, *, age_s: float = 0.0, asset: str = A) -> mpb.PriceTick:
    return price_tick(bid, asset, age_s=age_s)


async def test_a_stale_tick_inside_the_band_of_a_held_asset_is_skipped_and_a_fresh_one_releases() -> None:
    guard, store = _guard([TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.40")),
                           TriggerSpec("t", A, Kind.TAKE_PROFIT, trigger_price=D("0.80"))])
    await guard.on_tick(_tick("0.50"))
    held = await guard.on_tick(_tick("0.35", age_s=5))  # crosses the stop-loss on a stale price: held
    assert [h.spec.id for h in held.held] == ["s"]
    for bid in ("0.45", "0.60", "0.46"):
        tick_view.view(_tick(bid), NOW_NS, 10**9)  # the quiet check only trusts prices parsed once already
    quiet_before = guard.stats.quiet_ticks
    for bid in ("0.45", "0.60", "0.46"):  # stale, inside (0.40, 0.80): nothing to do, skipped
        out = await guard.on_tick(_tick(bid, age_s=5))
        assert not out
    assert guard.stats.quiet_ticks == quiet_before + 3
    assert guard.engine.holds(A)
    released = await guard.on_tick(_tick("0.45"))  # fresh, inside the band: releases the held stop-loss
    assert [s.id for s in released.released] == ["s"]
    assert not guard.engine.holds(A)
    await guard.drain()
    assert store.holds == [(["s"], True), (["s"], False)]


async def test_a_stale_tick_crossing_another_trigger_of_a_held_asset_holds_it() -> None:
    guard, store = _guard([TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.40")),
                           TriggerSpec("s2", A, Kind.STOP_LOSS, trigger_price=D("0.30"))])
    await guard.on_tick(_tick("0.50"))
    await guard.on_tick(_tick("0.35", age_s=5))
    out = await guard.on_tick(_tick("0.25", age_s=5))
    assert [h.spec.id for h in out.held] == ["s2"]
    guard.firer.fire = _no_fire  # type: ignore[method-assign,assignment]
    fired = await guard.on_tick(_tick("0.20"))
    assert sorted(f.spec.id for f in fired.fired) == ["s", "s2"]
    await guard.drain()
    assert store.holds == [(["s"], True), (["s2"], True)]


async def _no_fire(*_a: Any, **_k: Any) -> None:
    return None


async def test_a_stale_tick_within_the_stale_prices_already_seen_is_skipped() -> None:
    guard, store = _guard([TriggerSpec("s", A, Kind.STOP_LOSS, trigger_price=D("0.40")),
                           TriggerSpec("s2", A, Kind.STOP_LOSS, trigger_price=D("0.30")),
                           TriggerSpec("t", A, Kind.TAKE_PROFIT, trigger_price=D("0.80"))])
    for bid in ("0.50", "0.35", "0.36", "0.38", "0.31", "0.29"):
        tick_view.view(_tick(bid), NOW_NS, 10**9)
    await guard.on_tick(_tick("0.50"))
    await guard.on_tick(_tick("0.35", age_s=5))  # holds s; stale prices seen: [0.35, 0.35]
    await guard.on_tick(_tick("0.38", age_s=5))  # below the band, not seen yet: evaluated
    quiet = guard.stats.quiet_ticks
    out = await guard.on_tick(_tick("0.36", age_s=5))  # within [0.35, 0.38]: nothing new can be held
    assert not out and guard.stats.quiet_ticks == quiet + 1
    out = await guard.on_tick(_tick("0.29", age_s=5))  # beyond: evaluated, s2 held
    assert [h.spec.id for h in out.held] == ["s2"] and guard.stats.quiet_ticks == quiet + 1
    await guard.drain()
    assert store.holds == [(["s"], True), (["s2"], True)]
