"""Review of bf80d34: a leader SELL made before the subscription last became ACTIVE was still mirrored when the wallet's
position in the token opened before it, whoever opened it; one made before the subscription was created is skipped
now whatever the position.

The wallet's position is one per token: ``positions.opened_at`` says when the wallet first held it, not when the
subscription's copies bought into it. w_1 holds the token from before sub_A existed (sub_B's copy of leader B, or the
follower by hand); sub_A is created at T1 and copies LEADER's newer BUY at T2 onto that position (a split is kept:
sub_A's part is that copy alone); then LEADER's SELL made before T1 arrives late. It sold shares sub_A's copies never
mirrored, and LEADER still holds the 50 the copy mirrors: it must be skipped TRADE_BEFORE_ACTIVE, where it sells
sub_A's copy of the newer BUY (all of it when the router never saw LEADER's pre-follow BUY). With no split kept
(sub_B's copy opened the position alone), the exit is sized on the wallet's shares and sells sub_B's position, whose
leader never left it.
"""

from __future__ import annotations

import time
from decimal import Decimal

import psycopg
import pytest
import redis.asyncio as aioredis

from common import hotindex, reservations
from common.marketstate import MarketInfo, write_market
from services.router.domain.decide import route
from services.router.domain.model import OrderIntent, Reason, Side, Skip
from tests.router.booked import bought
from tests.router.conftest import COND, YES, leader_trade, route_on_redis, subscription
from tests.router.factories import ASSET, NOW_MS, follower, market, policy, state, trade
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.market.v1 import market_pb2 as mpb

D = Decimal
S = 1_000_000_000  # ns
LEADER_B = "0x" + "b7" * 20
ACTIVE_MS = NOW_MS - 1_800_000  # sub_A became active 30 minutes ago
EXIT_MS = NOW_MS - 2_400_000  # the leader's exit, made 10 minutes before that, arrives now
NEW_SUB = follower("sub_A", "w_1", active_since_ms=ACTIVE_MS, created_ms=ACTIVE_MS)  # created then
RESUMED_SUB = follower("sub_A", "w_1", active_since_ms=ACTIVE_MS, created_ms=ACTIVE_MS - 7_200_000)  # resumed then


def _decided(decision: OrderIntent | Skip) -> tuple[str, object]:
    if isinstance(decision, Skip):
        return "skip", decision.reason
    return "sell", decision.size if decision.size is not None else decision.sell_fraction


@pytest.mark.parametrize("other", ["sub_B", ""])  # another subscription's part, or by hand (NO_SUBSCRIPTION)
@pytest.mark.parametrize("leader_before", [D(150), D(50)])  # the pre-follow BUY seen by the router, or not
def test_a_late_exit_does_not_sell_a_copy_added_since_to_a_position_held_from_before(leader_before: Decimal,
                                                                                      other: str) -> None:
    """The wallet held 100 shares of the token from before sub_A was created; sub_A's copy of the leader's newer BUY
    added 62.5 (its part). Sold 41.66 (seen) or all 62.5 (not seen: 100 sold of the 50 recorded reads as a close)."""
    st = state(held_size=D("162.5"), held_parts={other: D(100), "sub_A": D("62.5")})
    opened = {("w_1", ASSET): ACTIVE_MS - 3_600_000}  # the wallet's position opened before sub_A existed
    [got] = route(trade(side=Side.SELL, size=D(100), venue_time_ms=EXIT_MS),
                  [NEW_SUB], market(), {"w_1": st}, leader_before,
                  policy(), opened)
    assert _decided(got) == ("skip", Reason.TRADE_BEFORE_ACTIVE), got


def test_a_late_exit_does_not_sell_another_subscriptions_unsplit_position() -> None:
    """sub_B's copy opened the wallet's position (no split kept) before sub_A was created; sub_A's copies never bought
    any of it (they would have kept a split). The LEADER exit made before sub_A existed sold nothing sub_A holds."""
    st = state(held_size=D(100), opened_by="sub_B")
    opened = {("w_1", ASSET): ACTIVE_MS - 3_600_000}
    [got] = route(trade(side=Side.SELL, size=D(100), venue_time_ms=EXIT_MS),
                  [NEW_SUB], market(), {"w_1": st}, D(150), policy(),
                  opened)
    assert _decided(got) == ("skip", Reason.TRADE_BEFORE_ACTIVE), got


def test_a_late_exit_still_sells_the_subscriptions_own_position_from_before_a_pause() -> None:
    """Control (passes before and after the fix): sub_A's own copy opened the position before its pause; the leader's
    exit made during the pause is mirrored after the resume."""
    st = state(held_size=D("62.5"), opened_by="sub_A")
    opened = {("w_1", ASSET): ACTIVE_MS - 3_600_000}
    [got] = route(trade(side=Side.SELL, size=D(100), venue_time_ms=EXIT_MS),
                  [RESUMED_SUB], market(), {"w_1": st}, D(100), policy(),
                  opened)
    assert _decided(got) == ("sell", D("62.5")), got


def _at(tid: str, side: int, size: str, venue_ns: int) -> mpb.LeaderTradeEvent:
    ev = leader_trade(tid, side=side, size=size)
    ev.venue_time_ms, ev.received_time_ns = venue_ns // 1_000_000, venue_ns + S
    return ev


@pytest.mark.integration
@pytest.mark.parametrize("seen", [True, False])
async def test_routed_a_late_exit_does_not_sell_a_copy_added_to_a_position_held_from_before(
        db_url: str, redis_url: str, r: aioredis.Redis, seen: bool) -> None:
    """Real PostgreSQL and Redis: sub_B's copy of leader B opened w_1's position at T0 (100 shares); sub_A is created
    at T1; LEADER buys 50 at T2, copied and filled (62.5 shares, the split kept); LEADER's SELL of 100, made between
    T0 and T1, arrives."""
    now = time.time_ns()
    t0, t1, t2, ts = now - 3000 * S, now - 2000 * S, now - 1000 * S, now - 2500 * S
    await write_market(r, MarketInfo(YES, COND, D("0.01"), D("5"), updated_ms=t0 // 1_000_000))
    await r.set(f"tt:book:{YES}", "{}")
    await bought(db_url, "co_b", "sub_B", "100", "0.5")
    with psycopg.connect(db_url, autocommit=True) as conn:  # booked at T0
        conn.execute("UPDATE positions SET opened_at = to_timestamp(%s)", (t0 / S,))
    if seen:  # the router saw LEADER's BUY before sub_A existed (nobody copied it)
        await route_on_redis(r, redis_url, db_url, [_at("lt_pre", cpb.SIDE_BUY, "100", t0)], now_ns=t0 + S,
                             batched=False)
    sub_a = subscription("sub_A", "w_1")
    sub_a.active_time.FromNanoseconds(t1)
    sub_a.create_time.FromNanoseconds(t1)
    await hotindex.upsert(r, sub_a)
    routed = await route_on_redis(r, redis_url, db_url, [_at("lt_buy", cpb.SIDE_BUY, "50", t2)], now_ns=t2 + S,
                                  batched=False)
    [copy] = routed[-1].orders
    await bought(db_url, copy.client_order_id, "sub_A", "62.5", "0.4")
    await reservations.release(r, copy.client_order_id)
    with psycopg.connect(db_url) as conn:
        [(size, split)] = conn.execute("SELECT size, subscription_shares FROM positions").fetchall()
    assert size == D("162.5") and set(split) == {"sub_A", "sub_B"}
    routed = await route_on_redis(r, redis_url, db_url, [_at("lt_exit", cpb.SIDE_SELL, "100", ts)], now_ns=now,
                                  batched=False)
    exit_ = routed[-1]
    assert exit_.trade.id == "lt_exit"
    assert [(o.subscription_id, o.size) for o in exit_.orders] == []
    assert [(s.subscription_id, s.reason) for s in exit_.skips] == [("sub_A", "TRADE_BEFORE_ACTIVE")]
