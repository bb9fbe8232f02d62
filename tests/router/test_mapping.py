"""Proto ↔ domain: leader trades, subscriptions, RoutedTrade orders and their reservations."""

from __future__ import annotations

from decimal import Decimal

import pytest

from common import reservations
from common.routed import expand
from services.router.domain.decide import route
from services.router.domain.model import OrderIntent, Reason, Side, SizingMode, Skip
from services.router.inbound import TradeError, parse_follower, parse_trade
from services.router.outbound import build_routed, drop_orders, order_template, reservation_lines, reservations_of
from tests.router.factories import ASSET, CONDITION, follower, market, policy
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal


def _event(**kw: object) -> mpb.LeaderTradeEvent:
    base = dict(id="lt_1", tx_hash="0xabc", wallet="0xF5" + "84" * 19, asset_id=ASSET, condition_id="0x" + "AB" * 32,
                side=cpb.SIDE_BUY, price="0.4", size="250", notional_usd="100", outcome="Yes",
                market_slug="will-it-rain", event_slug="weather-2026", activity_type=mpb.ACTIVITY_TYPE_TRADE,
                venue_time_ms=1_790_272_255_000, received_time_ns=1_790_272_256_000_000_000,
                trace=cpb.TraceContext(traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"))
    base.update(kw)
    return mpb.LeaderTradeEvent(**base)  # type: ignore[arg-type]


def test_parse_trade() -> None:
    t = parse_trade(_event())
    assert (t.side, t.price, t.size, t.notional_usd) == (Side.BUY, D("0.4"), D("250"), D("100"))
    assert t.wallet == t.wallet.lower()
    assert parse_trade(_event(notional_usd="")).notional_usd == D("100.0")


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"side": cpb.SIDE_UNSPECIFIED}, "side"), ({"asset_id": ""}, "asset"), ({"price": "abc"}, "price"),
     ({"price": "1.2"}, "price"), ({"price": "0"}, "price"), ({"size": "-1"}, "size"), ({"size": "nan"}, "size"),
     ({"notional_usd": "x"}, "notionalUsd")],
)
def test_parse_trade_rejects(kw: dict[str, object], field: str) -> None:
    with pytest.raises(TradeError, match=field):
        parse_trade(_event(**kw))


def _sub(**kw: object) -> spb.Subscription:
    base = dict(id="sub_1", follower_user_id="u_1", follower_wallet_id="w_1", follower_proxy="0x" + "6A" * 20,
                leader_proxy="0x" + "f5" * 20, state=spb.SUBSCRIPTION_STATE_ACTIVE, mode=cpb.EXECUTION_MODE_PAPER,
                sizing=spb.Sizing(mode=spb.SIZING_MODE_PROPORTIONAL, ratio="0.05", min_order_usd="1",
                                  max_order_usd="250"),
                filters=spb.Filters(min_price="0.05", max_price="0.95", market_denylist=["BTC-UpDown-5m"],
                                    copy_sells=False, max_slippage_bps=150),
                risk=spb.Risk(max_market_exposure_usd="500", max_total_exposure_usd="0", max_open_positions=20,
                              daily_loss_limit_usd="300"),
                perf=spb.Perf(applied_multiplier="1.5"))
    base.update(kw)
    return spb.Subscription(**base)  # type: ignore[arg-type]


def test_parse_follower() -> None:
    f = parse_follower(_sub())
    assert not f.invalid
    assert f.mode == "PAPER" and f.follower_proxy == "0x" + "6a" * 20
    assert (f.sizing.mode, f.sizing.ratio, f.sizing.min_order_usd) == (SizingMode.PROPORTIONAL, D("0.05"), D("1"))
    assert f.filters.denylist == ("btc-updown-5m",) and f.filters.copy_sells is False
    assert f.filters.max_slippage_bps == 150
    assert f.risk.max_total_exposure_usd is None  # "0" = no cap
    assert (f.risk.max_market_exposure_usd, f.risk.max_open_positions) == (D("500"), 20)
    assert f.multiplier == D("1.5")


def test_parse_follower_defaults() -> None:
    f = parse_follower(_sub(filters=spb.Filters(), risk=spb.Risk(), perf=spb.Perf()))
    assert f.filters.copy_sells is True and f.filters.max_slippage_bps is None
    assert f.risk.max_open_positions is None and f.multiplier == D(1)


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"sizing": spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="abc")}, "sizing.fixedUsd"),
     ({"sizing": spb.Sizing()}, "sizing.mode"),
     ({"risk": spb.Risk(max_market_exposure_usd="-5")}, "risk.maxMarketExposureUsd"),
     ({"perf": spb.Perf(applied_multiplier="0")}, "appliedMultiplier"),
     ({"mode": cpb.EXECUTION_MODE_UNSPECIFIED}, "mode"),
     ({"follower_wallet_id": ""}, "followerWalletId"),
     # a corrupt index: a follower id this long made its routed part too large for any gRPC message
     ({"follower_user_id": "u" * 4_000_000}, "followerUserId"),
     ({"id": "s" * 257}, "id"),
     ({"follower_proxy": "0x" + "a" * 300}, "followerProxy")],
)
def test_parse_follower_marks_bad_config_invalid(kw: dict[str, object], field: str) -> None:
    f = parse_follower(_sub(**kw))
    assert field in f.invalid
    assert max(len(f.subscription_id), len(f.follower_user_id), len(f.follower_proxy)) <= 256  # its skip stays small


FIXED = spb.SIZING_MODE_FIXED_USD
# Subscriptions that, routed, would raise for the whole trade (decimal overflow, reservation records).
UNROUTABLE: list[tuple[dict[str, object], str]] = [
    ({"follower_wallet_id": "w|1"}, "followerWalletId"),
    ({"follower_wallet_id": "w,1"}, "followerWalletId"),
    ({"follower_wallet_id": "w 1"}, "followerWalletId"),
    ({"follower_wallet_id": "w\t1"}, "followerWalletId"),
    ({"follower_wallet_id": "wallet\u00e9"}, "followerWalletId"),
    ({"sizing": spb.Sizing(mode=FIXED, fixed_usd="1e27")}, "sizing.fixedUsd"),
    ({"sizing": spb.Sizing(mode=FIXED, fixed_usd="1000000000.01")}, "sizing.fixedUsd"),
    ({"sizing": spb.Sizing(mode=FIXED, fixed_usd="25", min_order_usd="1e27")}, "sizing.minOrderUsd"),
    ({"sizing": spb.Sizing(mode=FIXED, fixed_usd="25", max_order_usd="1e27")}, "sizing.maxOrderUsd"),
    ({"filters": spb.Filters(min_leader_trade_usd="1e27")}, "filters.minLeaderTradeUsd"),
    ({"risk": spb.Risk(max_market_exposure_usd="1e27")}, "risk.maxMarketExposureUsd"),
    ({"risk": spb.Risk(max_total_exposure_usd="1e27")}, "risk.maxTotalExposureUsd"),
    ({"risk": spb.Risk(daily_loss_limit_usd="1e27")}, "risk.dailyLossLimitUsd"),
]


@pytest.mark.parametrize(("kw", "field"), UNROUTABLE)
def test_one_unroutable_subscription_is_a_skip_and_the_others_are_routed(kw: dict[str, object], field: str) -> None:
    bad = parse_follower(_sub(id="sub_bad", **kw))
    assert field in bad.invalid
    good = parse_follower(_sub(id="sub_ok", follower_wallet_id="w_2"))
    ev = _event()
    ds = route(parse_trade(ev), [bad, good], market(), {}, None, policy(now_ms=ev.venue_time_ms + 1000))
    routed = build_routed(ev, ds, {f.subscription_id: f for f in (bad, good)},
                          order_template(ev, market(), 1, cpb.TraceContext()))
    lines = reservation_lines(routed)  # what the router hands the emit script: must not raise
    assert [(o.subscription_id, o.amount_usd) for o in routed.orders] == [("sub_ok", "7.5")]
    assert [(k.subscription_id, k.reason) for k in routed.skips] == [("sub_bad", "INVALID_SUBSCRIPTION")]
    assert "\tw_2\t" in lines


@pytest.mark.parametrize("kw", [
    {"follower_wallet_id": "Wallet-1.a:B_9"},
    {"sizing": spb.Sizing(mode=FIXED, fixed_usd="1000000000", max_order_usd="1000000000")},
    {"risk": spb.Risk(max_total_exposure_usd="1000000000", daily_loss_limit_usd="1000000000")},
])
def test_wallet_ids_and_usd_amounts_control_accepts_are_valid(kw: dict[str, object]) -> None:
    assert not parse_follower(_sub(**kw)).invalid


def test_build_routed_fills_every_order_field() -> None:
    ev = _event()
    fs = {"sub_1": follower("sub_1", "w_1", mode="PAPER"), "sub_2": follower("sub_2", "w_2")}
    decisions = [OrderIntent("sub_1", "w_1", "co_1", Side.BUY, D("25.5"), None, 150),
                 Skip("sub_2", "w_2", Reason.PRICE_ABOVE_MAX, "leader price 0.4 > maxPrice 0.3")]
    trace = cpb.TraceContext(traceparent="00-" + "1" * 32 + "-" + "3" * 16 + "-01")
    routed = build_routed(ev, decisions, fs, order_template(ev, market(neg_risk=True), 123, trace))
    assert routed.trade == ev
    [own] = routed.orders  # the follower's own fields; the rest once, in common
    assert own == epb.Order(client_order_id="co_1", subscription_id="sub_1", follower_user_id="u_w_1",
                            follower_wallet_id="w_1", follower_proxy="0x" + "6a" * 20, amount_usd="25.5",
                            max_slippage_bps=150, mode=cpb.EXECUTION_MODE_PAPER)
    [o] = expand(routed).orders
    assert o == epb.Order(
        client_order_id="co_1", origin=epb.ORDER_ORIGIN_COPY, subscription_id="sub_1", follower_user_id="u_w_1",
        follower_wallet_id="w_1", follower_proxy="0x" + "6a" * 20, asset_id=ASSET, condition_id=CONDITION,
        outcome="Yes", side=cpb.SIDE_BUY, order_type=epb.ORDER_TYPE_FAK, amount_usd="25.5", size="",
        limit_price="", reference_price="0.4", max_slippage_bps=150, tick_size="0.01", min_order_size="5",
        neg_risk=True, mode=cpb.EXECUTION_MODE_PAPER, leader_trade_id="lt_1", leader_tx_hash="0xabc",
        leader_venue_time_ms=ev.venue_time_ms, received_time_ns=ev.received_time_ns, routed_time_ns=123,
        trace=trace)
    [s] = routed.skips
    assert (s.subscription_id, s.follower_wallet_id, s.reason) == ("sub_2", "w_2", "PRICE_ABOVE_MAX")


def test_reservations_and_drop_orders() -> None:
    ev = _event(side=cpb.SIDE_SELL)
    fs = {"sub_1": follower("sub_1", "w_1"), "sub_2": follower("sub_2", "w_2")}
    decisions = [OrderIntent("sub_1", "w_1", "co_1", Side.SELL, None, D("12.34"), 200),
                 OrderIntent("sub_2", "w_2", "co_2", Side.SELL, None, D("5"), 200),
                 OrderIntent("sub_3", "w_3", "co_3", Side.SELL, None, None, 200, sell_fraction=D("0.25"))]
    fs["sub_3"] = follower("sub_3", "w_3")
    routed = build_routed(ev, decisions, fs, order_template(ev, market(), 1, cpb.TraceContext()))
    assert [(o.size, o.sell_fraction) for o in routed.orders] == [("12.34", ""), ("5", ""), ("", "0.25")]
    items = reservations_of(routed)
    assert [(r.kind, r.key, r.micro, r.owner) for r in items] == [
        (reservations.SHARES, ASSET, 12_340_000, "lt_1"), (reservations.SHARES, ASSET, 5_000_000, "lt_1"),
        (reservations.SHARES, ASSET, 0, "lt_1")]  # sized by the executor later: nothing reserved now
    buy = build_routed(_event(), [OrderIntent("sub_1", "w_1", "co_1", Side.BUY, D("25.01"), None, 200)], fs,
                       order_template(_event(), market(), 1, cpb.TraceContext()))
    [r] = reservations_of(buy)
    assert (r.kind, r.key, r.micro) == (reservations.USD, CONDITION, 25_010_000)
    assert reservation_lines(routed) == reservations.lines(items)
    assert reservation_lines(buy) == reservations.lines([r])
    assert reservation_lines(build_routed(_event(), [], fs, order_template(_event(), market(), 1,
                                                                             cpb.TraceContext()))) == ""
    dropped = drop_orders(routed, [0], "already claimed")
    assert [o.client_order_id for o in dropped.orders] == ["co_2", "co_3"]
    assert [s.reason for s in dropped.skips] == ["DUPLICATE_ORDER"]
    assert dropped.common == routed.common and routed.common.asset_id == ASSET
    whole = epb.RoutedTrade()
    whole.CopyFrom(routed)
    assert reservations_of(expand(whole)) == items  # an entry with whole orders (written before common) alike
