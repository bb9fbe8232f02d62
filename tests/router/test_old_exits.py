"""A leader's exit older than the trade-age gate is still mirrored, up to ``Policy.max_exit_age_ms``.

The age gate (``TT_ROUTER_MAX_TRADE_AGE_S``, 300 s) is for entries: a BUY minutes old is at a price that is gone.
An exit is different: the leader's recorded position falls by every trade routed, skipped or not, so a SELL skipped
TRADE_TOO_OLD (a backlog after an outage of more than 5 minutes) left the follower holding what the leader had left,
with no later exit signal. Such a SELL is now sized as a young one, on what the follower holds, up to
``TT_ROUTER_MAX_EXIT_AGE_S`` (6 h by default); older, it is skipped TRADE_TOO_OLD as before.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.domain.decide import route
from services.router.domain.filters import trade_gate
from services.router.domain.model import OrderIntent, Reason, Side, Skip
from tests.router.factories import NOW_MS, follower, market, policy, state, trade

D = Decimal
MIN_MS = 60_000
HOUR_MS = 3_600_000


@pytest.mark.parametrize(("side", "age_ms", "knobs", "reason"), [
    # entries: the 300 s gate, as before
    (Side.BUY, 299_000, {}, None),
    (Side.BUY, 301_000, {}, Reason.TRADE_TOO_OLD),
    (Side.BUY, 2 * HOUR_MS, {}, Reason.TRADE_TOO_OLD),
    # exits: mirrored up to the exit age (6 h by default)
    (Side.SELL, 299_000, {}, None),
    (Side.SELL, 301_000, {}, None),
    (Side.SELL, 20 * MIN_MS, {}, None),
    (Side.SELL, 6 * HOUR_MS, {}, None),
    (Side.SELL, 6 * HOUR_MS + 1, {}, Reason.TRADE_TOO_OLD),
    (Side.SELL, 30 * 24 * HOUR_MS, {}, Reason.TRADE_TOO_OLD),  # a replay of old history
    # the operator's choice: exits gated like entries, or for longer
    (Side.SELL, 301_000, {"max_exit_age_ms": 300_000}, Reason.TRADE_TOO_OLD),
    (Side.SELL, 7 * HOUR_MS, {"max_exit_age_ms": 12 * HOUR_MS}, None),
    (Side.BUY, 7 * HOUR_MS, {"max_exit_age_ms": 12 * HOUR_MS}, Reason.TRADE_TOO_OLD),
    # a venue time not known is not judged stale, either side
    (Side.SELL, NOW_MS, {}, None),
])
def test_the_age_gate_by_side(side: Side, age_ms: int, knobs: dict[str, int], reason: Reason | None) -> None:
    got = trade_gate(trade(side=side, venue_time_ms=NOW_MS - age_ms), market(), policy(**knobs))
    assert (got[0] if got is not None else None) is reason


def test_an_exit_too_old_says_which_limit() -> None:
    got = trade_gate(trade(side=Side.SELL, venue_time_ms=NOW_MS - 7 * HOUR_MS), market(), policy())
    assert got is not None and got[0] is Reason.TRADE_TOO_OLD
    assert "25200.0s" in got[1] and "21600.0s" in got[1] and "exit" in got[1]


def test_an_old_exit_in_a_closed_market_is_still_market_closed() -> None:
    got = trade_gate(trade(side=Side.SELL, venue_time_ms=NOW_MS - HOUR_MS), market(closed=True), policy())
    assert got is not None and got[0] is Reason.MARKET_CLOSED


@pytest.mark.parametrize("age_ms", [2_000, 6 * MIN_MS, 90 * MIN_MS])
def test_the_leaders_close_after_an_outage_sells_what_the_copy_bought(age_ms: int) -> None:
    """The copy bought 62.5 shares ($25 at 0.40); the leader's close of its 250 comes 6 or 90 minutes late: the
    follower sells all 62.5, as it would have on time (it sold nothing, skipped TRADE_TOO_OLD, before)."""
    f = follower()
    close = trade(side=Side.SELL, size=D("250"), price=D("0.55"), venue_time_ms=NOW_MS - age_ms)
    [d] = route(close, [f], market(), {f.follower_wallet_id: state(held_size=D("62.5"))}, D("250"), policy())
    assert isinstance(d, OrderIntent) and (d.side, d.size) == (Side.SELL, D("62.50"))


@pytest.mark.parametrize(("held", "leader_before", "reason"), [
    (D(0), D("250"), Reason.NOTHING_HELD),  # the follower holds nothing: nothing to exit
    (D("62.5"), None, Reason.LEADER_POSITION_UNKNOWN),  # never seen buying: the shares are not this leader's copies
])
def test_an_old_exit_the_follower_did_not_copy_sells_nothing(held: Decimal, leader_before: Decimal | None,
                                                             reason: Reason) -> None:
    f = follower()
    close = trade(side=Side.SELL, size=D("250"), venue_time_ms=NOW_MS - HOUR_MS)
    [d] = route(close, [f], market(), {f.follower_wallet_id: state(held_size=held)}, leader_before, policy())
    assert isinstance(d, Skip) and d.reason is reason


def test_an_old_exit_routed_after_a_newer_entry_sizes_as_a_young_one() -> None:
    """Leader: BUY 250 at t0 (copied: 62.5 shares), SELL 250 at t1 (RTDS missed it), BUY 250 at t2 (copied: 62.5
    more; the leader's record is 500). The poller then brings the SELL of t1: the leader sold half of what the router
    saw it hold, so the follower sells half of its 125, 62.5, and keeps the 62.5 the t2 copy bought, which the leader
    still holds. A young SELL routed so gets the same size; one 20 minutes old must too (it was skipped before, and
    the follower kept the t0 copy the leader had left)."""
    f = follower()
    held = {f.follower_wallet_id: state(held_size=D("125"))}
    young = trade(side=Side.SELL, size=D("250"), venue_time_ms=NOW_MS - 2_000)
    old = trade(side=Side.SELL, size=D("250"), venue_time_ms=NOW_MS - 20 * MIN_MS)
    [a] = route(young, [f], market(), held, D("500"), policy())
    [b] = route(old, [f], market(), held, D("500"), policy())
    assert isinstance(a, OrderIntent) and isinstance(b, OrderIntent)
    assert a.size == b.size == D("62.50")


def test_an_old_entry_is_still_not_copied() -> None:
    f = follower()
    [d] = route(trade(side=Side.BUY, venue_time_ms=NOW_MS - 20 * MIN_MS), [f], market(), {}, None, policy())
    assert isinstance(d, Skip) and d.reason is Reason.TRADE_TOO_OLD
