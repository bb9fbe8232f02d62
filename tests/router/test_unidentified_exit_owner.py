"""A leader's exit in a market the subscription's lists cannot rule out is mirrored only on shares its copies bought.

A SELL is sized on the wallet's shares when no split is kept: a position bought by hand (MANUAL, EXTERNAL) or by
another subscription's copies. A leader's close that comes without slugs (market info from a book) cannot be ruled
out of an allowlist or denylist; mirrored whatever the wallet holds, it sold the follower's own shares in a market
the subscription never copied. It is mirrored only when this subscription's copies bought shares of the token (its
part of a split, or the position its copy opened when none is kept); otherwise it is skipped with the list's reason.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.adapters.store import _read_wallets
from services.router.domain.decide import route
from services.router.domain.filters import market_identifiers, market_lists, subscription_filters
from services.router.domain.holdings import bought_by
from services.router.domain.model import FilterRules, FollowerState, OrderIntent, Reason, Side, Skip
from tests.router.factories import CONDITION, follower, market, policy, state, trade

D = Decimal
NO_SLUGS = {"market_slug": "", "event_slug": ""}
OTHER_CONDITION = "0x" + "cd" * 32


def test_an_unidentified_exit_does_not_sell_a_position_the_subscription_never_bought() -> None:
    """The reviewer's case: the follower copies leader L only in NBA markets and holds 500 shares of 'will-it-rain'
    it bought itself at the trading terminal. L bought 1,000 of them: not copied (MARKET_NOT_ALLOWED, slugs known).
    L's close of the 1,000 comes without slugs: it sold all 500 of the follower's own shares at market."""
    f = follower(filters=FilterRules(allowlist=("nba",)))
    buy = trade(side=Side.BUY, size=D("1000"))
    [skipped] = route(buy, [f], market(), {}, None, policy())
    assert isinstance(skipped, Skip) and skipped.reason is Reason.MARKET_NOT_ALLOWED
    close = trade(side=Side.SELL, size=D("1000"), **NO_SLUGS)
    [d] = route(close, [f], market(), {f.follower_wallet_id: state(held_size=D("500"))}, D("1000"), policy())
    assert isinstance(d, Skip) and d.reason is Reason.MARKET_NOT_ALLOWED, d


@pytest.mark.parametrize(("filters", "reason"), [
    (FilterRules(allowlist=("nba",)), Reason.MARKET_NOT_ALLOWED),
    (FilterRules(denylist=("btc-updown-5m",)), Reason.MARKET_DENIED),
    (FilterRules(allowlist=(OTHER_CONDITION,)), Reason.MARKET_NOT_ALLOWED),
])
@pytest.mark.parametrize(("held", "owner", "sold"), [
    (state(held_size=D("500")), "nobody (manual or external)", None),
    (state(held_size=D("500"), opened_by="sub_other"), "another subscription's copy", None),
    (state(held_size=D("500"), opened_by="sub_1"), "this subscription's copy", D("500")),
    (state(held_size=D("500"), held_parts={"": D("300"), "sub_1": D("200")}), "its part of a split", D("200")),
    (state(held_size=D("500"), held_parts={"": D("300"), "sub_other": D("200")}, opened_by="sub_1"),
     "a split it has no part of (its opening read as no split)", None),
])
def test_an_unidentified_exit_is_mirrored_only_on_shares_the_subscription_bought(
        filters: FilterRules, reason: Reason, held: FollowerState, owner: str, sold: Decimal | None) -> None:
    f = follower("sub_1", filters=filters)
    close = trade(side=Side.SELL, size=D("1000"), **NO_SLUGS)
    if filters.allowlist == (OTHER_CONDITION,):
        close = trade(side=Side.SELL, size=D("1000"), condition_id="")
    [d] = route(close, [f], market(), {f.follower_wallet_id: held}, D("1000"), policy())
    if sold is None:
        assert isinstance(d, Skip) and d.reason is reason, owner
    else:
        assert isinstance(d, OrderIntent) and d.size == sold, owner


@pytest.mark.parametrize("owns", [True, False])
@pytest.mark.parametrize("buying", [True, False])
@pytest.mark.parametrize(("filters", "ids", "reason"), [
    # lists the ids cannot rule out: nothing known, or no slug for a slug entry, no condition id for a condition one
    (FilterRules(allowlist=("nba",)), ("", "", ""), Reason.MARKET_NOT_ALLOWED),
    (FilterRules(allowlist=("nba",)), (CONDITION, "", ""), Reason.MARKET_NOT_ALLOWED),
    (FilterRules(allowlist=(OTHER_CONDITION,)), ("", "will-it-rain", "weather-2026"), Reason.MARKET_NOT_ALLOWED),
    (FilterRules(denylist=("btc-updown-5m",)), ("", "", ""), Reason.MARKET_DENIED),
    (FilterRules(denylist=("btc-updown-5m",)), (CONDITION, "", ""), Reason.MARKET_DENIED),
    (FilterRules(denylist=(OTHER_CONDITION,)), ("", "will-it-rain", "weather-2026"), Reason.MARKET_DENIED),
    (FilterRules(allowlist=("nba",), denylist=("btc-updown-5m",)), (CONDITION, "", ""), Reason.MARKET_DENIED),
])
def test_market_lists_on_an_unidentified_market(filters: FilterRules, ids: tuple[str, str, str], reason: Reason,
                                                buying: bool, owns: bool) -> None:
    got = market_lists(filters, ids, buying=buying, owns=owns)
    if not buying and owns:
        assert got is None  # the exit of what the subscription's copies bought is mirrored
    else:
        assert got is not None and got[0] is reason  # an unidentified BUY, or an exit of shares it never bought


@pytest.mark.parametrize("owns", [True, False])
@pytest.mark.parametrize("buying", [True, False])
@pytest.mark.parametrize(("filters", "ids", "reason"), [
    # identified markets: ``owns`` changes nothing
    (FilterRules(allowlist=("nba",)), (CONDITION, "will-it-rain", "weather-2026"), Reason.MARKET_NOT_ALLOWED),
    (FilterRules(allowlist=("will-it-rain",)), (CONDITION, "will-it-rain", "weather-2026"), None),
    (FilterRules(denylist=("will-it-rain",)), (CONDITION, "will-it-rain", "weather-2026"), Reason.MARKET_DENIED),
    (FilterRules(denylist=("btc-updown-5m",)), (CONDITION, "will-it-rain", "weather-2026"), None),
    (FilterRules(denylist=(CONDITION,)), (CONDITION, "", ""), Reason.MARKET_DENIED),
    (FilterRules(allowlist=(CONDITION,)), (CONDITION, "", ""), None),
    (FilterRules(allowlist=(OTHER_CONDITION,)), (CONDITION, "", ""), Reason.MARKET_NOT_ALLOWED),
    # the market info names the market the trade did not
    (FilterRules(allowlist=("nba",)), (CONDITION, "will-it-rain", ""), Reason.MARKET_NOT_ALLOWED),
])
def test_market_lists_on_an_identified_market(filters: FilterRules, ids: tuple[str, str, str], reason: Reason | None,
                                              buying: bool, owns: bool) -> None:
    got = market_lists(filters, ids, buying=buying, owns=owns)
    assert (got[0] if got is not None else None) is reason


@pytest.mark.parametrize(("owns", "reason"), [(True, None), (False, Reason.MARKET_NOT_ALLOWED)])
def test_subscription_filters_pass_owns_through(owns: bool, reason: Reason | None) -> None:
    close, mkt = trade(side=Side.SELL, **NO_SLUGS), market()
    got = subscription_filters(FilterRules(allowlist=("nba",)), close, mkt, market_identifiers(close, mkt), owns=owns)
    assert (got[0] if got is not None else None) is reason


@pytest.mark.parametrize(("st", "expected"), [
    (state(), False),
    (state(held_size=D("5")), False),  # manual, external, or a copy of no subscription
    (state(held_size=D("5"), opened_by="sub_1"), True),
    (state(held_size=D("5"), opened_by="sub_2"), False),
    (state(held_size=D("5"), held_parts={"sub_1": D("2"), "": D("3")}), True),
    (state(held_size=D("5"), held_parts={"sub_2": D("2"), "": D("3")}, opened_by="sub_1"), False),
    (state(held_size=D("5"), held_parts={"sub_1": D("0"), "sub_2": D("5")}), False),
])
def test_bought_by(st: FollowerState, expected: bool) -> None:
    assert bought_by(st, "sub_1") is expected


def test_load_rows_name_the_subscription_whose_copy_opened_a_sell_assets_position() -> None:
    """LOAD's row of a SELL's asset carries the opening copy's subscription after its shares, or after its cost and
    split when one is kept; a row without one (manual, external, or a BUY's asset) names none."""
    rows: list[list[object]] = [
        ["w_1", "25", "m1", [], [["a1", "62.5", "sub_A"], ["a2", "10"]], None],
        ["w_2", "70", "m1", [], [["a1", "150", "70", {"sub_A": ["100", "40"], "sub_B": ["50", "30"]}, "sub_A"],
                                 ["a3", "5", "2", {"": ["2", "1"], "sub_B": ["3", "1"]}, None]], None],
    ]
    (_, _, sizes, _, parts, _, _), openers = _read_wallets(rows)
    assert openers == {("w_1", "a1"): "sub_A", ("w_2", "a1"): "sub_A"}
    assert parts == {("w_2", "a1"): {"sub_A": D("100"), "sub_B": D("50")},
                     ("w_2", "a3"): {"": D("2"), "sub_B": D("3")}}
    assert sizes[("w_1", "a1")] == D("62.5")
