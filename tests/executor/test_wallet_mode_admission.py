"""One execution mode per follower wallet, held where orders are admitted: a copy routed in the mode its wallet
left (a PATCH, or a delete and a create in the other mode, after it was routed), or an order of the other venue
than the wallet's open position in its token, is REJECTED at its intent insert, never sent, and its reservation
released; the wallet's position keeps one venue."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from services.executor.domain.settlement import HeldPosition, Resolution, settle
from tests.executor.conftest import ASSET, Harness, make_order, rows
from tests.helpers import eventually
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
MODE_CHANGED, POSITION_IN_OTHER_VENUE = "MODE_CHANGED", "POSITION_IN_OTHER_VENUE"  # refusals of the intent insert
BIDS = [("0.49", "500"), ("0.48", "1000")]
ASKS = [("0.50", "100"), ("0.51", "1000")]
LIVE, PAPER = cpb.EXECUTION_MODE_LIVE, cpb.EXECUTION_MODE_PAPER


def subscription_row(db_url: str, sid: str, wallet: str, mode: str, state: str = "ACTIVE") -> None:
    """A subscription as control stores it (only what the executor reads of it matters here)."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO subscriptions (id, follower_user_id, follower_wallet_id, follower_proxy,"
                     " leader_proxy, state, mode, sizing, filters, risk, exits, perf, create_time, update_time)"
                     " VALUES (%s, 'u_1', %s, %s, %s, %s, %s, '{}', '{}', '{}', '{}', '{}', now(), now())",
                     (sid, wallet, "0x" + "1" * 40, "0x" + sid.encode().hex().ljust(40, "0")[:40], state, mode))


async def _refused(harness: Harness, db_url: str, order: epb.Order, reason: str) -> None:
    """``order`` ends REJECTED ``reason`` without a POST, and its reservation's release is recorded."""
    await harness.route(order)
    end = await eventually(lambda: harness.terminal(order.client_order_id), timeout_s=15)
    assert (end.type, end.reason) == (epb.ORDER_EVENT_TYPE_REJECTED, reason), end
    assert order.client_order_id not in harness.fake.post_counts()
    assert rows(db_url, "SELECT state, reason FROM orders WHERE client_order_id = %s", order.client_order_id) == [
        ("REJECTED", reason)]
    assert rows(db_url, "SELECT count(*) FROM fills WHERE order_id = %s", order.client_order_id) == [(0,)]
    await eventually(lambda: rows(db_url, "SELECT 1 FROM order_pending WHERE client_order_id = %s",
                                  order.client_order_id) == [], timeout_s=15)


async def test_a_copy_routed_before_a_mode_patch_is_refused_and_live_shares_are_booked_live(
        harness: Harness, db_url: str) -> None:
    subscription_row(db_url, "sub_a", "w_1", "LIVE")  # PATCHed from PAPER after the copy below was routed
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()
    paper = make_order(1, client_order_id="co_paper1", subscription_id="sub_a", follower_wallet_id="w_1", mode=PAPER)
    await _refused(harness, db_url, paper, MODE_CHANGED)
    detail = (await harness.terminal("co_paper1")).detail  # type: ignore[union-attr]
    assert "w_1 copies in LIVE now (subscription sub_a)" in detail
    live = make_order(2, client_order_id="co_live1", subscription_id="sub_a", follower_wallet_id="w_1", mode=LIVE,
                      leader_trade_id="lt_2")
    await harness.route(live)
    await eventually(lambda: harness.all_terminal([live]), timeout_s=15)
    assert harness.fake.post_counts().get("co_live1") == 1
    assert {v for v, in rows(db_url, "SELECT venue FROM fills WHERE follower_wallet_id = 'w_1'")} == {"INSIDERS"}
    [(venue, size)] = rows(db_url, "SELECT venue, size FROM positions WHERE follower_wallet_id = 'w_1'")
    assert venue == "INSIDERS" and size > 0
    # an order admitted before a change is never refused afterwards: replayed, it is the stored one
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE subscriptions SET mode = 'PAPER'")
    await harness.route(live)
    await eventually(lambda: harness.executor is not None and harness.executor.admission.duplicates >= 1)
    assert rows(db_url, "SELECT state FROM orders WHERE client_order_id = 'co_live1'") == [("FILLED",)]


async def test_a_copy_of_a_deleted_subscription_is_refused_once_its_wallet_copies_in_the_other_mode(
        harness: Harness, db_url: str) -> None:
    subscription_row(db_url, "sub_a", "w_1", "PAPER", state="STOPPED")  # deleted after the copy was routed
    subscription_row(db_url, "sub_b", "w_1", "LIVE")  # and the wallet subscribed again, LIVE
    subscription_row(db_url, "sub_c", "w_2", "PAPER")
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()
    await _refused(harness, db_url, make_order(1, subscription_id="sub_a", follower_wallet_id="w_1", mode=PAPER),
                   MODE_CHANGED)
    # a wallet in the order's mode, and one without a subscription, are not concerned
    fine = [make_order(2, subscription_id="sub_c", follower_wallet_id="w_2", mode=PAPER),
            make_order(3, subscription_id="sub_x", follower_wallet_id="w_3", mode=PAPER)]
    await harness.route(*fine)
    await eventually(lambda: harness.all_terminal(fine), timeout_s=15)
    assert rows(db_url, "SELECT follower_wallet_id, venue FROM positions WHERE size > 0 ORDER BY 1") == [
        ("w_2", "PAPER"), ("w_3", "PAPER")]


async def test_paper_orders_are_refused_beside_real_shares_and_never_redeemed_as_real(
        harness: Harness, db_url: str) -> None:
    """The EXTERNAL position reconciliation books for shares the venue holds (venue INSIDERS): a PAPER BUY of the
    token would have been booked into it, and settlement would have asked the Insiders API to redeem the paper
    shares as real ones."""
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO positions (follower_wallet_id, asset_id, wallet, size, avg_price, cost_usd, id,"
                     " state, origin, venue, venue_shares, reconciled_at) VALUES ('w_1', %s, '0xp', 10, 0.5, 5,"
                     " 'pos_ext1', 'OPEN', 'EXTERNAL', 'INSIDERS', 10, now())", (ASSET,))
    await harness.set_book(ASSET, BIDS, ASKS)
    await harness.start_executor()
    paper = make_order(1, subscription_id="sub_p", follower_wallet_id="w_1", mode=PAPER)
    await _refused(harness, db_url, paper, POSITION_IN_OTHER_VENUE)
    assert "holds 10 shares of this token on the INSIDERS venue" in (
        await harness.terminal(paper.client_order_id)).detail  # type: ignore[union-attr]
    [(venue, size, cost)] = rows(db_url, "SELECT venue, size, cost_usd FROM positions WHERE follower_wallet_id = 'w_1'")
    assert (venue, size) == ("INSIDERS", Decimal(10))
    _settled, plans = settle(Resolution("0x" + "c" * 64, (ASSET, "other"), ASSET),
                             [HeldPosition("w_1", "0xp", ASSET, venue, None, size, cost)])
    assert sum((p.shares for p in plans), Decimal(0)) == Decimal(10)
    # a LIVE order of the wallet adds to the real shares
    live = make_order(2, subscription_id="sub_p", follower_wallet_id="w_1", mode=LIVE, leader_trade_id="lt_2")
    await harness.route(live)
    await eventually(lambda: harness.all_terminal([live]), timeout_s=15)
    [(venue, size)] = rows(db_url, "SELECT venue, size FROM positions WHERE follower_wallet_id = 'w_1'")
    assert venue == "INSIDERS" and size > 10
