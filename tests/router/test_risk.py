"""Every risk cap fires; exposure caps cut to headroom; in-flight reservations count."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.model import FollowerState, Reason, RiskRules
from services.router.domain.risk import Capped, cap_exposure, daily_loss, open_positions
from tests.router.factories import CONDITION, state

D = Decimal


@pytest.mark.parametrize(
    ("limit", "realized", "fires"),
    [(None, "-1000", False), ("300", "-299.99", False), ("300", "-300", True), ("300", "-450", True),
     ("300", "500", False)],
)
def test_daily_loss_limit(limit: str | None, realized: str, fires: bool) -> None:
    risk = RiskRules(daily_loss_limit_usd=D(limit) if limit else None)
    result = daily_loss(risk, state(realized_pnl_today_usd=D(realized)))
    assert (result is not None) is fires
    if result:
        assert result[0] is Reason.DAILY_LOSS_LIMIT and "300" in result[1]


@pytest.mark.parametrize(
    ("cap", "held", "reserved", "fires"),
    [
        (None, {"a", "b", "c"}, set(), False),
        (3, {"a", "b"}, set(), False),
        (3, {"a", "b", "c"}, set(), True),
        (3, {"a", "b"}, {"c"}, True),  # an in-flight BUY into another market takes a slot
        (3, {"a", "b", CONDITION}, set(), False),  # adding to a held market opens nothing
        (3, {"a", "b", "c"}, {CONDITION}, False),  # adding to an in-flight market opens nothing
        (1, set(), set(), False),
    ],
)
def test_max_open_positions(cap: int | None, held: set[str], reserved: set[str], fires: bool) -> None:
    s = state(open_markets=frozenset(held), reserved_markets=frozenset(reserved))
    result = open_positions(RiskRules(max_open_positions=cap), s, CONDITION)
    assert (result is not None) is fires
    if result:
        assert result[0] is Reason.MAX_OPEN_POSITIONS


@pytest.mark.parametrize(
    ("risk", "st", "amount", "expected"),
    [
        (RiskRules(), state(), "25", Capped(D("25"))),
        (RiskRules(max_market_exposure_usd=D("500")), state(market_exposure_usd=D("400")), "25", Capped(D("25"))),
        # cut to the market headroom
        (RiskRules(max_market_exposure_usd=D("500")), state(market_exposure_usd=D("490")), "25",
         D("10")),
        # reservations count against the headroom
        (RiskRules(max_market_exposure_usd=D("500")),
         state(market_exposure_usd=D("400"), reserved_market_usd=D("95")), "25", D("5")),
        (RiskRules(max_total_exposure_usd=D("2000")),
         state(total_exposure_usd=D("1990"), reserved_total_usd=D("0")), "25", D("10")),
        (RiskRules(max_total_exposure_usd=D("2000")),
         state(total_exposure_usd=D("1900"), reserved_total_usd=D("80")), "25", D("20")),
        # the tighter of the two wins
        (RiskRules(max_market_exposure_usd=D("500"), max_total_exposure_usd=D("2000")),
         state(market_exposure_usd=D("480"), total_exposure_usd=D("1995")), "25", D("5")),
    ],
)
def test_exposure_headroom(risk: RiskRules, st: FollowerState, amount: str, expected: object) -> None:
    result = cap_exposure(risk, st, D(amount))
    assert isinstance(result, Capped)
    if isinstance(expected, Capped):
        assert (result.amount, result.cut_by, result.detail) == (expected.amount, None, "")
    else:
        assert result.amount == expected and result.cut_by is not None and "cut" in result.detail


@pytest.mark.parametrize(
    ("risk", "st", "reason"),
    [
        (RiskRules(max_market_exposure_usd=D("500")), state(market_exposure_usd=D("500")),
         Reason.MARKET_EXPOSURE_LIMIT),
        (RiskRules(max_market_exposure_usd=D("500")),
         state(market_exposure_usd=D("450"), reserved_market_usd=D("50")), Reason.MARKET_EXPOSURE_LIMIT),
        (RiskRules(max_total_exposure_usd=D("2000")), state(total_exposure_usd=D("2100")),
         Reason.TOTAL_EXPOSURE_LIMIT),
        (RiskRules(max_total_exposure_usd=D("2000")),
         state(total_exposure_usd=D("1000"), reserved_total_usd=D("1000")), Reason.TOTAL_EXPOSURE_LIMIT),
    ],
)
def test_exposure_caps_fire_without_headroom(risk: RiskRules, st: FollowerState, reason: Reason) -> None:
    result = cap_exposure(risk, st, D("25"))
    assert not isinstance(result, Capped)
    assert result[0] is reason and "no headroom" in result[1]
