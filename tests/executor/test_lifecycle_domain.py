"""Settlement, redemption and reconciliation rules (pure)."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.executor.domain import reconcile as rc
from services.executor.domain import redemption as rd
from services.executor.domain.settlement import HeldPosition, Resolution, redemption_key, settle

YES, NO = "1" * 77, "2" * 77
RES = Resolution("0xc", (YES, NO), YES)


def held(wallet: str, asset: str, size: str, cost: str, venue: str = "INSIDERS") -> HeldPosition:
    return HeldPosition(wallet, "0x" + wallet[-1] * 40, asset, venue, "sub_" + wallet, D(size), D(cost))


@pytest.mark.parametrize(("positions", "states", "pnl", "plans"), [
    ([held("w_1", YES, "100", "40")], ["RESOLVED_WON"], [D(60)], [("w_1", D(100))]),
    ([held("w_1", NO, "50", "30")], ["RESOLVED_LOST"], [D(-30)], []),
    # a wallet holding both sides: one redemption for its winning shares
    ([held("w_1", YES, "10", "4"), held("w_1", NO, "20", "12")], ["RESOLVED_WON", "RESOLVED_LOST"],
     [D(6), D(-12)], [("w_1", D(10))]),
    # paper positions settle the same way, with no redemption
    ([held("w_2", YES, "10", "5", venue="PAPER")], ["RESOLVED_WON"], [D(5)], []),
    ([], [], [], []),
])
def test_settlement(positions: list[HeldPosition], states: list[str], pnl: list[D],
                    plans: list[tuple[str, D]]) -> None:
    settled, redemptions = settle(RES, positions)
    assert [s.state for s in settled] == states
    assert [s.realized_pnl_usd for s in settled] == pnl
    assert [s.cost_usd for s in settled] == [p.cost_usd for p in positions]
    assert [(r.follower_wallet_id, r.shares) for r in redemptions] == plans
    assert all(r.key == redemption_key(r.follower_wallet_id, "0xC") and r.amounts == () for r in redemptions)


def test_a_neg_risk_redemption_names_the_shares_of_every_outcome_in_index_order() -> None:
    res = Resolution("0xc", (YES, NO), NO, neg_risk=True)
    _, [plan] = settle(res, [held("w_1", YES, "10", "4"), held("w_1", NO, "20", "12")])
    assert (plan.shares, plan.amounts, plan.neg_risk) == (D(20), (D(10), D(20)), True)


@given(st.lists(st.tuples(st.sampled_from(["w_1", "w_2", "w_3"]), st.sampled_from([YES, NO]),
                          st.integers(1, 10_000), st.integers(0, 10_000)), max_size=20))
def test_settlement_pays_exactly_the_winning_shares(rows: list[tuple[str, str, int, int]]) -> None:
    positions = [held(w, a, str(s), str(c)) for w, a, s, c in rows]
    settled, plans = settle(RES, positions)
    assert sum(s.payout_usd for s in settled) == sum(p.size for p in positions if p.asset_id == YES)
    assert sum(p.shares for p in plans) == sum(p.size for p in positions if p.asset_id == YES)
    assert len({p.follower_wallet_id for p in plans}) == len(plans)  # one redemption per wallet
    assert sum(s.realized_pnl_usd for s in settled) == sum(s.payout_usd for s in settled) - sum(
        p.cost_usd for p in positions)


S = rd.RedemptionState


@pytest.mark.parametrize(("start", "event", "expected"), [
    (S.PENDING, rd.RedeemSent(5), (S.PENDING, 1, "")),
    (S.PENDING, rd.RedeemAnswered("rd_1", "submitted", "0xt", D(5)), (S.SUBMITTED, 0, "")),
    (S.PENDING, rd.RedeemAnswered("rd_1", "confirmed", "0xt", D(5)), (S.CONFIRMED, 0, "")),
    (S.PENDING, rd.RedeemAnswered("rd_1", "failed", error="reverted"), (S.FAILED, 0, "REDEMPTION_FAILED")),
    # a word the contract does not list: the venue took it (a redeemId), so it is followed like submitted...
    (S.PENDING, rd.RedeemAnswered("rd_1", "weird"), (S.SUBMITTED, 0, "")),
    (S.PENDING, rd.RedeemAnswered("rd_1", "pending"), (S.SUBMITTED, 0, "")),
    (S.PENDING, rd.RedeemAnswered("rd_1", "mined", "0xt", D(5)), (S.SUBMITTED, 0, "")),
    # ...unless there is nothing to follow
    (S.PENDING, rd.RedeemAnswered("", "weird"), (S.FAILED, 0, "UNREADABLE_ANSWER")),
    (S.PENDING, rd.RedeemAnswered("", "submitted"), (S.FAILED, 0, "UNREADABLE_ANSWER")),  # nothing to follow
    (S.PENDING, rd.RedeemAnswered("", "confirmed", "0xt", D(5)), (S.CONFIRMED, 0, "")),  # nothing to follow needed
    (S.PENDING, rd.RedeemRefused("NOTHING_TO_REDEEM", "none held"), (S.FAILED, 0, "NOTHING_TO_REDEEM")),
    (S.PENDING, rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", 10, 200), (S.PENDING, 0, "VENUE_UNAVAILABLE")),
    (S.SUBMITTED, rd.RedeemStatusSeen("confirmed", "0xt"), (S.CONFIRMED, 0, "")),
    (S.SUBMITTED, rd.RedeemStatusSeen("submitted"), (S.SUBMITTED, 0, "")),
    (S.SUBMITTED, rd.RedeemStatusSeen("mined"), (S.SUBMITTED, 0, "")),
    (S.SUBMITTED, rd.RedeemStatusSeen("failed", error="reverted"), (S.FAILED, 0, "REDEMPTION_FAILED")),
    (S.SUBMITTED, rd.RedeemRetryable("VENUE_UNAVAILABLE", "timeout", 10, 200), (S.SUBMITTED, 0, "VENUE_UNAVAILABLE")),
])
def test_redemption_transitions(start: rd.RedemptionState, event: rd.Event,
                                expected: tuple[rd.RedemptionState, int, str]) -> None:
    after = rd.apply(rd.Redemption("rk_1", state=start), event)
    assert (after.state, after.attempts, after.reason) == expected


@pytest.mark.parametrize("status", ["submitted", "pending"])
def test_a_replayed_answer_without_a_redeem_id_keeps_following_the_one_known(status: str) -> None:
    """A POST replayed after a restart (same Idempotency-Key) whose answer lacks the redeemId the first one gave:
    the redemption is still followed under the id known."""
    known = rd.Redemption("rk_1", state=S.SUBMITTED, redeem_id="rd_1")
    after = rd.apply(known, rd.RedeemAnswered("", status))
    assert (after.state, after.redeem_id) == (S.SUBMITTED, "rd_1")


@pytest.mark.parametrize(("status", "redeem_id", "state"), [
    ("pending", "rd_1", S.SUBMITTED), ("mined", "rd_1", S.SUBMITTED), ("PENDING", "rd_1", S.SUBMITTED),
    ("submitted", "rd_1", S.SUBMITTED), ("confirmed", "rd_1", S.CONFIRMED), ("pending", "", S.FAILED),
])
def test_a_post_answer_names_the_redemption_it_follows(status: str, redeem_id: str,
                                                        state: rd.RedemptionState) -> None:
    after = rd.apply(rd.Redemption("rk_1"), rd.RedeemAnswered(redeem_id, status, "0xt", D(5)))
    assert (after.state, after.redeem_id) == (state, redeem_id)
    assert rd.known_status(status) is (status in ("submitted", "confirmed", "failed"))


@pytest.mark.parametrize(("state", "event"), [
    (S.SUBMITTED, rd.RedeemSent(1)),
    (S.CONFIRMED, rd.RedeemSent(1)),
    (S.CONFIRMED, rd.RedeemStatusSeen("confirmed")),
    (S.FAILED, rd.RedeemAnswered("rd", "confirmed")),
    (S.PENDING, rd.RedeemStatusSeen("confirmed")),
])
def test_illegal_redemption_moves_raise(state: rd.RedemptionState, event: rd.Event) -> None:
    with pytest.raises(rd.IllegalTransition):
        rd.apply(rd.Redemption("rk", state=state), event)


def test_retries_back_off_and_an_answer_resets_them() -> None:
    r = rd.Redemption("rk")
    r = rd.apply(r, rd.RedeemRetryable("VENUE_UNAVAILABLE", "503", 1_000, 400))
    assert (r.failures, r.next_attempt_ms) == (1, 1_400)
    r = rd.apply(r, rd.RedeemAnswered("rd_1", "submitted"))
    assert r.failures == 0 and r.redeem_id == "rd_1"


@pytest.mark.parametrize(("status", "retry"), [(425, True), (429, True), (500, True), (503, True), (400, False),
                                               (404, False), (409, False), (200, False)])
def test_retryable_status(status: int, retry: bool) -> None:
    assert rd.retryable_status(status) is retry


def booked(asset: str, size: str, state: str = "OPEN", avg: str = "0.5") -> rc.Booked:
    return rc.Booked(asset, state, D(size), D(avg), D(size) * D(avg))


def at_venue(asset: str, size: str, redeemable: bool = False, avg: str = "0.4") -> rc.AtVenue:
    return rc.AtVenue(asset, "0xc", "Yes", D(size), D(avg), redeemable)


@pytest.mark.parametrize(("mine", "theirs", "busy", "expected"), [
    # agreeing, or off by rounding only: nothing to do
    ([booked("a", "100")], [at_venue("a", "100")], [], []),
    ([booked("a", "100")], [at_venue("a", "100.00005")], [], []),
    # sold in the terminal: corrected down, at the same average cost
    ([booked("a", "100")], [at_venue("a", "40")], [], [("a", "CORRECTED", D(100), D(40), D(20))]),
    # all of it sold outside: closed
    ([booked("a", "100")], [], [], [("a", "CLOSED_AT_VENUE", D(100), D(0), D(0))]),
    # bought in the terminal: an external position at the venue's average price
    ([], [at_venue("b", "30")], [], [("b", "EXTERNAL", D(0), D(30), D(12))]),
    ([booked("b", "0", state="CLOSED")], [at_venue("b", "30")], [], [("b", "EXTERNAL", D(0), D(30), D(12))]),
    # an order in flight or a fresh fill: left for the next round
    ([booked("a", "100")], [at_venue("a", "40")], ["a"], []),
    ([], [at_venue("b", "30")], ["b"], []),
    # a resolved market: settlement's business, whatever either side says
    ([booked("a", "100")], [at_venue("a", "100", redeemable=True)], [], []),
    ([booked("a", "0", state="RESOLVED_WON")], [at_venue("a", "100")], [], []),
    ([], [at_venue("b", "30", redeemable=True)], [], []),
])
def test_reconcile(mine: list[rc.Booked], theirs: list[rc.AtVenue], busy: list[str],
                   expected: list[tuple[str, str, D, D, D]]) -> None:
    got = rc.reconcile(mine, theirs, busy)
    assert [(c.asset_id, c.kind, c.size_before, c.size_after, c.cost_after) for c in got] == expected


@pytest.mark.parametrize(("wallets", "interval_s", "cap", "pace"), [
    (1000, 300.0, 10.0, 1000 / 240),  # every wallet once in 80 % of the interval, evenly
    (1000, 100.0, 10.0, 10.0),  # more than the cap allows: the cap (the round overruns the interval)
    (10, 300.0, 10.0, 1.0),  # few wallets: still a call a second when one is due
    (0, 300.0, 10.0, 1.0),
    (1000, 0.0, 10.0, 10.0),  # no periodic rounds: the cap, for the start and the wallets asked for
])
def test_the_rounds_are_paced_over_the_interval(wallets: int, interval_s: float, cap: float, pace: float) -> None:
    assert rc.round_pace(wallets, interval_s, cap) == pytest.approx(pace)
