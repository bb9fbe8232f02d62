"""Keyset pages under writes between two page reads, over the real control gRPC server and PostgreSQL: rows
sharing the sort key of the page's edge row (ties at the boundary), rows inserted with exactly that key, and a
position life that ends and is replaced by a new one (the executor's real booking) while a client pages. Every
row that existed when the first page was read is listed exactly once."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import orjson
import pytest

from services.executor.domain.fill_math import Booking
from services.executor.domain.ticket import INSIDERS, Ticket
from tests.control.conftest import AUTH, FOLLOWER, Stubs, leader, subscription, trigger
from tests.control.support import execute, query
from tests.executor.conftest import make_order
from tests.executor.test_position_lives import _book
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

EDGE = datetime(2026, 11, 20, 10, 0, 0, 123000, tzinfo=UTC)  # a millisecond time, as the executor books fills
Page = Callable[[str], Awaitable[tuple[list[str], str]]]


async def walk(page: Page, between: Callable[[list[str]], Awaitable[None]]) -> list[str]:
    """Every id of the list, page after page, with ``between(ids so far)`` run between every two reads."""
    seen: list[str] = []
    token = ""
    for _ in range(50):
        ids, token = await page(token)
        seen += ids
        if not token:
            return seen
        await between(seen)
    raise AssertionError("the list never ended")


def insert_fill(db_url: str, sub_id: str, fill_id: str, at: datetime) -> None:
    execute(db_url, "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size,"
                    " price, notional_usd, venue, fill_time) VALUES (%s, %s, 'w_456', %s, '123', 'BUY', 10, 0.5, 5,"
                    " 'INSIDERS', %s)", (fill_id, sub_id, "ord_" + fill_id, at))


async def test_fills_sharing_the_edge_time_are_each_listed_once(stubs: Stubs, db_url: str) -> None:
    """Fills of one order share their fill time to the millisecond: a page boundary falls among them, and fills
    booked between two reads at exactly the edge row's time never make an existing one repeat or vanish."""
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()),
                                              metadata=AUTH)
    existing = [f"fill_{c}" for c in "bdfhj"]
    for fid in existing:
        insert_fill(db_url, sub.id, fid, EDGE)
    insert_fill(db_url, sub.id, "fill_a", EDGE - timedelta(microseconds=1))
    insert_fill(db_url, sub.id, "fill_k", EDGE + timedelta(microseconds=1))
    existing += ["fill_a", "fill_k"]

    async def page(token: str) -> tuple[list[str], str]:
        got = await stubs.subs.ListSubscriptionFills(pb.ListSubscriptionFillsRequest(
            id=sub.id, page_size=2, page_token=token), metadata=AUTH)
        return [f.id for f in got.fills], got.next_page_token

    async def booked(seen: list[str]) -> None:  # ids either side of the edge row's, at its very time
        edge = seen[-1]
        for neighbour in (chr(ord(edge[-1]) + 1), chr(ord(edge[-1]) - 1), "0", "z"):
            insert_fill(db_url, sub.id, f"{edge[:-1]}{neighbour}_{len(seen)}", EDGE)

    seen = await walk(page, booked)
    assert len(seen) == len(set(seen)), seen
    assert sorted(existing, reverse=True) == [i for i in seen if i in existing]
    newest_first = [r[0] for r in query(db_url, "SELECT id FROM fills WHERE subscription_id = %s"
                                                " ORDER BY fill_time DESC, id DESC", (sub.id,))]
    assert [i for i in newest_first if i in seen] == seen  # the order of the list, ties by id


async def test_triggers_sharing_the_edge_create_time_are_each_listed_once(stubs: Stubs, db_url: str) -> None:
    """Guard writes a position's exits with one create time: ties at the page boundary, and triggers made between
    two reads with the edge row's very create time."""
    made = [(await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger()), metadata=AUTH)).id
            for _ in range(5)]
    execute(db_url, "UPDATE triggers SET create_time = %s", (EDGE,))

    async def page(token: str) -> tuple[list[str], str]:
        got = await stubs.triggers.ListTriggers(pb.ListTriggersRequest(
            wallet=FOLLOWER, page_size=2, page_token=token), metadata=AUTH)
        return [t.id for t in got.triggers], got.next_page_token

    async def made_between(seen: list[str]) -> None:
        for _ in range(2 if len(seen) <= 4 else 0):  # a list that grows as fast as it is read never ends
            await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger()), metadata=AUTH)
        execute(db_url, "UPDATE triggers SET create_time = %s WHERE create_time > %s", (EDGE, EDGE))

    seen = await walk(page, made_between)
    assert len(seen) == len(set(seen)), seen
    assert [i for i in seen if i in made] == sorted(made)
    assert seen == [r[0] for r in query(db_url, "SELECT id FROM triggers ORDER BY create_time, id")]  # new ones too


async def test_subscriptions_sharing_the_edge_create_time_are_each_listed_once(stubs: Stubs, db_url: str) -> None:
    """Over gRPC and over the REST body (its page cache on): ties at the boundary, and subscriptions created
    between two reads at the edge row's very create time."""
    created = [(await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(i))), metadata=AUTH)).id for i in range(5)]
    execute(db_url, "UPDATE subscriptions SET create_time = %s, version = version + 1", (EDGE,))
    leaders = iter(range(100, 200))

    async def made_between(seen: list[str]) -> None:
        for _ in range(2 if len(seen) <= 4 else 0):  # a list that grows as fast as it is read never ends
            sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
                subscription=subscription(leader_proxy=leader(next(leaders)))), metadata=AUTH)
            execute(db_url, "UPDATE subscriptions SET create_time = %s, version = version + 1 WHERE id = %s",
                    (EDGE, sub.id))

    async def grpc_page(token: str) -> tuple[list[str], str]:
        got = await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(
            follower_proxy=FOLLOWER, page_size=2, page_token=token), metadata=AUTH)
        return [s.id for s in got.subscriptions], got.next_page_token

    async def json_page(token: str) -> tuple[list[str], str]:
        got = await stubs.subs.ListSubscriptionsJson(pb.ListSubscriptionsRequest(
            follower_proxy=FOLLOWER, page_size=2, page_token=token), metadata=AUTH)
        body = orjson.loads(got.data)
        return [s["id"] for s in body["subscriptions"]], body["nextPageToken"]

    for page in (grpc_page, json_page, json_page):  # the second JSON walk reads pages kept by the first
        seen = await walk(page, made_between)
        assert len(seen) == len(set(seen)), seen
        assert [i for i in seen if i in created] == sorted(created)
        assert seen == [r[0] for r in query(db_url, "SELECT id FROM subscriptions ORDER BY create_time, id")]


def _fill(n: int, asset: str, side: int = cpb.SIDE_BUY) -> tuple[Ticket, Booking]:
    """A fill of 10 shares at 0.4 of the follower's ``asset``."""
    order = make_order(n, follower_wallet_id="w_1", follower_proxy=FOLLOWER, subscription_id="sub_1", asset_id=asset,
                       side=side, outcome="Yes")
    return (Ticket(order, INSIDERS, None, time.time_ns()),
            Booking(f"fill_{n}", D(10), D("0.4"), D(4), D(0), True, time.time_ns() // 1_000_000))


async def test_a_life_replaced_while_paging_is_listed_once(stubs: Stubs, db_url: str) -> None:
    """Positions opened by one booking share their open time; between two reads the edge row's life is sold out
    and bought again (the executor moves it to position_history under its key, the new life opens now): the
    ended life is not listed again, and no life of the first read is skipped."""
    assets = [str(10**70 + i) for i in range(6)]
    await _book(db_url, *(_fill(i, assets[i]) for i in range(3)))  # one booking: one open time
    await _book(db_url, *(_fill(i, assets[i]) for i in range(3, 6)))
    before = [r[0] for r in query(db_url, "SELECT id FROM positions ORDER BY opened_at DESC, id DESC")]
    positions = pb_grpc.PositionServiceStub(stubs.channel)
    fills = iter(range(100, 200))

    async def page(token: str) -> tuple[list[str], str]:
        got = await positions.ListPositions(pb.ListPositionsRequest(wallet=FOLLOWER, page_size=2, page_token=token),
                                            metadata=AUTH)
        return [p.id for p in got.positions], got.next_page_token

    async def sold_out_and_bought_again(seen: list[str]) -> None:
        [(asset,)] = query(db_url, "SELECT asset_id FROM positions WHERE id = %s", (seen[-1],))
        await _book(db_url, _fill(next(fills), asset, cpb.SIDE_SELL))
        await _book(db_url, _fill(next(fills), asset))

    seen = await walk(page, sold_out_and_bought_again)
    assert len(seen) == len(set(seen)), seen
    assert [i for i in seen if i in before] == before
    history = {r[0] for r in query(db_url, "SELECT id FROM position_history")}
    assert history and history <= set(before)
