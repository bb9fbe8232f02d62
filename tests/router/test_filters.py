"""Filters: trade-wide gates, price bounds, minimum leader notional, market lists, copySells."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.filters import before_active, listed, subscription_filters, trade_gate
from services.router.domain.model import FilterRules, Reason, Side
from tests.router.factories import CONDITION, NOW_MS, market, policy, trade

D = Decimal


@pytest.mark.parametrize(
    ("mkt", "tr", "pol", "reason"),
    [
        (market(), trade(), policy(), None),
        (market(closed=True), trade(), policy(), Reason.MARKET_CLOSED),
        (market(accepting_orders=False), trade(), policy(), Reason.MARKET_CLOSED),
        (market(), trade(venue_time_ms=NOW_MS - 301_000), policy(), Reason.TRADE_TOO_OLD),
        (market(), trade(venue_time_ms=NOW_MS - 299_000), policy(), None),
        (market(), trade(venue_time_ms=NOW_MS - 11_000), policy(max_trade_age_ms=10_000), Reason.TRADE_TOO_OLD),
        (market(), trade(venue_time_ms=0), policy(), None),  # venue time unknown: not judged stale
        (market(), trade(price=D("0.995")), policy(), Reason.PRICE_OUTSIDE_TICK_BOUNDS),
        (market(tick_size=D("0.001")), trade(price=D("0.995")), policy(), None),
        (market(), trade(price=D("0.005")), policy(), Reason.PRICE_OUTSIDE_TICK_BOUNDS),
    ],
)
def test_trade_gate(mkt, tr, pol, reason) -> None:  # type: ignore[no-untyped-def]
    result = trade_gate(tr, mkt, pol)
    assert (result[0] if result else None) is reason
    if result:
        assert result[1]


def test_stale_detail_has_the_numbers() -> None:
    result = trade_gate(trade(venue_time_ms=NOW_MS - 400_000), market(), policy())
    assert result is not None and "400.0s" in result[1] and "300.0s" in result[1]


@pytest.mark.parametrize(
    ("filters", "tr", "reason"),
    [
        (FilterRules(), trade(), None),
        (FilterRules(min_price=D("0.05")), trade(price=D("0.04")), Reason.PRICE_BELOW_MIN),
        (FilterRules(min_price=D("0.05")), trade(price=D("0.05")), None),
        (FilterRules(max_price=D("0.95")), trade(price=D("0.96")), Reason.PRICE_ABOVE_MAX),
        (FilterRules(max_price=D("0.95")), trade(price=D("0.95")), None),
        (FilterRules(min_leader_trade_usd=D("50")), trade(notional_usd=D("49.99")), Reason.LEADER_TRADE_TOO_SMALL),
        (FilterRules(min_leader_trade_usd=D("50")), trade(notional_usd=D("50")), None),
        (FilterRules(copy_sells=False), trade(side=Side.SELL), Reason.COPY_SELLS_DISABLED),
        (FilterRules(copy_sells=False), trade(side=Side.BUY), None),
        (FilterRules(copy_sells=True), trade(side=Side.SELL), None),
        # price bounds and minimum notional gate entries only: a leader exit is mirrored
        (FilterRules(max_price=D("0.95")), trade(side=Side.SELL, price=D("0.97")), None),
        (FilterRules(min_leader_trade_usd=D("50")), trade(side=Side.SELL, notional_usd=D("1")), None),
        # market lists apply to both sides
        (FilterRules(denylist=("will-it-rain",)), trade(), Reason.MARKET_DENIED),
        (FilterRules(denylist=("will-it-rain",)), trade(side=Side.SELL), Reason.MARKET_DENIED),
        (FilterRules(allowlist=("other-market",)), trade(), Reason.MARKET_NOT_ALLOWED),
        (FilterRules(allowlist=("weather-2026",)), trade(), None),
        (FilterRules(allowlist=(CONDITION,)), trade(), None),
        (FilterRules(allowlist=("will-it-rain",), denylist=("weather-2026",)), trade(), Reason.MARKET_DENIED),
    ],
)
def test_subscription_filters(filters: FilterRules, tr, reason) -> None:  # type: ignore[no-untyped-def]
    result = subscription_filters(filters, tr, market())
    assert (result[0] if result else None) is reason


@pytest.mark.parametrize(
    ("entries", "ids", "hit"),
    [
        (("btc-updown-5m",), ("0xc", "btc-updown-5m-1790272200", "btc-updown-5m-1790272200"), "btc-updown-5m"),
        (("btc-updown-5m",), ("0xc", "btc-updown-5min", ""), None),  # prefix only at a '-' boundary
        (("btc-updown",), ("0xc", "eth-updown-5m-1", "eth-updown-5m"), None),
        (("0xc",), ("0xc", "", ""), "0xc"),
        (("0xc",), ("0xcd", "", ""), None),  # condition ids match exactly
        (("nba",), ("0xc", "nba-lal-bos-2026-01-01", "nba-lal-bos"), "nba"),
        ((), ("0xc", "a", "b"), None),
        (("",), ("", "", ""), None),
    ],
)
def test_list_matching(entries: tuple[str, ...], ids: tuple[str, str, str], hit: str | None) -> None:
    assert listed(entries, ids) == hit


def test_lists_are_case_insensitive_and_fall_back_to_market_info_slugs() -> None:
    # entries are lower-cased when parsed; the trade's identifiers are lower-cased when matched
    tr = trade(market_slug="", event_slug="", condition_id=CONDITION.upper().replace("0X", "0x"))
    mkt = market(market_slug="Will-It-Rain", event_slug="Weather-2026")
    assert subscription_filters(FilterRules(denylist=("weather-2026",)), tr, mkt) is not None
    assert subscription_filters(FilterRules(allowlist=(CONDITION,)), tr, mkt) is None


def test_allowlist_without_any_identifier_rejects() -> None:
    tr = trade(market_slug="", event_slug="", condition_id="")
    result = subscription_filters(FilterRules(allowlist=("x",)), tr, market())
    assert result is not None and result[0] is Reason.MARKET_NOT_ALLOWED


def test_lists_fall_back_to_the_market_infos_condition_id_when_the_trade_has_none() -> None:
    tr = trade(market_slug="", event_slug="", condition_id="")
    mkt = market(condition_id=CONDITION)
    denied = subscription_filters(FilterRules(denylist=(CONDITION,)), tr, mkt)
    assert denied is not None and denied[0] is Reason.MARKET_DENIED
    assert subscription_filters(FilterRules(allowlist=(CONDITION,)), tr, mkt) is None


@pytest.mark.parametrize(("side", "venue_ms", "active_since_ms", "reason"), [
    (Side.BUY, NOW_MS - 60_000, NOW_MS - 10_000, Reason.TRADE_BEFORE_ACTIVE),  # made while paused
    (Side.BUY, NOW_MS - 5_000, NOW_MS - 10_000, None),  # made since the resume
    (Side.BUY, NOW_MS - 10_000, NOW_MS - 10_000, None),  # at the very moment
    (Side.BUY, 1_790_000_000_000, 1_790_000_000_900, None),  # stamped (to the second) with that second
    (Side.BUY, 1_789_999_999_000, 1_790_000_000_900, Reason.TRADE_BEFORE_ACTIVE),  # the second before
    (Side.SELL, NOW_MS - 60_000, NOW_MS - 10_000, None),  # an exit is still mirrored
    (Side.BUY, NOW_MS - 60_000, 0, None),  # active time unknown (an index entry from before it existed)
    (Side.BUY, 0, NOW_MS - 10_000, None),  # venue time unknown: not judged
])
def test_a_buy_made_before_the_subscription_became_active_is_not_copied(
        side: Side, venue_ms: int, active_since_ms: int, reason: Reason | None) -> None:
    got = before_active(active_since_ms, trade(side=side, venue_time_ms=venue_ms))
    assert (got[0] if got else None) == reason
