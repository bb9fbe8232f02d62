"""PositionService over gRPC on real PostgreSQL and Redis: current and ended lives of a wallet or a
subscription, newest first, with marks from ingest's books, PnL, resolution, redemption and market slug;
filters, pagination across both tables, and the refusals."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import grpc
import psycopg
import pytest

from common.marketstate import BookSnapshot, MarketInfo, write_book, write_market
from services.control.positions import RedisMarketReads
from tests.control.conftest import AUTH, FOLLOWER, Stubs, subscription
from tests.control.support import expect
from tests.position_rows import ASSET, CONDITION, T0, insert, life
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc
from tradingtools.control.v1 import position_pb2 as ppb

pytestmark = pytest.mark.integration

OTHER = "0x" + "ab" * 20
ASSETS = [str(10**70 + i) for i in range(6)]
UPDATED_MS = 1_795_000_000_123


def positions_stub(stubs: Stubs) -> pb_grpc.PositionServiceStub:
    return pb_grpc.PositionServiceStub(stubs.channel)


async def book(redis: Any, asset: str, bid: str | None, ask: str | None, last: str | None = None) -> None:
    bids = ((Decimal(bid), Decimal(100)),) if bid else ()
    asks = ((Decimal(ask), Decimal(100)),) if ask else ()
    await write_book(redis, BookSnapshot(asset, CONDITION, bids, asks, Decimal("0.01"), UPDATED_MS, UPDATED_MS,
                                         Decimal(last) if last else None))


def resolution(db_url: str, condition: str, winner: str, slug: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO market_resolutions (condition_id, asset_ids, winning_asset_id, market_slug, source,"
                     " confirmed, received_at, payload) VALUES (%s, %s, %s, %s, 'CLOB_REST', true, %s, '')",
                     (condition, [winner, ASSET], winner, slug, T0))


def redemption(db_url: str, condition: str, state: str, **over: Any) -> None:
    row = {"tx": "0x" + "7" * 64, "attempts": 2, "reason": "", "at": T0 + timedelta(hours=3)} | over
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO redemptions (follower_wallet_id, condition_id, wallet, redemption_key, state, shares,"
                     " tx_hash, attempts, reason, updated_at) VALUES ('w_456', %s, %s, %s, %s, 10, %s, %s, %s, %s)",
                     (condition, FOLLOWER, f"rk_{condition}", state, row["tx"], row["attempts"], row["reason"],
                      row["at"]))


async def test_a_wallets_positions_with_marks_pnl_resolution_and_redemption(
        stubs: Stubs, db_url: str, redis_client: Any) -> None:
    """Every kind of life of one wallet, each field as the contract names it."""
    won_cond, lost_cond = "0x" + "1" * 64, "0x" + "2" * 64
    copy = insert(db_url, "positions", life(1, asset_id=ASSETS[0], subscription_id=None,
                                            realized_pnl_usd=Decimal("7.5"), realized_base_usd=Decimal("5")))
    external = insert(db_url, "positions", life(
        2, asset_id=ASSETS[1], origin="EXTERNAL", size=Decimal(50), avg_price=Decimal("0.2"), cost_usd=Decimal(10),
        venue_shares=Decimal(50), reconciled_at=T0 + timedelta(hours=1)))
    won = insert(db_url, "positions", life(
        3, asset_id=ASSETS[2], condition_id=won_cond, state="RESOLVED_WON", size=Decimal(0),
        resolved_shares=Decimal(40), payout_per_share=Decimal(1), winning_asset_id=ASSETS[2],
        realized_pnl_usd=Decimal("30"), cost_usd=Decimal(0), resolved_cost_usd=Decimal(10),
        resolved_at=T0 + timedelta(hours=2),
        closed_at=T0 + timedelta(hours=2)))
    lost = insert(db_url, "position_history", life(
        0, asset_id=ASSETS[3], condition_id=lost_cond, state="RESOLVED_LOST", size=Decimal(0),
        resolved_shares=Decimal(20), payout_per_share=Decimal(0), winning_asset_id=ASSETS[4],
        realized_pnl_usd=Decimal(-8), resolved_at=T0 + timedelta(hours=2), closed_at=T0 + timedelta(hours=2)))
    insert(db_url, "positions", life(5, asset_id=ASSETS[5], wallet=OTHER))  # another wallet's
    resolution(db_url, won_cond, ASSETS[2], "will-it-rain")
    redemption(db_url, won_cond, "SUBMITTED")
    redemption(db_url, lost_cond, "FAILED", reason="NOTHING_TO_REDEEM")  # not shown: the life lost
    await book(redis_client, ASSETS[0], "0.04", "0.042")
    await book(redis_client, ASSETS[1], "0.3", None)
    await book(redis_client, ASSETS[2], "0.99", "1")  # an ended life is not marked
    await write_market(redis_client, MarketInfo(ASSETS[0], CONDITION, Decimal("0.01"), Decimal(5),
                                                market_slug="btc-above-100k"))

    page = await positions_stub(stubs).ListPositions(pb.ListPositionsRequest(wallet=FOLLOWER.upper()
                                                                             .replace("0X", "0x")), metadata=AUTH)
    assert [p.id for p in page.positions] == [won["id"], external["id"], copy["id"], lost["id"]]
    assert page.next_page_token == ""
    by_id = {p.id: p for p in page.positions}

    c = by_id[copy["id"]]
    assert (c.wallet, c.follower_wallet_id, c.subscription_id, c.asset_id, c.condition_id, c.outcome) == (
        FOLLOWER, "w_456", "", ASSETS[0], CONDITION, "No")
    assert (c.venue, c.origin, c.state) == (1, ppb.POSITION_ORIGIN_COPY, ppb.POSITION_STATE_OPEN)
    assert (c.shares, c.avg_cost, c.cost_usd, c.realized_pnl_usd) == ("714.28", "0.0349", "24.93", "2.5")
    assert c.mark == "0.041" and c.mark_time.ToMilliseconds() == UPDATED_MS  # the mid, as guard values shares
    assert c.unrealized_pnl_usd == "4.35548"  # 714.28 × 0.041 − 24.93
    assert c.market_slug == "btc-above-100k"  # from ingest's market info
    assert c.HasField("resolution") and c.resolution == ppb.Resolution()
    assert c.HasField("redemption") and c.redemption == ppb.Redemption()
    assert c.venue_shares == "" and not c.HasField("reconcile_time") and not c.HasField("close_time")
    assert c.open_time.ToDatetime().replace(tzinfo=T0.tzinfo) == copy["opened_at"]
    assert c.update_time.ToDatetime().replace(tzinfo=T0.tzinfo) == copy["updated_at"]

    e = by_id[external["id"]]
    assert e.origin == ppb.POSITION_ORIGIN_EXTERNAL and e.shares == "50" and e.venue_shares == "50"
    assert e.reconcile_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(hours=1)
    assert e.mark == "0.3" and e.unrealized_pnl_usd == "5"  # only a bid: the bid
    assert e.market_slug == ""

    w = by_id[won["id"]]
    assert w.state == ppb.POSITION_STATE_RESOLVED_WON and w.shares == "40"  # held when it resolved
    assert w.cost_usd == "10" and w.avg_cost == "0.0349"  # what those shares cost (settlement zeroes cost_usd)
    assert w.mark == "" and not w.HasField("mark_time") and w.unrealized_pnl_usd == "0"
    assert w.realized_pnl_usd == "30" and w.market_slug == "will-it-rain"
    assert (w.resolution.winning_asset_id, w.resolution.payout_per_share) == (ASSETS[2], "1")
    assert w.resolution.resolve_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(hours=2)
    assert (w.redemption.state, w.redemption.tx_hash, w.redemption.attempts) == (
        ppb.REDEMPTION_STATE_SUBMITTED, "0x" + "7" * 64, 2)
    assert w.redemption.update_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(hours=3)
    assert w.close_time.ToDatetime().replace(tzinfo=T0.tzinfo) == T0 + timedelta(hours=2)

    lo = by_id[lost["id"]]
    assert lo.state == ppb.POSITION_STATE_RESOLVED_LOST and lo.realized_pnl_usd == "-8"
    assert lo.cost_usd == "0.698"  # resolved before its cost was kept: 20 shares x 0.0349
    assert (lo.resolution.winning_asset_id, lo.resolution.payout_per_share) == (ASSETS[4], "0")
    assert lo.redemption == ppb.Redemption()

    only_open = await positions_stub(stubs).ListPositions(pb.ListPositionsRequest(
        wallet=FOLLOWER, state=ppb.POSITION_STATE_OPEN), metadata=AUTH)
    assert [p.id for p in only_open.positions] == [external["id"], copy["id"]]


async def test_pages_run_across_current_and_ended_lives_newest_first(stubs: Stubs, db_url: str) -> None:
    """Lives of one token alternate between the tables (each new life moves the last one to history), and
    two lives may open at the same instant: pages follow (open time, id) exactly, none repeated or skipped."""
    rows = [insert(db_url, "position_history", life(i, state="CLOSED", size=Decimal(0))) for i in range(5)]
    rows.append(insert(db_url, "position_history", life(4, id="pos_zz", state="CLOSED", size=Decimal(0))))
    rows += [insert(db_url, "positions", life(i, asset_id=ASSETS[i - 2])) for i in (2, 4, 7)]
    expected = [r["id"] for r in sorted(rows, key=lambda r: (r["opened_at"], r["id"]), reverse=True)]
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await positions_stub(stubs).ListPositions(pb.ListPositionsRequest(
            wallet=FOLLOWER, page_size=2, page_token=token), metadata=AUTH)
        seen += [p.id for p in page.positions]
        token = page.next_page_token
        if not token:
            break
    assert seen == expected and len(seen) == 9

    closed = await positions_stub(stubs).ListPositions(pb.ListPositionsRequest(
        wallet=FOLLOWER, state=ppb.POSITION_STATE_CLOSED, page_size=4), metadata=AUTH)
    states = {r["id"]: r["state"] for r in rows}
    assert [p.id for p in closed.positions] == [i for i in expected if states[i] == "CLOSED"][:4]
    unfiltered = await positions_stub(stubs).ListPositions(pb.ListPositionsRequest(wallet=FOLLOWER, page_size=1),
                                                           metadata=AUTH)
    await expect(positions_stub(stubs).ListPositions(pb.ListPositionsRequest(  # a token of another list
        wallet=FOLLOWER, state=ppb.POSITION_STATE_CLOSED, page_token=unfiltered.next_page_token), metadata=AUTH),
        grpc.StatusCode.INVALID_ARGUMENT, "pageToken:")


async def test_a_subscriptions_positions(stubs: Stubs, db_url: str) -> None:
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    mine = insert(db_url, "positions", life(1, asset_id=ASSETS[0], subscription_id=sub.id))
    ended = insert(db_url, "position_history", life(0, asset_id=ASSETS[0], subscription_id=sub.id, state="CLOSED",
                                                    size=Decimal(0), realized_pnl_usd=Decimal("-1.25")))
    insert(db_url, "positions", life(2, asset_id=ASSETS[1], origin="MANUAL"))  # the wallet's, not the copy's
    page = await positions_stub(stubs).ListSubscriptionPositions(pb.ListSubscriptionPositionsRequest(
        id=sub.id), metadata=AUTH)
    assert [(p.id, p.subscription_id) for p in page.positions] == [(mine["id"], sub.id), (ended["id"], sub.id)]
    assert page.positions[1].realized_pnl_usd == "-1.25" and page.positions[1].shares == "0"
    first = await positions_stub(stubs).ListSubscriptionPositions(pb.ListSubscriptionPositionsRequest(
        id=sub.id, page_size=1), metadata=AUTH)
    rest = await positions_stub(stubs).ListSubscriptionPositions(pb.ListSubscriptionPositionsRequest(
        id=sub.id, page_size=1, page_token=first.next_page_token), metadata=AUTH)
    assert [p.id for p in (*first.positions, *rest.positions)] == [mine["id"], ended["id"]]
    assert rest.next_page_token == ""


@pytest.mark.parametrize(("request_", "code", "prefix"), [
    (pb.ListPositionsRequest(), grpc.StatusCode.INVALID_ARGUMENT, "wallet: required"),
    (pb.ListPositionsRequest(wallet="0x1234"), grpc.StatusCode.INVALID_ARGUMENT, "wallet: must be 0x + 40 hex"),
    (pb.ListPositionsRequest(wallet=FOLLOWER, page_size=501), grpc.StatusCode.INVALID_ARGUMENT, "pageSize:"),
    (pb.ListPositionsRequest(wallet=FOLLOWER, page_size=-1), grpc.StatusCode.INVALID_ARGUMENT, "pageSize:"),
    (pb.ListPositionsRequest(wallet=FOLLOWER, state=99), grpc.StatusCode.INVALID_ARGUMENT, "state:"),  # type: ignore[arg-type]
    (pb.ListPositionsRequest(wallet=FOLLOWER, page_token="nope"), grpc.StatusCode.INVALID_ARGUMENT, "pageToken:"),
    (pb.ListSubscriptionPositionsRequest(id="sub_01JD3X6Q8Z5V7K2M4N6P8R0T2V"), grpc.StatusCode.NOT_FOUND,
     "subscription sub_01JD3X6Q8Z5V7K2M4N6P8R0T2V not found"),
    (pb.ListSubscriptionPositionsRequest(id="sub_x", page_size=1000), grpc.StatusCode.INVALID_ARGUMENT, "pageSize:"),
])
async def test_refusals(stubs: Stubs, request_: Any, code: grpc.StatusCode, prefix: str) -> None:
    stub = positions_stub(stubs)
    call = stub.ListPositions if isinstance(request_, pb.ListPositionsRequest) else stub.ListSubscriptionPositions
    await expect(call(request_, metadata=AUTH), code, prefix)


async def test_a_token_is_required(stubs: Stubs) -> None:
    await expect(positions_stub(stubs).ListPositions(pb.ListPositionsRequest(wallet=FOLLOWER)),
                 grpc.StatusCode.UNAUTHENTICATED)


@pytest.mark.parametrize(("bid", "ask", "last", "mark"), [
    ("0.4", "0.5", None, Decimal("0.45")),
    ("0.4", None, "0.9", Decimal("0.4")),
    (None, "0.5", "0.45", Decimal("0.45")),
    (None, "0.5", None, None),
])
async def test_marks_are_guards(redis_client: Any, bid: str | None, ask: str | None, last: str | None,
                                mark: Decimal | None) -> None:
    """The mark is the price guard's PnL values open shares at: mid, else bid, else last trade."""
    await book(redis_client, ASSET, bid, ask, last)
    marks, _ = await RedisMarketReads(redis_client).read([ASSET], [])
    assert marks.get(ASSET) == (None if mark is None else (mark, UPDATED_MS))


async def test_without_redis_positions_are_served_unmarked(redis_client: Any) -> None:
    """Redis unreachable: no marks, no slugs, no error (the positions themselves are PostgreSQL's)."""
    import redis.asyncio as aioredis

    from common.embedded import free_port

    dead = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0", decode_responses=True, socket_connect_timeout=0.5)
    try:
        assert await RedisMarketReads(dead).read([ASSET], [ASSET]) == ({}, {})
    finally:
        await dead.aclose()
    await redis_client.set(f"tt:book:{ASSET}", "{not json")
    assert await RedisMarketReads(redis_client).read([ASSET], []) == ({}, {})
