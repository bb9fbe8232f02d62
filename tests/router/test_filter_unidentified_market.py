"""Market denylist vs a leader trade whose market cannot be identified by the kind of id an entry names.

Contract (protos/tradingtools/control/v1/subscription.proto, ``Filters.market_denylist``): "Never copy these markets
(market slug, event slug or condition id)." CONTROL_API.md's example denylists ``"btc-updown-5m"``, a slug. A trade
that comes without slugs (ingest keeps ``slug`` / ``eventSlug`` as "" when a frame lacks them; the market info
ingest writes from a book has no slug) or without a condition id cannot be told apart from a denylisted market: it
BUY is skipped, as the allowlist already skips a market it cannot identify; a SELL is mirrored (an exit is never
withheld on a guess: the follower would hold what the leader left).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.decide import route
from services.router.domain.filters import subscription_filters
from services.router.domain.model import FilterRules, OrderIntent, Reason, Side, Skip
from tests.router.factories import CONDITION, follower, market, policy, trade

OTHER_CONDITION = "0x" + "cd" * 32
NO_SLUGS = {"market_slug": "", "event_slug": ""}


def test_a_slug_denylist_is_not_passed_by_a_buy_without_slugs() -> None:
    """ "Never copy these markets (market slug, event slug or condition id)": a trade with no slug may be in the
    denylisted series; it is not copied."""
    got = subscription_filters(FilterRules(denylist=("btc-updown-5m",)), trade(side=Side.BUY, **NO_SLUGS), market())
    assert got is not None and got[0] is Reason.MARKET_DENIED
    assert "btc-updown-5m" in got[1]


def test_a_sell_without_slugs_is_mirrored_whatever_the_denylist_cannot_rule_out() -> None:
    """A leader's exit is mirrored unless its market is known to be denied."""
    assert subscription_filters(FilterRules(denylist=("btc-updown-5m",)), trade(side=Side.SELL, **NO_SLUGS),
                                market()) is None


def test_a_condition_denylist_is_not_passed_by_a_trade_without_condition_id() -> None:
    """ "Never copy these markets (market slug, event slug or condition id)": neither the trade nor the market info
    names the condition: it may be the denylisted one."""
    got = subscription_filters(FilterRules(denylist=(OTHER_CONDITION,)), trade(condition_id=""), market())
    assert got is not None and got[0] is Reason.MARKET_DENIED


def test_route_skips_the_unidentified_trade_for_the_follower_with_the_denylist_only() -> None:
    """ "Never copy these markets": the follower that denylisted a series is not copied into an unidentified
    market; a follower without lists still is."""
    guarded = follower("sub_deny", "w_1", filters=FilterRules(denylist=("btc-updown-5m",)))
    free = follower("sub_free", "w_2")
    decisions = route(trade(**NO_SLUGS), [guarded, free], market(), {}, None, policy())
    assert isinstance(decisions[0], Skip) and decisions[0].reason is Reason.MARKET_DENIED
    assert isinstance(decisions[1], OrderIntent) and decisions[1].amount_usd == Decimal("25")


@pytest.mark.parametrize(("entries", "kw", "mkt_kw"), [
    (("btc-updown-5m",), {}, {}),  # slugs known, not the series
    (("btc-updown-5m",), {"condition_id": ""}, {}),  # slug entries need slugs only
    (("btc-updown-5m",), NO_SLUGS, {"market_slug": "will-it-rain"}),  # the market info names the market
    ((OTHER_CONDITION,), NO_SLUGS, {}),  # condition entries need the condition id only
    ((OTHER_CONDITION,), {"condition_id": ""}, {"condition_id": CONDITION}),  # from the market info
    ((), {**NO_SLUGS, "condition_id": ""}, {}),  # no list: nothing to check
])
def test_a_trade_the_denylist_can_be_checked_against_is_copied(entries: tuple[str, ...], kw: dict[str, str],
                                                               mkt_kw: dict[str, str]) -> None:
    assert subscription_filters(FilterRules(denylist=entries), trade(**kw), market(**mkt_kw)) is None
