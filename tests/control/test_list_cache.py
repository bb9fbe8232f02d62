"""The per-(id, version) byte cache behind the 500-row list: wire assembly (pure) and freshness
against writers the service does not see (real gRPC, PostgreSQL and Redis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common import protowire
from services.control import list_cache
from services.control.codec import subscription_from_row
from services.control.db import Database, create_pool
from tests.control.conftest import AUTH, FOLLOWER, Stubs, leader, subscription
from tests.control.support import execute, use_cases_racing_a_write
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb


def _full(sub_id: str = "sub_1", label: str = "x", paused: str = "") -> spb.Subscription:
    sub = subscription(label=label)
    sub.id = sub_id
    sub.state = spb.SUBSCRIPTION_STATE_ACTIVE
    sub.paused_reason = paused
    sub.create_time.FromSeconds(1_700_000_000)
    sub.update_time.FromSeconds(1_700_000_001)
    sub.stats.CopyFrom(spb.Stats(copied=12, skipped=3, exposure_usd="410.2", realized_pnl_usd="18.4",
                                 unrealized_pnl_usd="-2.1"))
    return sub


@pytest.mark.parametrize("value", [1, 127, 128, 300, 16_383, 16_384, 2**32, 2**63 - 1, -1, -(2**63)])
def test_varint_matches_protobuf(value: int) -> None:
    encoded = spb.Stats(copied=value).SerializeToString()
    assert encoded == b"\x08" + protowire.varint(value)
    assert protowire.read_varint(encoded, 1) == (value % (1 << 64), len(encoded))
    assert protowire.varint(0) == b"\x00"


@pytest.mark.parametrize("paused", ["", "PAUSED_BY_USER"])
def test_parts_and_stats_reassemble_to_the_serialized_message(paused: str) -> None:
    sub = _full(paused=paused)
    head, tail = list_cache.parts_of(sub)
    assert head + list_cache.stats_field(sub.stats) + tail == sub.SerializeToString()
    assert spb.Subscription.FromString(head + tail).HasField("stats") is False


@given(st.lists(st.tuples(st.text(max_size=300), st.integers(0, 2**40), st.text(max_size=20)), max_size=8))
def test_page_bytes_is_the_serialized_response(rows: list[tuple[str, int, str]]) -> None:
    subs = []
    for i, (label, copied, reason) in enumerate(rows):
        sub = _full(f"sub_{i}", label=label, paused=reason)
        sub.stats.copied = copied
        subs.append(sub)
    data = list_cache.page_bytes((list_cache.parts_of(s), list_cache.stats_field(s.stats)) for s in subs)
    expected = pb.ListSubscriptionsResponse(subscriptions=subs)
    assert data == expected.SerializeToString()
    assert pb.ListSubscriptionsResponse.FromString(data) == expected


def test_cache_hits_only_at_the_same_version_and_evicts_least_recent() -> None:
    cache = list_cache.SubscriptionBytesCache(max_entries=2)
    a, b, c = _full("a"), _full("b"), _full("c")
    cache.put(a, 1)
    cache.put(b, 1)
    assert cache.get("a", 1) == list_cache.parts_of(a)  # a is now the most recent
    assert cache.get("a", 2) is None and cache.get("zz", 1) is None
    cache.put(c, 1)  # evicts b
    assert cache.get("b", 1) is None and cache.get("c", 1) is not None and len(cache) == 2
    changed = _full("a", label="changed")
    cache.put(changed, 3)
    cache.put(a, 2)  # an older read never replaces a newer one
    assert cache.get("a", 3) == list_cache.parts_of(changed) and cache.get("a", 2) is None


async def _list(stubs: Stubs, **kwargs: object) -> pb.ListSubscriptionsResponse:
    request = pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, page_size=500)
    for key, value in kwargs.items():
        setattr(request, key, value)
    return await stubs.subs.ListSubscriptions(request, metadata=AUTH)


@pytest.mark.integration
async def test_list_sees_changes_made_behind_the_cache(stubs: Stubs, db_url: str) -> None:
    subs = [await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(i), label=f"s{i}")), metadata=AUTH) for i in range(1, 4)]
    first = await _list(stubs)
    assert [s.id for s in first.subscriptions] == [s.id for s in subs]
    assert list(first.subscriptions) == subs  # cached copies plus live stats read back equal to the creates
    # Another writer (a second replica, an operator) changes a row and bumps its version.
    execute(db_url, "UPDATE subscriptions SET label = 'renamed', version = version + 1 WHERE id = %s", (subs[0].id,))
    # The executor and router write stats, which are never cached.
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, skipped, exposure_usd,"
            " realized_pnl_usd, unrealized_pnl_usd, updated_at) VALUES (%s, 7, 2, 12.50, -1.250, 0, now())",
            (subs[1].id,))
    second = await _list(stubs)
    assert second.subscriptions[0].label == "renamed"
    assert second.subscriptions[1].stats == spb.Stats(copied=7, skipped=2, exposure_usd="12.5",
                                                       realized_pnl_usd="-1.25", unrealized_pnl_usd="0")
    assert second.subscriptions[2] == subs[2]


@pytest.mark.integration
async def test_list_follows_every_mutation_through_the_api(stubs: Stubs) -> None:
    a = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription()), metadata=AUTH)
    b = await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(9))), metadata=AUTH)
    await _list(stubs)  # warm the cache
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=a.id, reason="why"), metadata=AUTH)
    patched = await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=b.id, subscription=spb.Subscription(label="new label")), metadata=AUTH)
    listed = await _list(stubs)
    assert listed.subscriptions[0].state == spb.SUBSCRIPTION_STATE_PAUSED
    assert listed.subscriptions[0].paused_reason == "why"
    assert listed.subscriptions[1] == patched
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=a.id), metadata=AUTH)
    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=b.id), metadata=AUTH)
    listed = await _list(stubs)
    assert listed.subscriptions[0].state == spb.SUBSCRIPTION_STATE_STOPPED
    assert [s.id for s in (await _list(stubs, state=spb.SUBSCRIPTION_STATE_ACTIVE)).subscriptions] == [b.id]


@pytest.mark.integration
async def test_cached_page_equals_decoding_every_row(stubs: Stubs, db_url: str) -> None:
    for i in range(1, 8):
        await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
            subscription=subscription(leader_proxy=leader(i), label=f"s{i}")), metadata=AUTH)
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, exposure_usd, updated_at)"
            " SELECT id, 3, 1.5, now() FROM subscriptions ORDER BY create_time LIMIT 2")
    first_page = await _list(stubs, page_size=4)
    cached = await _list(stubs)
    pool = await create_pool(db_url, max_size=1, acquire_timeout_s=2, statement_timeout_s=2)
    try:
        from services.control import sub_repo

        async with Database(pool).read() as conn:
            rows = await sub_repo.list_page(conn, follower_proxy=FOLLOWER, leader_proxy="", state="", after=None,
                                            limit=500)
    finally:
        await pool.close()
    assert list(cached.subscriptions) == [subscription_from_row(r) for r in rows]
    assert cached.SerializeToString() == pb.ListSubscriptionsResponse(
        subscriptions=[subscription_from_row(r) for r in rows]).SerializeToString()
    assert list(first_page.subscriptions) == list(cached.subscriptions)[:4] and first_page.next_page_token
    rest = await _list(stubs, page_token=first_page.next_page_token)
    assert list(rest.subscriptions) == list(cached.subscriptions)[4:] and not rest.next_page_token


@pytest.mark.integration
async def test_a_row_changed_between_the_two_page_queries_is_read_as_one_snapshot(
        stubs: Stubs, db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    subs = [await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(
        subscription=subscription(leader_proxy=leader(i), label=f"s{i}")), metadata=AUTH) for i in range(1, 4)]
    async with use_cases_racing_a_write(db_url, redis_url, monkeypatch, subs[1].id) as uc:
        page = await uc.list_page(follower_proxy=FOLLOWER, leader_proxy="", state=0, page_size=2, page_token="")
    assert [s.label for s in page.subscriptions] == ["s1", "raced"] and page.next_page_token
    assert page.subscriptions[0] == subs[0]
