"""One decision per follower: the whole BUY/SELL pipeline, trade-wide gates and the idempotency key."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from common.ids import hash_id
from services.router.domain.decide import client_order_id, client_order_ids, decide, invalid_trade, route
from services.router.domain.model import (
    FilterRules,
    FollowerState,
    OrderIntent,
    Reason,
    RiskRules,
    Side,
    SizingMode,
    SizingRules,
    Skip,
)
from tests.router.factories import ASSET, follower, market, policy, state, trade

D = Decimal
FIXED = SizingMode.FIXED_USD
PROP = SizingMode.PROPORTIONAL


@pytest.mark.parametrize(
    ("sizing", "risk", "st", "expected"),
    [
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(), state(), D("25")),
        (SizingRules(PROP, ratio=D("0.05")), RiskRules(), state(), D("5")),
        # leader notional 1234.567 x 0.05 = 61.72835 -> floored to the cent
        (SizingRules(PROP, ratio=D("0.05")), RiskRules(), state(), None),
        # cut to market headroom 500 - 480 = 20
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(max_market_exposure_usd=D("500")),
         state(market_exposure_usd=D("480")), D("20")),
        (SizingRules(PROP, ratio=D("0.1"), max_order_usd=D("7.5")), RiskRules(), state(), D("7.5")),
        # clamp to [minOrderUsd, maxOrderUsd] first, then to the headroom: $3 left is sent (market minimum $2)
        (SizingRules(FIXED, fixed_usd=D("25"), min_order_usd=D("5")), RiskRules(max_market_exposure_usd=D("500")),
         state(market_exposure_usd=D("497")), D("3")),
        (SizingRules(PROP, ratio=D("0.001"), min_order_usd=D("5")), RiskRules(max_total_exposure_usd=D("100")),
         state(total_exposure_usd=D("96")), D("4")),  # $0.05 raised to $5, cut to $4
    ],
)
def test_buy_amounts(sizing: SizingRules, risk: RiskRules, st: FollowerState, expected: Decimal | None) -> None:
    tr = trade() if expected is not None else trade(notional_usd=D("1234.567"))
    d = decide(tr, follower(sizing=sizing, risk=risk), market(), st, None, policy())
    assert isinstance(d, OrderIntent)
    assert d.side is Side.BUY and d.size is None
    assert d.amount_usd == (expected if expected is not None else D("61.72"))
    assert d.client_order_id == client_order_id(tr.id, "w_1", tr.asset_id)


@pytest.mark.parametrize(
    ("sizing", "risk", "st", "tr", "mkt", "reason"),
    [
        # $1.50 < 5 shares x 0.40 = $2
        (SizingRules(FIXED, fixed_usd=D("1.5")), RiskRules(), state(), trade(), market(), Reason.BELOW_MARKET_MINIMUM),
        # $2.03 < 5 shares at up to 0.40 + 2 % slippage = $2.04 (the 4.97 shares it could buy could never be sold)
        (SizingRules(FIXED, fixed_usd=D("2.03")), RiskRules(), state(), trade(), market(), Reason.BELOW_MARKET_MINIMUM),
        # $0.90 < the $1 marketable BUY minimum
        (SizingRules(FIXED, fixed_usd=D("0.9")), RiskRules(), state(), trade(price=D("0.1")),
         market(min_order_size=D("1")), Reason.BELOW_MARKET_MINIMUM),
        # maxOrderUsd below the market minimum
        (SizingRules(FIXED, fixed_usd=D("25"), max_order_usd=D("1.99")), RiskRules(), state(), trade(), market(),
         Reason.BELOW_MARKET_MINIMUM),
        # headroom $1 left, below the market minimum $2
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(max_total_exposure_usd=D("100")),
         state(total_exposure_usd=D("99")), trade(), market(), Reason.TOTAL_EXPOSURE_LIMIT),
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(daily_loss_limit_usd=D("100")),
         state(realized_pnl_today_usd=D("-100")), trade(), market(), Reason.DAILY_LOSS_LIMIT),
        (SizingRules(FIXED, fixed_usd=D("25")), RiskRules(max_open_positions=1),
         state(open_markets=frozenset({"0xother"})), trade(), market(), Reason.MAX_OPEN_POSITIONS),
        (SizingRules(FIXED), RiskRules(), state(), trade(), market(), Reason.INVALID_SUBSCRIPTION),
    ],
)
def test_buy_skips(sizing, risk, st, tr, mkt, reason) -> None:  # type: ignore[no-untyped-def]
    d = decide(tr, follower(sizing=sizing, risk=risk), mkt, st, None, policy())
    assert isinstance(d, Skip)
    assert d.reason is reason and d.detail and d.subscription_id == "sub_1" and d.follower_wallet_id == "w_1"


def test_a_trade_without_condition_id_counts_open_positions_under_its_asset() -> None:
    """Positions of a trade that came without a condition id are keyed by the asset: adding to one needs no
    new maxOpenPositions slot."""
    st_ = state(open_markets=frozenset({ASSET}), held_size=D("10"))
    d = decide(trade(condition_id=""), follower(risk=RiskRules(max_open_positions=1)), market(), st_, None, policy())
    assert isinstance(d, OrderIntent)
    other = decide(trade(condition_id=""), follower(risk=RiskRules(max_open_positions=1)), market(),
                   state(open_markets=frozenset({"0xother"})), None, policy())
    assert isinstance(other, Skip) and other.reason is Reason.MAX_OPEN_POSITIONS


def test_sell_is_sized_from_the_follower_position() -> None:
    tr = trade(side=Side.SELL, size=D("50"), notional_usd=D("20"))
    d = decide(tr, follower(), market(), state(held_size=D("120")), D("200"), policy())
    assert isinstance(d, OrderIntent)
    assert (d.side, d.size, d.amount_usd) == (Side.SELL, D("30"), None)


def test_sell_with_nothing_held_is_skipped() -> None:
    tr = trade(side=Side.SELL)
    d = decide(tr, follower(), market(), state(), D("200"), policy())
    assert isinstance(d, Skip) and d.reason is Reason.NOTHING_HELD


def test_sell_ignores_buy_risk_caps() -> None:
    tr = trade(side=Side.SELL, size=D("10"))
    risk = RiskRules(daily_loss_limit_usd=D("1"), max_total_exposure_usd=D("1"), max_open_positions=1)
    st = state(held_size=D("10"), realized_pnl_today_usd=D("-50"), total_exposure_usd=D("100"))
    d = decide(tr, follower(risk=risk), market(), st, D("10"), policy())
    assert isinstance(d, OrderIntent) and d.size == D("10")


def test_invalid_subscription_is_skipped_with_its_reason() -> None:
    d = decide(trade(), follower(invalid="sizing.ratio is not a decimal: 'x'"), market(), state(), None, policy())
    assert isinstance(d, Skip) and d.reason is Reason.INVALID_SUBSCRIPTION and "sizing.ratio" in d.detail


@pytest.mark.parametrize(("bps", "expected"), [(None, 200), (50, 50), (0, 0)])
def test_slippage_defaults_from_policy(bps: int | None, expected: int) -> None:
    d = decide(trade(), follower(filters=FilterRules(max_slippage_bps=bps)), market(), state(), None, policy())
    assert isinstance(d, OrderIntent) and d.max_slippage_bps == expected


def test_route_without_market_info_skips_everyone() -> None:
    fs = [follower("sub_1", "w_1"), follower("sub_2", "w_2")]
    ds = route(trade(), fs, None, {}, None, policy())
    assert [d.reason for d in ds if isinstance(d, Skip)] == [Reason.MARKET_INFO_UNAVAILABLE] * 2


def test_route_trade_gate_applies_to_everyone_and_missing_state_is_empty() -> None:
    fs = [follower("sub_1", "w_1"), follower("sub_2", "w_2")]
    assert all(isinstance(d, Skip) and d.reason is Reason.MARKET_CLOSED
               for d in route(trade(), fs, market(closed=True), {}, None, policy()))
    ds = route(trade(), fs, market(), {"w_1": state(held_size=D(1))}, None, policy())
    assert [type(d) for d in ds] == [OrderIntent, OrderIntent]
    assert ds[0].client_order_id != ds[1].client_order_id  # type: ignore[union-attr]


def test_invalid_trade_skips_everyone() -> None:
    ds = invalid_trade([follower()], "leader trade price '2' is not in (0, 1)")
    assert isinstance(ds[0], Skip) and ds[0].reason is Reason.INVALID_TRADE


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [(("lt_1", "w_1", ASSET), ("lt_1", "w_1", ASSET), True), (("lt_1", "w_1", ASSET), ("lt_2", "w_1", ASSET), False),
     (("lt_1", "w_1", ASSET), ("lt_1", "w_2", ASSET), False), (("lt_1", "w_1", "1"), ("lt_1", "w_1", "2"), False),
     # no ambiguity from concatenation
     (("lt_1", "w_12", "3"), ("lt_1", "w_1", "23"), False)],
)
def test_idempotency_key(a: tuple[str, str, str], b: tuple[str, str, str], same: bool) -> None:
    assert (client_order_id(*a) == client_order_id(*b)) is same
    assert client_order_id(*a) == hash_id("co", *a)
    assert client_order_id(*a).startswith("co_") and len(client_order_id(*a)) == 35


@given(st.text(), st.text(), st.text())
def test_trade_keys_equal_the_idempotency_key(lt: str, wallet: str, asset: str) -> None:
    assert client_order_ids(lt, asset)(wallet) == client_order_id(lt, wallet, asset)


money = st.decimals(min_value=D("0"), max_value=D("5000"), places=2)


@settings(max_examples=300)
@given(fixed=st.decimals(min_value=D("0.01"), max_value=D("1000"), places=2),
       price=st.decimals(min_value=D("0.01"), max_value=D("0.99"), places=2),
       mcap=st.one_of(st.none(), money), tcap=st.one_of(st.none(), money), mexp=money, texp=money,
       rm=money, rt=money, mult=st.decimals(min_value=D("0.1"), max_value=D("3"), places=1))
@example(fixed=D("1.73"), price=D("0.99"), mcap=None, tcap=None, mexp=D(0), texp=D(0), rm=D(0), rt=D(0),
         mult=D("2.9"))  # $5.01 at 0.99: slipped past 1, the worst price is 1, the minimum $5.00
def test_buy_never_exceeds_headroom_nor_goes_below_market_minimum(fixed, price, mcap, tcap, mexp, texp, rm, rt,
                                                                   mult) -> None:  # type: ignore[no-untyped-def]
    risk = RiskRules(max_market_exposure_usd=mcap, max_total_exposure_usd=tcap)
    st_ = state(market_exposure_usd=mexp, total_exposure_usd=texp, reserved_market_usd=rm, reserved_total_usd=rt)
    f = follower(sizing=SizingRules(FIXED, fixed_usd=fixed), risk=risk, multiplier=mult)
    d = decide(trade(price=price), f, market(), st_, None, policy())
    if isinstance(d, OrderIntent):
        assert d.amount_usd is not None
        assert d.amount_usd == d.amount_usd.quantize(D("0.01"))
        assert d.amount_usd <= fixed * mult
        if mcap is not None:
            assert d.amount_usd <= mcap - mexp - rm
        if tcap is not None:
            assert d.amount_usd <= tcap - texp - rt
        # the default 200 bps of slippage, the worst price paid at most 1
        assert d.amount_usd >= max(D(5) * min(price * D("1.02"), D(1)), D(1))
