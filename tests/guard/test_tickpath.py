"""Guard's per-tick path in process: which ticks are skipped cheaply, and that skipping changes no outcome."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

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


def _trailing(mark: str) -> list[TriggerSpec]:
    return [TriggerSpec("r", A, Kind.TRAILING_STOP, trail_pct=D("10"), high_water_mark=D(mark))]


def _book_stale_tick(bid: str) -> mpb.PriceTick:
    tick = _tick(bid)
    tick.stale = True  # ingest's book was stale (e.g. out of sync): its price may be gone
    return tick


def _mark(guard: Guard) -> Decimal:
    spec = guard.engine.get("r")
    assert spec is not None
    return spec.high_water_mark


async def test_a_tick_read_too_late_to_fire_on_lifts_the_mark_and_holds_its_crossings() -> None:
    """Ingest forwarded a fresh 0.90 (and narrowed its band by it, common.bands.after_rise); guard read it more than
    tick_max_age_s later: it fires nothing on it but lifts the mark to it, so the band it publishes next is the one
    ingest assumed, and the fall that follows fires at the lifted level."""
    guard, _store = _guard([*_trailing("0.50"), TriggerSpec("t", A, Kind.TAKE_PROFIT, trigger_price=D("0.85"))])
    out = await guard.on_tick(_tick("0.90", age_s=5))
    assert not out.fired and [h.spec.id for h in out.held] == ["t"]
    assert _mark(guard) == D("0.90")
    guard.firer.fire = _no_fire  # type: ignore[method-assign,assignment]
    fired = await guard.on_tick(_tick("0.80"))  # the level is 0.81 now; the held take-profit is released
    assert [f.spec.id for f in fired.fired] == ["r"]
    await guard.drain()


@pytest.mark.parametrize("tick", [_book_stale_tick("0.90"), mpb.PriceTick(asset_id=A, best_bid="0.90")])
async def test_a_tick_from_a_stale_book_or_of_unknown_age_lifts_nothing(tick: mpb.PriceTick) -> None:
    guard, _store = _guard(_trailing("0.50"))
    await guard.on_tick(tick)
    assert _mark(guard) == D("0.50")


async def test_a_late_tick_within_the_stale_prices_seen_is_still_evaluated_when_it_lifts() -> None:
    """Stale prices already seen skip a stale tick only while it would move nothing: an untrusted 0.95 lifted no
    mark, so a late 0.90 inside the range seen still lifts it."""
    guard, _store = _guard(_trailing("0.50"))
    for bid in ("0.30", "0.95", "0.90"):
        tick_view.view(_tick(bid), NOW_NS, 10**9)  # the quiet check only trusts prices parsed once already
    await guard.on_tick(_book_stale_tick("0.30"))  # holds r
    await guard.on_tick(_book_stale_tick("0.95"))
    await guard.on_tick(_tick("0.90", age_s=5))
    assert _mark(guard) == D("0.90")


class _Markets:
    def forget(self, _asset_id: str) -> None:
        return None


@pytest.mark.parametrize("kind", [mpb.TICK_KIND_PRICE_CHANGE, mpb.TICK_KIND_TICK_SIZE_CHANGE, mpb.TICK_KIND_STALE,
                                  mpb.TICK_KIND_BOOK])
async def test_through_ns_follows_every_tick_read_and_never_goes_back(kind: int) -> None:
    """Ingest's gate stamps every tick it logs in increasing order; the bands guard publishes reflect every tick up
    to ``through_ns`` (a tick-size change's prices are evaluated too), so ingest drops what it narrowed for them."""
    guard, _store = _guard(_trailing("0.50"))
    guard.markets = _Markets()  # type: ignore[assignment]
    tick = price_tick("0.55", A, age_s=1, kind=kind)
    await guard.on_tick(tick)
    assert guard.through_ns == tick.received_time_ns
    assert _mark(guard) == (D("0.50") if kind == mpb.TICK_KIND_STALE else D("0.55"))
    await guard.on_tick(price_tick("0.54", A, age_s=1.5))  # logged twice (a write sent again): older
    assert guard.through_ns == tick.received_time_ns


async def test_a_tick_size_change_is_evaluated_like_any_price() -> None:
    """A book snapshot that changes the tick size goes out as TICK_SIZE_CHANGE (ingest's books): its prices may
    cross, and ingest's gate counts them as read once guard's through_ns passes it."""
    guard, _store = _guard([TriggerSpec("t", A, Kind.TAKE_PROFIT, trigger_price=D("0.60"))])
    guard.markets = _Markets()  # type: ignore[assignment]
    guard.firer.fire = _no_fire  # type: ignore[method-assign,assignment]
    out = await guard.on_tick(price_tick("0.61", A, kind=mpb.TICK_KIND_TICK_SIZE_CHANGE))
    assert [f.spec.id for f in out.fired] == ["t"]
    await guard.drain()
