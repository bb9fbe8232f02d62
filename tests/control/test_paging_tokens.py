"""Page tokens across the five lists over the real control gRPC server and PostgreSQL: a genuine token is good
for its own list with its own filters only. One of follower A's lists given with follower B's filter (another
wallet, another subscription), or to another list, is refused naming ``pageToken``, whatever the route, so a
token never reads another follower's rows; a token altered by one character is refused too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import grpc
import pytest

from tests.control.conftest import AUTH, FOLLOWER, Stubs, subscription, trigger
from tests.control.support import execute, expect
from tests.position_rows import insert, life
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import control_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

OTHER = "0x" + "ab" * 20
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
Lister = Callable[[str, str], Awaitable[Any]]  # (owner, page token) -> response with next_page_token


async def _rows_of(stubs: Stubs, db_url: str, wallet: str) -> str:
    """Two rows in each list of ``wallet``; returns its subscription's id."""
    wid = "w_" + wallet[-4:]
    sub = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription(
        follower_proxy=wallet, follower_wallet_id=wid)), metadata=AUTH)
    await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription(
        follower_proxy=wallet, follower_wallet_id=wid, leader_proxy="0x" + "cd" * 20)), metadata=AUTH)
    for i in range(2):
        await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(
            wallet=wallet, follower_wallet_id=wid)), metadata=AUTH)
        execute(db_url, "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size,"
                        " price, notional_usd, venue, fill_time) VALUES (%s, %s, 'w_456', 'o', '1', 'BUY', 1, 0.5,"
                        " 0.5, 'PAPER', %s)", (f"fill_{sub.id}_{i}", sub.id, T0 + timedelta(seconds=i)))
        insert(db_url, "position_history", life(i, wallet=wallet, subscription_id=sub.id, state="CLOSED",
                                                size=Decimal(0)))
    return sub.id


def _listers(stubs: Stubs) -> dict[str, Lister]:
    positions = pb_grpc.PositionServiceStub(stubs.channel)
    return {
        "subscriptions": lambda owner, token: stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(
            follower_proxy=owner, page_size=1, page_token=token), metadata=AUTH),
        "subscriptions_json": lambda owner, token: stubs.subs.ListSubscriptionsJson(pb.ListSubscriptionsRequest(
            follower_proxy=owner, page_size=1, page_token=token), metadata=AUTH),
        "triggers": lambda owner, token: stubs.triggers.ListTriggers(pb.ListTriggersRequest(
            wallet=owner, page_size=1, page_token=token), metadata=AUTH),
        "positions": lambda owner, token: positions.ListPositions(pb.ListPositionsRequest(
            wallet=owner, page_size=1, page_token=token), metadata=AUTH),
        "fills": lambda owner, token: stubs.subs.ListSubscriptionFills(pb.ListSubscriptionFillsRequest(
            id=owner, page_size=1, page_token=token), metadata=AUTH),
        "sub_positions": lambda owner, token: positions.ListSubscriptionPositions(
            pb.ListSubscriptionPositionsRequest(id=owner, page_size=1, page_token=token), metadata=AUTH),
    }


async def test_a_token_reads_its_own_list_with_its_own_filters_only(stubs: Stubs, db_url: str) -> None:
    subs = {FOLLOWER: await _rows_of(stubs, db_url, FOLLOWER), OTHER: await _rows_of(stubs, db_url, OTHER)}
    listers = _listers(stubs)

    def owner(name: str, wallet: str) -> str:
        return subs[wallet] if name in ("fills", "sub_positions") else wallet

    tokens = {}
    for name, lister in listers.items():
        if name == "subscriptions_json":
            continue  # the same list as "subscriptions" (its body carries the same token)
        first = await lister(owner(name, FOLLOWER), "")
        tokens[name] = first.next_page_token
        assert tokens[name], name
        second = await lister(owner(name, FOLLOWER), tokens[name])  # good for its own list
        assert second.next_page_token == "", name

    for name, lister in listers.items():
        own = tokens["subscriptions" if name == "subscriptions_json" else name]
        await expect(lister(owner(name, OTHER), own), grpc.StatusCode.INVALID_ARGUMENT,
                     "pageToken: page token belongs to a list with other filters")
        for token in tokens.values():
            if token != own:
                await expect(lister(owner(name, FOLLOWER), token), grpc.StatusCode.INVALID_ARGUMENT,
                             "pageToken: page token belongs to another list")
        payload, _, mac = own.partition(".")
        for altered in (payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + mac,
                        payload + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"), payload, own[:-3],
                        own + "=", f"{payload}.{mac}{mac}"):
            await expect(lister(owner(name, FOLLOWER), altered), grpc.StatusCode.INVALID_ARGUMENT,
                         "pageToken: invalid page token")
