"""Pure rules of guard: state machine, SELL sizing, copy exits, PnL and perf decisions, tick reading."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.executor.domain.position_math import Position, apply_fill
from services.guard.domain import exit_plans, perf_rules, sell_sizing, tick_view
from services.guard.domain.trigger_index import Prices, load
from services.guard.domain.trigger_model import IllegalTransition, Kind, Move, Reason, Source, State, TriggerSpec, apply
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal


@pytest.mark.parametrize(("state", "move", "after"), [
    (State.ARMED, Move.FIRE, State.FIRED),
    (State.ARMED, Move.CANCEL, State.CANCELLED),
    (State.ARMED, Move.FAIL, State.FAILED),
    (State.FIRED, Move.FILL, State.DONE),
    (State.FIRED, Move.FAIL, State.FAILED),
])
def test_legal_transitions(state: State, move: Move, after: State) -> None:
    assert apply(state, move) is after


@pytest.mark.parametrize(("state", "move"), [
    (State.FIRED, Move.FIRE), (State.FIRED, Move.CANCEL), (State.DONE, Move.FAIL), (State.CANCELLED, Move.FIRE),
    (State.FAILED, Move.FILL), (State.ARMED, Move.FILL), (State.DONE, Move.FIRE),
])
def test_illegal_transitions_raise(state: State, move: Move) -> None:
    with pytest.raises(IllegalTransition):
        apply(state, move)


@pytest.mark.parametrize(("size", "fraction", "held", "in_flight", "minimum", "expected", "reason"), [
    ("10", "0", "100", "0", "5", "10", Reason.PRICE_CROSSED),
    ("150", "0", "100", "0", "5", "100", Reason.SIZE_CAPPED_TO_POSITION),
    ("10", "0", "100", "95", "1", "5", Reason.SIZE_CAPPED_TO_POSITION),
    ("0", "1", "33.3312", "0", "5", "33.3312", Reason.PRICE_CROSSED),
    ("0", "0.5", "100", "0", "5", "50", Reason.PRICE_CROSSED),
    ("0", "0.333", "10", "0", "0", "3.33", Reason.PRICE_CROSSED),  # rounded down to 0.01 shares
    ("0", "0.9", "50", "0", "6", "50", Reason.REMAINDER_BELOW_MIN_SOLD_WHOLE),
    ("48", "0", "50", "0", "5", "50", Reason.REMAINDER_BELOW_MIN_SOLD_WHOLE),
    ("0", "0.1", "20", "0", "5", "0", Reason.SIZE_BELOW_MIN_ORDER),
    ("0", "1", "3", "0", "5", "0", Reason.SIZE_BELOW_MIN_ORDER),
    ("0", "1", "0", "0", "5", "0", Reason.NO_POSITION),
    ("0", "0.5", "10", "10", "0", "0", Reason.NO_POSITION),
    ("5", "0", "5", "0", "5", "5", Reason.PRICE_CROSSED),  # exactly the minimum
])
def test_sell_size(size: str, fraction: str, held: str, in_flight: str, minimum: str, expected: str,
                   reason: Reason) -> None:
    out = sell_sizing.sell_size(size=D(size), sell_fraction=D(fraction), held=D(held), in_flight=D(in_flight),
                           min_order_size=D(minimum))
    assert (out.size, out.reason) == (D(expected), reason)


@settings(max_examples=300, deadline=None)
@given(st.decimals(min_value=0, max_value=1000, places=2), st.decimals(min_value=0, max_value=1, places=3),
       st.decimals(min_value=0, max_value=1000, places=4), st.decimals(min_value=0, max_value=500, places=2),
       st.decimals(min_value=0, max_value=10, places=1))
def test_sell_size_never_exceeds_what_is_held_and_never_sends_below_minimum(
        size: Decimal, fraction: Decimal, held: Decimal, in_flight: Decimal, minimum: Decimal) -> None:
    out = sell_sizing.sell_size(size=size, sell_fraction=fraction if size == 0 else D(0), held=held,
                           in_flight=in_flight, min_order_size=minimum)
    assert 0 <= out.size <= max(held - in_flight, D(0))
    if out.sendable:
        assert out.size >= minimum
        remainder = held - in_flight - out.size
        assert remainder == 0 or remainder >= minimum


def test_exit_plan_prices_from_entry_and_skips_unreachable_exits() -> None:
    config = exit_plans.ExitsConfig.from_json({
        "takeProfitPct": "40", "stopLossPct": "25", "trailingStopPct": "10",
        "ladder": [{"gainPct": "20", "sellFraction": "0.5"}, {"gainPct": "50", "sellFraction": "1"},
                   {"gainPct": "300", "sellFraction": "1"}],
    })
    group = exit_plans.group_id("w_1", "123", "co_open")
    out = exit_plans.plan(config, oco_group=group, entry_price=D("0.37"), tick_size=D("0.01"))
    got = {e.name: (e.kind, e.trigger_price, e.trail_pct, e.high_water_mark, e.sell_fraction) for e in out.exits}
    assert got == {
        "take_profit": (Kind.TAKE_PROFIT, D("0.52"), D(0), D(0), D(1)),  # 0.518 rounded up to the tick
        "stop_loss": (Kind.STOP_LOSS, D("0.27"), D(0), D(0), D(1)),  # 0.2775 rounded down
        "trailing_stop": (Kind.TRAILING_STOP, D(0), D("10"), D(0), D(1)),  # the mark starts at the first bid
        "ladder_0": (Kind.TAKE_PROFIT, D("0.45"), D(0), D(0), D("0.5")),  # 0.444 up
        "ladder_1": (Kind.TAKE_PROFIT, D("0.56"), D(0), D(0), D(1)),  # 0.555 up
    }
    assert out.skipped == (("ladder_2", "PRICE_ABOVE_MAX"),)
    again = exit_plans.plan(config, oco_group=group, entry_price=D("0.37"), tick_size=D("0.01"))
    assert [e.id for e in again.exits] == [e.id for e in out.exits]  # deterministic ids


def test_a_copy_trailing_stop_trails_the_bid_from_the_first_one_not_the_entry() -> None:
    """Bought at the ask (0.55) with the book at 0.52 / 0.55: a 5 % trailing stop seeded with the entry would
    fire on the first bid; its mark starts at that bid instead, so it fires only 5 % below the highest bid."""
    plan = exit_plans.plan(exit_plans.ExitsConfig(trailing_stop_pct=D(5)), oco_group="grp", entry_price=D("0.55"),
                           tick_size=D("0.01"))
    (trail,) = plan.exits
    engine = load([TriggerSpec(trail.id, "asset", Kind.TRAILING_STOP, Source.BEST_BID, trail_pct=trail.trail_pct,
                               high_water_mark=trail.high_water_mark, oco_group="grp")])
    fired = [engine.on_tick("asset", Prices(best_bid=D(bid)), stale=False).fired
             for bid in ("0.52", "0.56", "0.54", "0.53")]
    assert [[f.spec.id for f in out] for out in fired] == [[], [], [], [trail.id]]  # 0.53 ≤ 0.56 × 0.95 = 0.532


@pytest.mark.parametrize(("data", "entry", "skipped"), [
    ({"stopLossPct": "100"}, "0.5", (("stop_loss", "PRICE_BELOW_MIN"),)),
    ({"takeProfitPct": "100"}, "0.5", (("take_profit", "PRICE_ABOVE_MAX"),)),
    ({"takeProfitPct": "10"}, "1", (("all", "ENTRY_PRICE_OUT_OF_RANGE"),)),
    ({"ladder": [{"gainPct": "0", "sellFraction": "0.5"}]}, "0.5", (("ladder_0", "GAIN_NOT_POSITIVE"),)),
    ({}, "0.5", ()),
])
def test_exit_plan_skips(data: dict[str, object], entry: str, skipped: tuple[tuple[str, str], ...]) -> None:
    out = exit_plans.plan(exit_plans.ExitsConfig.from_json(data), oco_group="g", entry_price=D(entry),
                          tick_size=D("0.01"))
    assert out.skipped == skipped


@pytest.mark.parametrize(("names", "kept", "skipped"), [
    (frozenset(), ("take_profit", "stop_loss", "ladder_0"), (("ladder_1", "PRICE_ABOVE_MAX"),)),
    (frozenset({"stop_loss"}), ("take_profit", "ladder_0"),
     (("ladder_1", "PRICE_ABOVE_MAX"), ("stop_loss", "CANCELLED_BY_USER"))),
    (frozenset({"take_profit", "stop_loss", "ladder_0"}), (),
     (("ladder_1", "PRICE_ABOVE_MAX"), ("take_profit", "CANCELLED_BY_USER"), ("stop_loss", "CANCELLED_BY_USER"),
      ("ladder_0", "CANCELLED_BY_USER"))),
    (frozenset({"ladder_1", "trailing_stop"}), ("take_profit", "stop_loss", "ladder_0"),  # not planned: no-op
     (("ladder_1", "PRICE_ABOVE_MAX"),)),
])
def test_exit_plan_without_the_exits_a_user_removed(names: frozenset[str], kept: tuple[str, ...],
                                                    skipped: tuple[tuple[str, str], ...]) -> None:
    config = exit_plans.ExitsConfig.from_json({"takeProfitPct": "40", "stopLossPct": "25",
                                          "ladder": [{"gainPct": "20", "sellFraction": "0.5"},
                                                     {"gainPct": "300", "sellFraction": "1"}]})
    full = exit_plans.plan(config, oco_group="g", entry_price=D("0.4"), tick_size=D("0.01"))
    out = exit_plans.without(full, names, "CANCELLED_BY_USER")
    assert tuple(e.name for e in out.exits) == kept and out.skipped == skipped
    assert all(e.id == exit_plans.exit_id("g", e.name) for e in out.exits)


def test_resize_scales_size_based_exits_only() -> None:
    assert exit_plans.resized(D(10), D(100), D(150)) == D(15)
    assert exit_plans.resized(D(0), D(100), D(150)) == D(0)
    assert exit_plans.resized(D(10), D(0), D(150)) == D(10)


def _fill(asset: str, side: str, size: str, price: str, fee: str = "0") -> perf_rules.FillRow:
    return perf_rules.FillRow(asset, side, D(size), D(price), D(size) * D(price), D(fee))


@pytest.mark.parametrize(("fills", "marks", "realized", "unrealized", "unmarked"), [
    ([_fill("a", "BUY", "100", "0.5")], {"a": D("0.6")}, "0", "10", ()),
    ([_fill("a", "BUY", "100", "0.5"), _fill("a", "SELL", "50", "0.7")], {"a": D("0.4")}, "10", "-5", ()),
    ([_fill("a", "BUY", "100", "0.5"), _fill("a", "BUY", "100", "0.3"), _fill("a", "SELL", "200", "0.2")],
     {}, "-40", "0", ()),
    ([_fill("a", "BUY", "10", "0.5"), _fill("b", "BUY", "10", "0.5")], {"a": D("0.1")}, "0", "-4", ("b",)),
    ([_fill("a", "SELL", "10", "0.5")], {}, "0", "0", ()),
    # BUY fees are taken in shares: 98 of 100 are held at a cost of 50, selling them all loses the fee
    ([_fill("a", "BUY", "100", "0.5", "2")], {"a": D("0.5")}, "0", "-1", ()),
    ([_fill("a", "BUY", "100", "0.5", "2"), _fill("a", "SELL", "98", "0.5")], {"a": D("0.5")}, "-1", "0", ()),
    ([_fill("a", "BUY", "100", "0.5", "2"), _fill("a", "SELL", "49", "0.6")], {"a": D("0.5")}, "4.4", "-0.5", ()),
])
def test_pnl(fills: list[perf_rules.FillRow], marks: dict[str, Decimal], realized: str, unrealized: str,
             unmarked: tuple[str, ...]) -> None:
    out = perf_rules.pnl(fills, marks)
    assert (out.realized, out.unrealized, out.unmarked) == (D(realized), D(unrealized), unmarked)


@pytest.mark.parametrize(("fills", "marks", "shown"), [
    (None, {"a": D("0.6")}, "0"),  # no fills booked
    ([_fill("a", "BUY", "100", "0.5")], {"a": D("0.6")}, "10.000000"),
    ([_fill("a", "BUY", "100", "0.5")], {}, "0.000000"),  # no mark: at cost
    ([_fill("a", "BUY", "100", "0.5"), _fill("a", "SELL", "100", "0.9")], {"a": D("0.1")}, "0.000000"),  # closed
    ([_fill("a", "BUY", "3", "0.5")], {"a": D("0.3333333")}, "-0.500000"),  # 0.9999999 - 1.5, to USDC's unit
    ([_fill("a", "BUY", "7", "0.1234567")], {"a": D("0.2")}, "0.535803"),
])
def test_unrealized_shown_in_stats(fills: list[perf_rules.FillRow] | None, marks: dict[str, Decimal],
                                   shown: str) -> None:
    book = perf_rules.holdings(fills) if fills is not None else None
    value = perf_rules.unrealized_usd(book, marks)
    assert value == D(shown) and str(value) == shown


_FILLS = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["BUY", "SELL"]),
                            st.integers(1, 500), st.integers(1, 99), st.sampled_from([0, 0, 1, 3, 100])),
                  max_size=30)


@given(_FILLS, st.integers(0, 30))
@settings(max_examples=200, deadline=None)
def test_folding_fills_in_two_reads_equals_folding_them_at_once(raw: list[tuple[str, str, int, int, int]],
                                                                cut: int) -> None:
    # fee in percent of the size: none, usual ones, and one that takes every share
    fills = [_fill(a, side, str(size), f"0.{price:02d}", str(D(size) * fee / 100))
             for a, side, size, price, fee in raw]
    whole = perf_rules.fold(fills)
    assert perf_rules.fold(fills[cut:], perf_rules.fold(fills[:cut])) == whole
    assert perf_rules.open_holdings(whole) == perf_rules.holdings(fills)
    assert all(shares > 0 for shares, _ in perf_rules.holdings(fills).held.values())
    assert all(shares > 0 for shares, _ in whole.assets.values())  # closed assets are not kept


@pytest.mark.parametrize(("fills", "assets", "realized"), [
    # bought at three prices, sold all: no residue of the average cost is left, the asset is gone
    ([_fill("a", "BUY", "3", "0.1"), _fill("a", "BUY", "7", "0.37"), _fill("a", "BUY", "11", "0.73"),
      _fill("a", "SELL", "21", "0.5")], {}, "-0.42"),
    # sold a third, then the rest: the asset is gone once nothing is held
    ([_fill("a", "BUY", "30", "0.4"), _fill("a", "SELL", "10", "0.5"), _fill("a", "SELL", "20", "0.1")],
     {}, "-5"),
    ([_fill("a", "BUY", "30", "0.4"), _fill("a", "SELL", "10", "0.5")], {"a": (D(20), D(8))}, "1"),
    ([_fill("a", "BUY", "10", "0.4"), _fill("a", "SELL", "10", "0.5"), _fill("a", "BUY", "5", "0.2")],
     {"a": (D(5), D(1))}, "1"),  # bought again after closing: a fresh cost basis
    # the fee shares never reach the holding: selling what is held closes the asset
    ([_fill("a", "BUY", "100", "0.5", "2"), _fill("a", "SELL", "98", "0.5")], {}, "-1"),
    ([_fill("a", "BUY", "100", "0.5", "2"), _fill("a", "SELL", "100", "0.5")], {}, "-1"),  # oversold: 98 sold
    ([_fill("a", "BUY", "100", "0.5", "2")], {"a": (D(98), D(50))}, "0"),
    ([_fill("a", "BUY", "10", "0.5", "0.1"), _fill("a", "BUY", "10", "0.3", "0.1")], {"a": (D("19.8"), D(8))}, "0"),
    # a fee that takes every share of an asset not held loses the notional; of one held, adds to its cost
    ([_fill("a", "BUY", "1", "0.5", "1")], {}, "-0.5"),
    ([_fill("a", "BUY", "10", "0.5"), _fill("a", "BUY", "1", "0.5", "1")], {"a": (D(10), D("5.5"))}, "0"),
    # a fee beyond its fill (or booked alone: size 0, no USD) takes shares held, the cost staying; every one of them
    # is a loss of what they cost
    ([_fill("a", "BUY", "40", "0.5"), _fill("a", "BUY", "0.1", "0.5", "0.4")], {"a": (D("39.7"), D("20.05"))}, "0"),
    ([_fill("a", "BUY", "40", "0.5"), _fill("a", "BUY", "0", "0.5", "0.4")], {"a": (D("39.6"), D(20))}, "0"),
    ([_fill("a", "BUY", "40", "0.5"), _fill("a", "BUY", "0", "0.5", "40")], {}, "-20"),
    ([_fill("a", "BUY", "0", "0.5", "0.4")], {}, "0"),  # of an asset not held: nothing
    # a SELL's fee is not in shares, a negative one counts as none
    ([_fill("a", "BUY", "10", "0.5"), _fill("a", "SELL", "10", "0.5", "1")], {}, "0"),
    ([_fill("a", "BUY", "10", "0.5", "-1")], {"a": (D(10), D(5))}, "0"),
])
def test_fold_keeps_open_assets_only(fills: list[perf_rules.FillRow], assets: dict[str, tuple[Decimal, Decimal]],
                                     realized: str) -> None:
    ledger = perf_rules.fold(fills)
    assert ledger.assets == assets and ledger.realized == D(realized)


@pytest.mark.parametrize(("fee", "sell_price"), [("2", "0.5"), ("0.37", "0.61"), ("0", "0.42"), ("5.5", "0.07")])
def test_fold_holds_and_realizes_what_the_executor_books(fee: str, sell_price: str) -> None:
    buy = apply_fill(Position(), buying=True, size=D(100), price=D("0.5"), fee_shares=D(fee), notional=D(50))
    assert perf_rules.fold([_fill("a", "BUY", "100", "0.5", fee)]).assets == {"a": (buy.position.size, D(50))}
    sell = apply_fill(buy.position, buying=False, size=buy.position.size, price=D(sell_price))
    ledger = perf_rules.fold([_fill("a", "BUY", "100", "0.5", fee),
                              _fill("a", "SELL", str(buy.position.size), sell_price)])
    assert ledger.assets == {} and sell.position.size == 0
    assert abs(ledger.realized - sell.realized_pnl_usd) < D("0.0001")


def test_loss_stop_counts_a_loss_made_of_fee_shares() -> None:
    fills = [_fill("a", "BUY", "100", "0.5", "2"), _fill("a", "SELL", "98", "0.5")]
    result = perf_rules.pnl(fills, {"a": D("0.5")})
    assert result.total == D(-1) and not result.held
    decision = perf_rules.decide("sub_1", perf_rules.PerfRules(loss_stop_usd=D(1)), result, pauses_before=0,
                           scaled_ids=frozenset())
    assert decision is not None and decision.action is perf_rules.Action.PAUSE


def _pnl(total: str) -> perf_rules.Pnl:
    return perf_rules.Pnl(D(total), D(0), {})


@pytest.mark.parametrize(("rules", "total", "pauses", "scaled", "action"), [
    (perf_rules.PerfRules(D(400)), "-400", 0, False, perf_rules.Action.PAUSE),
    (perf_rules.PerfRules(D(400)), "-399.99", 0, False, None),
    (perf_rules.PerfRules(D(0), D(1000), D("1.5")), "1000", 0, False, perf_rules.Action.SCALE),
    (perf_rules.PerfRules(D(0), D(1000), D("1.5")), "1000", 0, True, None),
    (perf_rules.PerfRules(D(0), D(1000), D("1.5")), "999", 0, False, None),
    (perf_rules.PerfRules(D(400), D(1000), D("1.5")), "-500", 2, False, perf_rules.Action.PAUSE),
    (perf_rules.PerfRules(), "-10000", 0, False, None),
])
def test_perf_decisions(rules: perf_rules.PerfRules, total: str, pauses: int, scaled: bool,
                        action: perf_rules.Action | None) -> None:
    scale_id = perf_rules.profit_scale_id("sub_1", rules.profit_scale_at_usd, rules.profit_scale_multiplier)
    out = perf_rules.decide("sub_1", rules, _pnl(total), pauses_before=pauses,
                      scaled_ids=frozenset({scale_id}) if scaled else frozenset(),
                      scaled_to=rules.profit_scale_multiplier if scaled else None)
    assert (out.action if out else None) == action
    if out is not None and action is perf_rules.Action.PAUSE:
        assert out.decision_id == perf_rules.loss_stop_id("sub_1", pauses)
        assert out.reason.startswith("LOSS_STOP") and total in out.reason
    if out is not None and action is perf_rules.Action.SCALE:
        assert out.decision_id == scale_id and out.multiplier == D("1.5")


@pytest.mark.parametrize(("resumed_at", "total", "fires"), [
    (None, "-400", True),
    ("-400", "-400", False),  # resumed at the loss that paused it: not paused again by it
    ("-400", "-799.99", False),
    ("-400", "-800", True),
    ("-100", "-500", True),  # recovered while paused: $400 below where it was resumed
    ("-100", "-499.99", False),
    ("50", "-350", True),
])
def test_a_resumed_loss_stop_counts_from_the_pnl_it_was_resumed_at(resumed_at: str | None, total: str,
                                                                   fires: bool) -> None:
    out = perf_rules.decide("sub_1", perf_rules.PerfRules(D(400)), _pnl(total), pauses_before=1, scaled_ids=frozenset(),
                      resumed_at_pnl=D(resumed_at) if resumed_at is not None else None)
    assert (out is not None and out.action is perf_rules.Action.PAUSE) is fires
    if out is not None:
        assert out.decision_id == perf_rules.loss_stop_id("sub_1", 1)


def test_profit_scale_follows_each_multiplier_change_once() -> None:
    """Control sets the multiplier (it does not compound it): a multiplier PATCHed 1.5 → 2 → 1.5 is applied at
    each change, once."""
    scaled: set[str] = set()
    applied: list[str] = []
    scaled_to = None
    for multiplier, expect in (("1.5", True), ("1.5", False), ("2", True), ("2", False), ("1.5", True)):
        rules = perf_rules.PerfRules(D(0), D(1000), D(multiplier))
        out = perf_rules.decide("sub_1", rules, _pnl("1000"), pauses_before=0, scaled_ids=frozenset(scaled),
                          scaled_to=scaled_to)
        assert (out is not None) is expect, multiplier
        if out is not None:
            assert out.decision_id not in scaled
            scaled.add(out.decision_id)
            scaled_to = out.multiplier
            applied.append(multiplier)
    assert applied == ["1.5", "2", "1.5"]
    first = perf_rules.profit_scale_id("sub_1", D(1000), D("1.5"))
    assert first in scaled  # the first scale keeps the id it always had


def test_perf_rules_from_json() -> None:
    rules = perf_rules.PerfRules.from_json({"lossStopUsd": "400", "profitScaleAtUsd": "1000",
                                      "profitScaleMultiplier": "1.5"})
    assert rules == perf_rules.PerfRules(D(400), D(1000), D("1.5")) and rules.active
    assert not perf_rules.PerfRules.from_json({}).active


NOW = 1_700_000_000_000_000_000
MAX_AGE = 2_000_000_000


@pytest.mark.parametrize(("tick", "stale"), [
    (mpb.PriceTick(asset_id="a", best_bid="0.5", received_time_ns=NOW - 1), False),
    (mpb.PriceTick(asset_id="a", best_bid="0.5", received_time_ns=NOW - MAX_AGE), False),
    (mpb.PriceTick(asset_id="a", best_bid="0.5", received_time_ns=NOW - MAX_AGE - 1), True),
    (mpb.PriceTick(asset_id="a", best_bid="0.5", received_time_ns=NOW, stale=True), True),
    (mpb.PriceTick(asset_id="a", best_bid="0.5", received_time_ns=NOW, kind=mpb.TICK_KIND_STALE), True),
    (mpb.PriceTick(asset_id="a", best_bid="0.5"), True),
])
def test_tick_staleness(tick: mpb.PriceTick, stale: bool) -> None:
    assert tick_view.view(tick, NOW, MAX_AGE).stale is stale


@pytest.mark.parametrize("bad", [
    mpb.PriceTick(asset_id="a", best_bid="abc"), mpb.PriceTick(asset_id="a", mid="1.5"),
    mpb.PriceTick(asset_id="a", last_trade_price="-0.1"), mpb.PriceTick(best_bid="0.5"),
])
def test_malformed_ticks_raise(bad: mpb.PriceTick) -> None:
    with pytest.raises(tick_view.BadTick):
        tick_view.view(bad, NOW, MAX_AGE)


def test_tick_prices_and_resolution() -> None:
    out = tick_view.view(mpb.PriceTick(asset_id="a", condition_id="c", best_bid="0.4", best_ask="0.6", mid="0.5",
                                   kind=mpb.TICK_KIND_MARKET_RESOLVED, winning_asset_id="b",
                                   received_time_ns=NOW), NOW, MAX_AGE)
    assert (out.prices.best_bid, out.prices.mid, out.prices.last_trade) == (D("0.4"), D("0.5"), None)
    assert out.resolved and out.winning_asset_id == "b"
