"""Market allowlist vs a leader SELL whose market cannot be identified by the kind of id the entries name.

A follower with an allowlist only ever bought in allowed markets (a BUY there is copied only when identified as
allowed). When the leader's exit then comes without slugs (ingest keeps ``slug`` / ``eventSlug`` as "" when a frame
lacks them, and the market info ingest writes from a book has none) or without a condition id, the exit of what its
copy bought is mirrored, as the denylist mirrors it: an exit is never withheld on a guess, or the follower holds what
the leader left (a position it did not buy is not sold: test_unidentified_exit_owner.py). A SELL
in a market known not to be in the allowlist is still skipped, and an unidentified BUY still is too.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.decide import route
from services.router.domain.filters import subscription_filters
from services.router.domain.model import FilterRules, MarketRules, OrderIntent, Reason, Side
from services.router.domain.model import LeaderTrade as Trade
from tests.router.factories import CONDITION, follower, market, policy, state, trade

D = Decimal
OTHER_CONDITION = "0x" + "cd" * 32
NO_SLUGS = {"market_slug": "", "event_slug": ""}


@pytest.mark.parametrize(("entries", "tr", "mkt", "reason"), [
    # slug entries, no slug known: the exit may be in an allowed market
    (("weather-2026",), trade(side=Side.SELL, **NO_SLUGS), market(), None),
    (("will-it-rain",), trade(side=Side.SELL, condition_id="", **NO_SLUGS), market(), None),
    # a condition id entry, no condition id known
    ((OTHER_CONDITION,), trade(side=Side.SELL, condition_id=""), market(), None),
    # known to be outside the allowlist: skipped as before
    (("other-market",), trade(side=Side.SELL), market(), Reason.MARKET_NOT_ALLOWED),
    ((OTHER_CONDITION,), trade(side=Side.SELL), market(), Reason.MARKET_NOT_ALLOWED),
    (("other-market",), trade(side=Side.SELL, **NO_SLUGS), market(market_slug="will-it-rain"),
     Reason.MARKET_NOT_ALLOWED),
    # an unidentified BUY is still not copied
    (("weather-2026",), trade(side=Side.BUY, **NO_SLUGS), market(), Reason.MARKET_NOT_ALLOWED),
    ((OTHER_CONDITION,), trade(side=Side.BUY, condition_id=""), market(), Reason.MARKET_NOT_ALLOWED),
])
def test_allowlist_mirrors_an_unidentified_exit(entries: tuple[str, ...], tr: Trade, mkt: MarketRules,
                                                reason: Reason | None) -> None:
    got = subscription_filters(FilterRules(allowlist=entries), tr, mkt)
    assert (got[0] if got is not None else None) is reason


def test_the_leaders_exit_without_slugs_sells_what_the_allowlisted_copy_bought() -> None:
    """The copy bought 62.5 shares in an allowed market (its BUY came with slugs); the leader's close comes
    without them and the market info has none: the follower sells all 62.5, not nothing."""
    f = follower(filters=FilterRules(allowlist=("weather-2026",)))
    close = trade(side=Side.SELL, size=D("100"), **NO_SLUGS)
    held = state(held_size=D("62.5"), opened_by="sub_1")  # the position its copy opened
    [d] = route(close, [f], market(), {f.follower_wallet_id: held}, D("100"), policy())
    assert isinstance(d, OrderIntent) and d.size == D("62.50")
    assert close.condition_id == CONDITION  # identified by condition id only, which no slug entry can be matched to
