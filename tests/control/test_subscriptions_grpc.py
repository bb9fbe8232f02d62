"""Every subscription RPC and every error status, over real gRPC, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from services.control.app import start
from services.control.config import Settings
from tests.control.conftest import AUTH, FOLLOWER, LEADER, Stubs, leader, stubs_for, subscription, trigger
from tests.control.support import count, execute, expect, expect_unknown_ids, query
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

pytestmark = pytest.mark.integration

INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


async def create(stubs: Stubs, **overrides: object) -> spb.Subscription:
    return await stubs.subs.CreateSubscription(
        pb.CreateSubscriptionRequest(subscription=subscription(**overrides)), metadata=AUTH)


async def test_create_and_get(stubs: Stubs, db_url: str) -> None:
    created = await create(stubs, leader_proxy=LEADER.upper().replace("0X", "0x"), mode=cpb.EXECUTION_MODE_LIVE)
    assert created.id.startswith("sub_") and len(created.id) == 30
    assert created.state == spb.SUBSCRIPTION_STATE_ACTIVE and created.mode == cpb.EXECUTION_MODE_LIVE
    assert created.leader_proxy == LEADER and created.follower_proxy == FOLLOWER
    assert created.sizing.min_order_usd == "1" and created.filters.max_slippage_bps == 200
    assert created.perf.applied_multiplier == "1" and created.stats.copied == 0
    assert created.stats.exposure_usd == "0" and created.create_time == created.update_time
    assert created.create_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC) - timedelta(minutes=1)
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=created.id), metadata=AUTH)
    assert got == created
    [(before, after, entity)] = query(db_url, "SELECT before, after, entity_type FROM audit_log")
    assert before is None and entity == "subscription"
    assert after["id"] == created.id and after["sizing"]["ratio"] == "0.05" and "stats" not in after


async def test_invalid_create_names_the_field_and_writes_nothing(stubs: Stubs, db_url: str) -> None:
    bad = subscription()
    bad.sizing.ratio = "abc"
    await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=bad), metadata=AUTH),
                 INVALID, 'sizing.ratio: must be a decimal > 0, got "abc"')
    await expect(stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(), metadata=AUTH),
                 INVALID, "followerUserId: required")
    assert count(db_url, "subscriptions") == 0 and count(db_url, "audit_log") == 0


async def test_live_is_refused_without_the_insiders_api(settings_factory: Callable[..., Settings],
                                                        db_url: str) -> None:
    running = await start(settings_factory(insiders_api_url=""))
    stubs = stubs_for(running.port)
    try:
        await expect(create(stubs, mode=cpb.EXECUTION_MODE_LIVE), PRECONDITION, "mode: EXECUTION_MODE_LIVE")
        paper = await create(stubs)
        await expect(stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
            id=paper.id, subscription=spb.Subscription(mode=cpb.EXECUTION_MODE_LIVE)), metadata=AUTH),
            PRECONDITION, "mode: EXECUTION_MODE_LIVE")
        execute(db_url, "UPDATE subscriptions SET mode = 'LIVE', state = 'PAUSED' WHERE id = %s", (paper.id,))
        await expect(stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=paper.id), metadata=AUTH),
                     PRECONDITION, "mode: EXECUTION_MODE_LIVE")
        assert count(db_url, "subscriptions") == 1
    finally:
        await stubs.channel.close()
        await running.stop()


async def test_one_active_subscription_per_wallet_and_leader(stubs: Stubs, db_url: str) -> None:
    first = await create(stubs)
    message = await expect(create(stubs), grpc.StatusCode.ALREADY_EXISTS, "an ACTIVE subscription")
    assert first.id in message and LEADER in message
    await create(stubs, leader_proxy=leader(1))  # other leader: fine
    await create(stubs, follower_wallet_id="w_other")  # other wallet: fine
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=first.id), metadata=AUTH)
    second = await create(stubs)  # the paused one is not ACTIVE
    await expect(stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=first.id), metadata=AUTH),
                 grpc.StatusCode.ALREADY_EXISTS, f"an ACTIVE subscription ({second.id})")
    assert count(db_url, "subscriptions", "state = 'ACTIVE'") == 3


async def test_concurrent_creates_make_one_subscription(stubs: Stubs, db_url: str) -> None:
    results = await asyncio.gather(*(create(stubs) for _ in range(6)), return_exceptions=True)
    ok = [r for r in results if isinstance(r, spb.Subscription)]
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == 1 and len(errors) == 5
    assert {e.code() for e in errors} == {grpc.StatusCode.ALREADY_EXISTS}
    assert count(db_url, "subscriptions") == 1 and count(db_url, "audit_log") == 1


async def test_get_errors(stubs: Stubs) -> None:
    await expect(stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id="sub_nope"), metadata=AUTH),
                 grpc.StatusCode.NOT_FOUND, "subscription sub_nope not found")
    await expect(stubs.subs.GetSubscription(pb.GetSubscriptionRequest(), metadata=AUTH), INVALID, "id: required")


LOOKUPS: list[Callable[[Stubs, str], Awaitable[object]]] = [
    lambda s, i: s.subs.GetSubscription(pb.GetSubscriptionRequest(id=i), metadata=AUTH),
    lambda s, i: s.subs.ListSubscriptionFills(pb.ListSubscriptionFillsRequest(id=i), metadata=AUTH),
    lambda s, i: s.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=i, subscription=spb.Subscription(label="x")), metadata=AUTH),
    lambda s, i: s.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=i), metadata=AUTH),
    lambda s, i: s.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=i), metadata=AUTH),
    lambda s, i: s.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=i), metadata=AUTH),
]


@pytest.mark.parametrize("call", LOOKUPS)
async def test_an_id_that_cannot_be_an_id_is_not_found(stubs: Stubs, call: Callable[[Stubs, str], Awaitable[object]],
                                                       db_url: str) -> None:
    await create(stubs)
    await expect_unknown_ids(lambda i: call(stubs, i), "subscription", "s", "sub nope", db_url)


async def test_list_filters_and_validation(stubs: Stubs) -> None:
    a = await create(stubs)
    b = await create(stubs, leader_proxy=leader(2))
    await create(stubs, follower_proxy="0x" + "9" * 40, follower_wallet_id="w_9")
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=b.id), metadata=AUTH)

    async def ids(**kw: object) -> list[str]:
        page = await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(**kw), metadata=AUTH)  # type: ignore[arg-type]
        return [s.id for s in page.subscriptions]

    assert await ids(follower_proxy=FOLLOWER.upper().replace("0X", "0x")) == [a.id, b.id]
    assert await ids(follower_proxy=FOLLOWER, leader_proxy=leader(2)) == [b.id]
    assert await ids(follower_proxy=FOLLOWER, state=spb.SUBSCRIPTION_STATE_ACTIVE) == [a.id]
    assert await ids(follower_proxy=FOLLOWER, state=spb.SUBSCRIPTION_STATE_STOPPED) == []
    for request, prefix in [
        (pb.ListSubscriptionsRequest(), "followerProxy: required"),
        (pb.ListSubscriptionsRequest(follower_proxy="0x12"), "followerProxy: must be 0x + 40 hex"),
        (pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, leader_proxy="nope"), "leaderProxy: must be"),
        (pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, page_size=501), "pageSize: must be between 1 and 500"),
        (pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, page_size=-1), "pageSize: must be between"),
        (pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, state=42), "state: unknown value 42"),  # type: ignore[arg-type]
        (pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, page_token="garbage"), "pageToken: invalid page token"),
    ]:
        await expect(stubs.subs.ListSubscriptions(request, metadata=AUTH), INVALID, prefix)


async def test_pagination_is_stable_across_inserts(stubs: Stubs) -> None:
    made = [(await create(stubs, leader_proxy=leader(i))).id for i in range(7)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stubs.subs.ListSubscriptions(
            pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, page_size=3, page_token=token), metadata=AUTH)
        seen += [s.id for s in page.subscriptions]
        pages += 1
        if pages == 1:  # a row created mid-listing lands after the ones already there
            made.append((await create(stubs, leader_proxy=leader(100))).id)
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert seen == made and pages == 3
    other = await expect(stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(
        follower_proxy=FOLLOWER, leader_proxy=leader(1), page_token=token), metadata=AUTH), INVALID, "pageToken:")
    assert "other filters" in other
    default = await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER), metadata=AUTH)
    assert len(default.subscriptions) == 8 and default.next_page_token == ""


async def test_patch_changes_present_fields_only(stubs: Stubs, db_url: str) -> None:
    sub = await create(stubs, filters=spb.Filters(market_allowlist=["a", "b"], min_price="0.1"))
    patched = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(sizing=spb.Sizing(ratio="0.1"), label="renamed",
                                                 leader_proxy=sub.leader_proxy)), metadata=AUTH)
    assert patched.sizing.ratio == "0.1" and patched.label == "renamed"
    assert patched.sizing.max_order_usd == "250" and list(patched.filters.market_allowlist) == ["a", "b"]
    assert patched.update_time.ToDatetime() > sub.update_time.ToDatetime()
    assert patched.create_time == sub.create_time
    cleared = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(), update_mask=FieldMask(paths=["filters.marketAllowlist"])),
        metadata=AUTH)
    assert list(cleared.filters.market_allowlist) == [] and cleared.filters.min_price == "0.1"
    audits = count(db_url, "audit_log", "method = 'UpdateSubscription'")
    same = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(label="renamed")), metadata=AUTH)
    assert same == cleared and count(db_url, "audit_log", "method = 'UpdateSubscription'") == audits == 2
    [(version,)] = query(db_url, "SELECT version FROM subscriptions WHERE id = %s", (sub.id,))
    assert version == 3


@pytest.mark.parametrize(("patch", "mask", "prefix"), [
    (spb.Subscription(leader_proxy="0x" + "1" * 40), (), "leaderProxy: cannot change"),
    (spb.Subscription(follower_user_id="u_other"), (), "followerUserId: cannot change"),
    (spb.Subscription(follower_wallet_id="w_other"), (), "followerWalletId: cannot change"),
    (spb.Subscription(follower_proxy="0x" + "2" * 40), (), "followerProxy: cannot change"),
    (spb.Subscription(sizing=spb.Sizing(ratio="-1")), (), "sizing.ratio: must be a decimal > 0"),
    (spb.Subscription(filters=spb.Filters(max_price="1.5")), (), "filters.maxPrice: must be a decimal in (0, 1)"),
    (spb.Subscription(), ("filters.nope",), 'updateMask: unknown field "filters.nope"'),
])
async def test_bad_patch_writes_nothing(stubs: Stubs, db_url: str, patch: spb.Subscription,
                                        mask: tuple[str, ...], prefix: str) -> None:
    sub = await create(stubs)
    await expect(stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=patch, update_mask=FieldMask(paths=list(mask))), metadata=AUTH), INVALID, prefix)
    assert await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH) == sub
    assert count(db_url, "audit_log") == 1


async def test_patch_errors(stubs: Stubs) -> None:
    await expect(stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id="sub_nope", subscription=spb.Subscription(label="x")), metadata=AUTH), grpc.StatusCode.NOT_FOUND)
    sub = await create(stubs)
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
    await expect(stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(label="x")), metadata=AUTH), PRECONDITION,
        f"subscription {sub.id} is SUBSCRIPTION_STATE_STOPPED: cannot update it")


async def test_pause_resume(stubs: Stubs, db_url: str) -> None:
    sub = await create(stubs)
    paused = await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id, reason="vacation"),
                                                metadata=AUTH)
    assert paused.state == spb.SUBSCRIPTION_STATE_PAUSED and paused.paused_reason == "vacation"
    again = await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id, reason="other"), metadata=AUTH)
    assert again == paused
    resumed = await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert resumed.state == spb.SUBSCRIPTION_STATE_ACTIVE and resumed.paused_reason == ""
    assert await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH) == resumed
    default = await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert default.paused_reason == "PAUSED_BY_USER"
    methods = [m for (m,) in query(db_url, "SELECT method FROM audit_log ORDER BY id")]
    assert methods == ["CreateSubscription", "PauseSubscription", "ResumeSubscription", "PauseSubscription"]
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)
    stopped = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert (stopped.state, stopped.paused_reason) == (spb.SUBSCRIPTION_STATE_STOPPED, "")  # stopped, not paused
    await expect(stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id), metadata=AUTH),
                 PRECONDITION, f"subscription {sub.id} is SUBSCRIPTION_STATE_STOPPED: cannot pause it")
    await expect(stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=sub.id), metadata=AUTH),
                 PRECONDITION, f"subscription {sub.id} is SUBSCRIPTION_STATE_STOPPED: cannot resume it")
    await expect(stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id="sub_x"), metadata=AUTH),
                 grpc.StatusCode.NOT_FOUND)
    await expect(stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id="sub_x"), metadata=AUTH),
                 grpc.StatusCode.NOT_FOUND)
    await expect(stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=sub.id, reason="a\x01"),
                                              metadata=AUTH), INVALID, "reason: must not contain control")


async def test_delete_stops_and_cancels_open_triggers(stubs: Stubs, db_url: str) -> None:
    sub = await create(stubs)
    other = await create(stubs, leader_proxy=leader(3))
    mine = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(subscription_id=sub.id)),
                                              metadata=AUTH)
    fired = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(subscription_id=sub.id)),
                                               metadata=AUTH)
    execute(db_url, "UPDATE triggers SET state = 'FIRED' WHERE id = %s", (fired.id,))
    theirs = await stubs.triggers.CreateTrigger(pb.CreateTriggerRequest(trigger=trigger(subscription_id=other.id)),
                                                metadata=AUTH)
    assert await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id),
                                               metadata=AUTH) == pb.DeleteSubscriptionResponse()
    stopped = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert stopped.state == spb.SUBSCRIPTION_STATE_STOPPED

    async def state(tid: str) -> tuple[int, str]:
        t = await stubs.triggers.GetTrigger(pb.GetTriggerRequest(id=tid), metadata=AUTH)
        return t.state, t.state_reason

    assert await state(mine.id) == (tpb.TRIGGER_STATE_CANCELLED, "SUBSCRIPTION_STOPPED")
    assert await state(fired.id) == (tpb.TRIGGER_STATE_FIRED, "")
    assert await state(theirs.id) == (tpb.TRIGGER_STATE_ARMED, "")
    assert count(db_url, "audit_log", "method = 'DeleteSubscription'") == 2  # subscription + its trigger
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=sub.id), metadata=AUTH)  # idempotent
    assert count(db_url, "audit_log", "method = 'DeleteSubscription'") == 2
    [(stop_time,)] = query(db_url, "SELECT stop_time FROM subscriptions WHERE id = %s", (sub.id,))
    assert stop_time is not None
    await expect(stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id="sub_x"), metadata=AUTH),
                 grpc.StatusCode.NOT_FOUND)
    await create(stubs)  # the pair is free again


async def test_stats_are_read_live(stubs: Stubs, db_url: str) -> None:
    sub = await create(stubs)
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, skipped, exposure_usd,"
                    " realized_pnl_usd, unrealized_pnl_usd) VALUES (%s, 12, 3, 410.20, 18.40, -2.10)", (sub.id,))
    got = await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH)
    assert got.stats == spb.Stats(copied=12, skipped=3, exposure_usd="410.2", realized_pnl_usd="18.4",
                                  unrealized_pnl_usd="-2.1")
    listed = await stubs.subs.ListSubscriptions(pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER), metadata=AUTH)
    assert listed.subscriptions[0].stats.copied == 12


async def test_fills_newest_first_with_pages(stubs: Stubs, db_url: str) -> None:
    sub = await create(stubs)
    base = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    for i in range(5):
        execute(db_url,
                "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, leader_trade_id, leader_tx_hash,"
                " asset_id, condition_id, outcome, side, size, price, notional_usd, venue, fill_time,"
                " leader_trade_time, copy_latency_ms) VALUES (%s, %s, 'w_456', %s, 'lt_1', '0xabc', '123', '0xfa',"
                " 'No', %s, 33.33, 0.031, 1.03, 'INSIDERS', %s, %s, %s)",
                (f"fill_{i}", sub.id, f"ord_{i}", "BUY" if i % 2 == 0 else "SELL", base + timedelta(seconds=i),
                 base if i == 0 else None, 3.1 if i == 0 else None))
    execute(db_url, "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size,"
                    " price, notional_usd, venue, fill_time) VALUES ('fill_x', 'sub_other', 'w', 'o', '1', 'BUY',"
                    " 1, 0.5, 0.5, 'PAPER', now())")
    # a BUY's fee booked alone (size 0) is no fill of the list: a Fill shows no fee
    execute(db_url, "INSERT INTO fills (id, subscription_id, follower_wallet_id, order_id, asset_id, side, size,"
                    " price, notional_usd, venue, fill_time, fee_shares) VALUES ('fill_fee', %s, 'w_456', 'ord_4',"
                    " '123', 'BUY', 0, 0.031, 0, 'INSIDERS', %s, 0.4)", (sub.id, base + timedelta(seconds=9)))
    first = await stubs.subs.ListSubscriptionFills(pb.ListSubscriptionFillsRequest(id=sub.id, page_size=2),
                                                   metadata=AUTH)
    assert [f.id for f in first.fills] == ["fill_4", "fill_3"] and first.next_page_token
    rest = await stubs.subs.ListSubscriptionFills(pb.ListSubscriptionFillsRequest(
        id=sub.id, page_size=3, page_token=first.next_page_token), metadata=AUTH)
    assert [f.id for f in rest.fills] == ["fill_2", "fill_1", "fill_0"] and rest.next_page_token == ""
    oldest = rest.fills[-1]
    assert (oldest.side, oldest.venue, oldest.size, oldest.price, oldest.notional_usd, oldest.copy_latency_ms) == (
        cpb.SIDE_BUY, cpb.VENUE_INSIDERS, "33.33", "0.031", "1.03", "3.1")
    assert oldest.leader_trade_time.ToDatetime(tzinfo=UTC) == base and oldest.subscription_id == sub.id
    assert rest.fills[0].copy_latency_ms == "" and not rest.fills[0].HasField("leader_trade_time")
    await expect(stubs.subs.ListSubscriptionFills(pb.ListSubscriptionFillsRequest(id="sub_nope"), metadata=AUTH),
                 grpc.StatusCode.NOT_FOUND)
    await expect(stubs.subs.ListSubscriptionFills(pb.ListSubscriptionFillsRequest(
        id=sub.id, page_token="zzz"), metadata=AUTH), INVALID, "pageToken: invalid page token")


async def test_rows_without_config_pb_are_read_from_the_jsonb_mirror(stubs: Stubs, db_url: str) -> None:
    sub = await create(stubs, exits=spb.Exits(take_profit_pct="40", ladder=[spb.LadderStep(gain_pct="20",
                                                                                         sell_fraction="0.5")]))
    execute(db_url, "UPDATE subscriptions SET config_pb = NULL")  # as written before migration 0006
    assert await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub.id), metadata=AUTH) == sub
    [(sizing, exits)] = query(db_url, "SELECT sizing, exits FROM subscriptions")
    assert sizing == {"mode": "SIZING_MODE_PROPORTIONAL", "ratio": "0.05", "minOrderUsd": "1", "maxOrderUsd": "250"}
    assert exits["ladder"] == [{"gainPct": "20", "sellFraction": "0.5"}]
    patched = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=sub.id, subscription=spb.Subscription(label="x")), metadata=AUTH)
    assert patched.exits == sub.exits
    assert count(db_url, "subscriptions", "config_pb IS NOT NULL") == 1
