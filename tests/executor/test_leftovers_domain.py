"""Which winning shares left redeemable after a market's redemption get another round (pure)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from services.executor.domain.leftovers import LastRound, NextRound, Resolved, next_rounds, round_key
from services.executor.domain.reconcile import AtVenue
from services.executor.domain.redemption import RedemptionState as S
from services.executor.domain.settlement import redemption_key

C = "0x" + "c" * 64
YES, NO = "1" * 77, "2" * 77
PLAIN = {C: Resolved((YES, NO), YES, False)}
NEG = {C: Resolved((YES, NO), YES, True)}


def at(asset: str, size: str, redeemable: bool = True, condition: str = C) -> AtVenue:
    return AtVenue(asset, condition, "Yes" if asset == YES else "No", D(size), D("0.4"), redeemable)


def last(state: S = S.CONFIRMED, *, reason: str = "", age_s: float = 600.0, round_no: int = 0) -> LastRound:
    return LastRound(round_key("w_1", C, round_no), round_no, state, reason, age_s)


def test_round_zero_is_the_settlements_key_and_each_round_has_its_own() -> None:
    keys = {round_key("w_1", C, n) for n in range(5)}
    assert round_key("w_1", C, 0) == redemption_key("w_1", C) and len(keys) == 5
    assert round_key("w_1", C.upper().replace("0X", "0x"), 2) == round_key("w_1", C, 2)


@pytest.mark.parametrize(("venue", "resolved", "prev", "want"), [
    # confirmed long enough ago, winning shares still there: round 1 for them
    ([at(YES, "50")], PLAIN, last(), [(1, D(50), ())]),
    # the shares were not on-chain when round 0 ran
    ([at(YES, "50")], PLAIN, last(S.FAILED, reason="NOTHING_TO_REDEEM"), [(1, D(50), ())]),
    # a later round moves on from its own number
    ([at(YES, "50")], PLAIN, last(round_no=2), [(3, D(50), ())]),
    # neg-risk: the amounts per outcome index, losing shares included
    ([at(YES, "50"), at(NO, "7")], NEG, last(), [(1, D(50), (D(50), D(7)))]),
    # two rows of the same token add up
    ([at(YES, "20"), at(YES, "30")], PLAIN, last(), [(1, D(50), ())]),
])
def test_leftover_winning_shares_get_the_next_round(venue: list[AtVenue], resolved: dict[str, Resolved],
                                                    prev: LastRound, want: list[tuple[int, D, tuple[D, ...]]]) -> None:
    got = next_rounds("w_1", venue, resolved, {C: prev}, grace_s=120)
    assert [(n.round_no, n.shares, n.amounts) for n in got] == want
    assert all(n == NextRound(C, prev.key, n.round_no, round_key("w_1", C, n.round_no), n.shares, n.amounts)
               for n in got)


@pytest.mark.parametrize(("venue", "resolved", "prev", "why"), [
    ([at(YES, "50")], PLAIN, last(age_s=30), "the confirmed round ended too recently (the venue may lag)"),
    ([at(YES, "50")], PLAIN, last(S.PENDING), "the last round is not sent yet: it takes them"),
    ([at(YES, "50")], PLAIN, last(S.SUBMITTED), "the last round is running"),
    ([at(YES, "50")], PLAIN, last(S.FAILED, reason="MARKET_NOT_RESOLVED"), "a final refusal is for an operator"),
    ([at(YES, "50")], PLAIN, last(round_no=4), "five rounds at most"),
    ([at(NO, "50")], PLAIN, last(), "only losing shares"),
    ([at(YES, "0.001")], PLAIN, last(), "dust"),
    ([at(YES, "50", redeemable=False)], PLAIN, last(), "not redeemable (not resolved at the venue)"),
    ([at(YES, "50")], {}, last(), "no recorded resolution"),
])
def test_no_round_is_made(venue: list[AtVenue], resolved: dict[str, Resolved], prev: LastRound, why: str) -> None:
    assert next_rounds("w_1", venue, resolved, {C: prev}, grace_s=120) == [], why


def test_a_market_the_engine_never_redeemed_is_left_alone() -> None:
    assert next_rounds("w_1", [at(YES, "50")], PLAIN, {}, grace_s=0) == []


def test_the_venues_condition_id_is_matched_whatever_its_case() -> None:
    [n] = next_rounds("w_1", [at(YES, "50", condition=C.upper().replace("0X", "0x"))], PLAIN, {C: last()})
    assert n.condition_id == C
