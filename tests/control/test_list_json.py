"""The REST list body built by control (ListSubscriptionsJson → google.api.HttpBody): parity with
the proto3 JSON Envoy's transcoder printed for ListSubscriptionsResponse (pure), and freshness of its
per-(id, version) cache over the real gRPC server, PostgreSQL and Redis."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, TypeVar

import grpc
import orjson
import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from services.control import list_json
from tests.control.conftest import AUTH, FOLLOWER, INTERNAL_AUTH, Stubs, leader, subscription
from tests.control.support import execute, rpc_error, use_cases_racing_a_write
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import control_pb2 as pb
from tradingtools.control.v1 import subscription_pb2 as spb

M = TypeVar("M", bound=Message)
RECORDED = Path(__file__).parent / "data" / "envoy_list_pages.jsonl"
TS_MAX_S = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second proto3 JSON can print


def transcoder_dict(msg: Message) -> dict[str, Any]:
    """What the transcoder prints (print options of envoy/envoy.yaml.tmpl), as a JSON object."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=True)


# Any text a proto3 string can hold (valid UTF-8: no lone surrogates), control characters included.
TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: TEXT,
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
}


@st.composite
def message_of(draw: st.DrawFn, descriptor: Descriptor | Any, into: M) -> M:
    """Fill ``into`` field by field from its descriptor: every field with presence may be unset, set to
    its zero value or to anything else; lists may be empty; enums take every value (UNSPECIFIED too)."""
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Timestamp":
            if draw(st.booleans()):
                ts = getattr(into, field.name)
                ts.seconds = draw(st.integers(0, TS_MAX_S))
                ts.nanos = draw(st.sampled_from([0, 1_000_000, 123_456_000, 999_999_999, 5]))
            continue
        if field.is_repeated:
            if field.message_type is not None:
                for _ in range(draw(st.integers(0, 2))):
                    draw(message_of(field.message_type, getattr(into, field.name).add()))
            else:
                getattr(into, field.name).extend(draw(st.lists(_value(field), max_size=3)))
            continue
        if field.has_presence and draw(st.booleans()):
            continue  # left unset
        if field.message_type is not None:
            child = getattr(into, field.name)
            child.SetInParent()
            draw(message_of(field.message_type, child))
        else:
            setattr(into, field.name, draw(_value(field)))
    return into


def _value(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    if field.enum_type is not None:
        return st.sampled_from([v.number for v in field.enum_type.values])
    return _SCALARS[field.type]


def subscriptions() -> st.SearchStrategy[spb.Subscription]:
    """Any Subscription the model can hold."""
    return st.builds(spb.Subscription).flatmap(lambda s: message_of(spb.Subscription.DESCRIPTOR, s))


def responses() -> st.SearchStrategy[pb.ListSubscriptionsResponse]:
    return st.builds(lambda subs, token: pb.ListSubscriptionsResponse(subscriptions=subs, next_page_token=token),
                     st.lists(subscriptions(), max_size=4), st.sampled_from(["", "eyJrIjoic3VicyJ9", "x<y>\"z"]))


@settings(max_examples=300, deadline=None)
@given(responses())
def test_page_json_is_the_transcoders_json_of_the_response(response: pb.ListSubscriptionsResponse) -> None:
    body = list_json.response_json(response)
    assert orjson.loads(body) == transcoder_dict(response)
    # Assembled from cached fragments + stats, it is byte for byte the whole message printed at once.
    assert body == list_json.message_json(response)
    if all(s.HasField("stats") for s in response.subscriptions):  # the cached path's one-join assembly
        rows = [(list_json.parts_of(s), list_json.stats_json(s.stats)) for s in response.subscriptions]
        assert list_json.page_json_of_rows(rows, response.next_page_token) == body


@settings(max_examples=100, deadline=None)
@given(subscriptions(), subscriptions())
def test_cached_parts_with_any_stats_print_the_subscription(sub: spb.Subscription, other: spb.Subscription) -> None:
    sub.stats.CopyFrom(other.stats)
    sub.stats.SetInParent()
    item = list_json.item(list_json.parts_of(sub), list_json.stats_json(sub.stats))
    assert orjson.loads(item) == transcoder_dict(sub)
    assert list(orjson.loads(item)) == [f.json_name for f in spb.Subscription.DESCRIPTOR.fields
                                        if f.json_name in transcoder_dict(sub)]  # declaration order


def test_pages_envoy_printed_are_reproduced_byte_for_byte() -> None:
    """Pages recorded from Envoy's transcoder (before the route moved to ListSubscriptionsJson)."""
    lines = RECORDED.read_bytes().splitlines()
    assert len(lines) >= 5
    for line in lines:
        response = pb.ListSubscriptionsResponse()
        json_format.Parse(line, response)
        assert list_json.response_json(response) == line


@pytest.mark.parametrize(
    ("label", "printed"),
    [("a<b>c", b'"a\\u003cb\\u003ec"'), ("\u65e5 & \u2602 \U0001f600", '"\u65e5 & \u2602 \U0001f600"'.encode()),
     ('q"\\/', b'"q\\"\\\\/"'), ("", b'""')],
)
def test_strings_are_escaped_like_the_transcoder(label: str, printed: bytes) -> None:
    sub = spb.Subscription(label=label, stats=spb.Stats())
    assert b'"label":' + printed + b"," in list_json.response_json(pb.ListSubscriptionsResponse(subscriptions=[sub]))


def test_empty_page_and_unset_stats() -> None:
    assert list_json.response_json(pb.ListSubscriptionsResponse()) == b'{"subscriptions":[],"nextPageToken":""}'
    sub = spb.Subscription(id="sub_1")
    assert "stats" not in orjson.loads(list_json.response_json(pb.ListSubscriptionsResponse(subscriptions=[sub])))[
        "subscriptions"][0]


def test_json_cache_hits_only_at_the_same_version() -> None:
    cache = list_json.SubscriptionJsonCache(max_entries=1)
    a = spb.Subscription(id="a", label="one")
    cache.put(a, 2)
    assert cache.get("a", 2) == list_json.parts_of(a) and cache.get("a", 3) is None
    cache.put(spb.Subscription(id="a", label="older"), 1)  # an older read never replaces a newer one
    assert cache.get("a", 2) == list_json.parts_of(a)
    cache.put(spb.Subscription(id="b"), 1)  # evicts a
    assert cache.get("a", 2) is None and len(cache) == 1


# ---- over the real gRPC server -------------------------------------------------------------------

async def _json_page(stubs: Stubs, **kwargs: Any) -> dict[str, Any]:
    request = pb.ListSubscriptionsRequest(**{"follower_proxy": FOLLOWER, "page_size": 500, **kwargs})
    body = await stubs.subs.ListSubscriptionsJson(request, metadata=AUTH)
    assert body.content_type == "application/json"
    return dict(orjson.loads(body.data))


async def _grpc_page(stubs: Stubs, **kwargs: Any) -> dict[str, Any]:
    request = pb.ListSubscriptionsRequest(**{"follower_proxy": FOLLOWER, "page_size": 500, **kwargs})
    return transcoder_dict(await stubs.subs.ListSubscriptions(request, metadata=AUTH))


async def _get(stubs: Stubs, sub_id: str) -> dict[str, Any]:
    return transcoder_dict(await stubs.subs.GetSubscription(pb.GetSubscriptionRequest(id=sub_id), metadata=AUTH))


async def _create(stubs: Stubs, **overrides: Any) -> spb.Subscription:
    return await stubs.subs.CreateSubscription(pb.CreateSubscriptionRequest(subscription=subscription(**overrides)),
                                               metadata=AUTH)


VARIED: list[dict[str, Any]] = [
    {"sizing": spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25")},
    {"sizing": spb.Sizing(mode=spb.SIZING_MODE_PERCENT_OF_BALANCE, percent_of_balance="2", min_order_usd="1"),
     "label": "\u65e5\u672c <b> & \"q\" \u2602", "mode": cpb.EXECUTION_MODE_LIVE,
     "follower_wallet_id": "w_live"},  # one execution mode per wallet
    {"sizing": spb.Sizing(mode=spb.SIZING_MODE_PROPORTIONAL, ratio="0.05", min_order_usd="1", max_order_usd="250"),
     "filters": spb.Filters(min_price="0.05", max_price="0.95", min_leader_trade_usd="50", market_allowlist=["a"],
                            market_denylist=["btc-updown-5m"], copy_sells=False, max_slippage_bps=0),
     "risk": spb.Risk(max_market_exposure_usd="500", max_total_exposure_usd="2000", max_open_positions=0,
                      daily_loss_limit_usd="0"),
     "exits": spb.Exits(take_profit_pct="40", stop_loss_pct="25", trailing_stop_pct="0",
                        ladder=[spb.LadderStep(gain_pct="20", sell_fraction="0.5")]),
     "perf": spb.Perf(loss_stop_usd="400", profit_scale_at_usd="1000", profit_scale_multiplier="1.5")},
    {"label": ""},
]


@pytest.mark.integration
async def test_json_list_is_the_grpc_list_printed(stubs: Stubs, db_url: str) -> None:
    subs = [await _create(stubs, leader_proxy=leader(i), **over) for i, over in enumerate(VARIED, start=1)]
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=subs[1].id, reason="holiday \u2602"),
                                       metadata=AUTH)
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=subs[2].id), metadata=AUTH)
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, skipped, exposure_usd,"
            " realized_pnl_usd, unrealized_pnl_usd, updated_at) VALUES (%s, 9007199254740993, 2, 12.50, -1.250,"
            " 0.001, now())", (subs[0].id,))
    for _ in range(2):  # cold, then from the cache
        page = await _json_page(stubs)
        assert page == await _grpc_page(stubs)
        assert [s["id"] for s in page["subscriptions"]] == [s.id for s in subs] and page["nextPageToken"] == ""
        assert page["subscriptions"][0]["stats"]["copied"] == "9007199254740993"
        assert page["subscriptions"] == [await _get(stubs, s.id) for s in subs]
    for state in (spb.SUBSCRIPTION_STATE_PAUSED, spb.SUBSCRIPTION_STATE_STOPPED, spb.SUBSCRIPTION_STATE_ACTIVE):
        assert await _json_page(stubs, state=state) == await _grpc_page(stubs, state=state)
    assert await _json_page(stubs, leader_proxy=leader(2)) == await _grpc_page(stubs, leader_proxy=leader(2))
    token, seen = "", []
    while True:  # pages of 3: same pages, same tokens as the gRPC list
        page = await _json_page(stubs, page_size=3, page_token=token)
        assert page == await _grpc_page(stubs, page_size=3, page_token=token)
        seen += [s["id"] for s in page["subscriptions"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == [s.id for s in subs]


@pytest.mark.integration
async def test_json_list_follows_every_mutation(stubs: Stubs, db_url: str) -> None:
    a = await _create(stubs)
    b = await _create(stubs, leader_proxy=leader(9))

    async def assert_fresh() -> dict[str, Any]:
        page = await _json_page(stubs)
        assert page["subscriptions"] == [await _get(stubs, a.id), await _get(stubs, b.id)]
        return page

    await assert_fresh()  # warm the cache
    await stubs.subs.UpdateSubscription(pb.UpdateSubscriptionRequest(
        id=b.id, subscription=spb.Subscription(label="new label", sizing=spb.Sizing(ratio="0.2"))), metadata=AUTH)
    page = await assert_fresh()
    assert page["subscriptions"][1]["label"] == "new label" and page["subscriptions"][1]["sizing"]["ratio"] == "0.2"
    await stubs.subs.PauseSubscription(pb.PauseSubscriptionRequest(id=a.id, reason="why"), metadata=AUTH)
    assert (await assert_fresh())["subscriptions"][0]["pausedReason"] == "why"
    await stubs.subs.ResumeSubscription(pb.ResumeSubscriptionRequest(id=a.id), metadata=AUTH)
    assert (await assert_fresh())["subscriptions"][0]["state"] == "SUBSCRIPTION_STATE_ACTIVE"
    await stubs.internal.ApplyPerfAction(pb.ApplyPerfActionRequest(
        id=b.id, action=pb.PERF_ACTION_SCALE, multiplier="1.5", reason="profit", decision_id="d1"),
        metadata=INTERNAL_AUTH)
    assert (await assert_fresh())["subscriptions"][1]["perf"]["appliedMultiplier"] == "1.5"
    await stubs.subs.DeleteSubscription(pb.DeleteSubscriptionRequest(id=a.id), metadata=AUTH)
    assert (await assert_fresh())["subscriptions"][0]["state"] == "SUBSCRIPTION_STATE_STOPPED"
    # Another writer bumps the version behind the cache; executor/router write stats (never cached).
    execute(db_url, "UPDATE subscriptions SET label = 'renamed', version = version + 1 WHERE id = %s", (b.id,))
    execute(db_url, "INSERT INTO subscription_stats (subscription_id, copied, exposure_usd, updated_at)"
            " VALUES (%s, 4, 3.5, now())", (a.id,))
    page = await assert_fresh()
    assert page["subscriptions"][1]["label"] == "renamed"
    stats = page["subscriptions"][0]["stats"]
    assert stats["copied"] == "4" and stats["exposureUsd"] == "3.5"


@pytest.mark.integration
@pytest.mark.parametrize(
    "request_fields",
    [{}, {"follower_proxy": "0x12"}, {"follower_proxy": FOLLOWER, "page_size": 501},
     {"follower_proxy": FOLLOWER, "page_size": -1}, {"follower_proxy": FOLLOWER, "page_token": "zzz"},
     {"follower_proxy": FOLLOWER, "state": 7}, {"follower_proxy": FOLLOWER, "leader_proxy": "0xzz"}],
)
async def test_json_list_fails_like_the_grpc_list(stubs: Stubs, request_fields: dict[str, Any]) -> None:
    request = pb.ListSubscriptionsRequest(**request_fields)
    json_err = await rpc_error(stubs.subs.ListSubscriptionsJson(request, metadata=AUTH))
    grpc_err = await rpc_error(stubs.subs.ListSubscriptions(request, metadata=AUTH))
    assert json_err.code() == grpc_err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert json_err.details() == grpc_err.details() and json_err.details()


@pytest.mark.integration
async def test_a_kept_page_is_answered_gzipped_with_its_content_coding_in_the_metadata(stubs: Stubs) -> None:
    await _create(stubs, leader_proxy=leader(1))
    request = pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER, page_size=500)
    wanted = (*AUTH, ("accept-encoding", "deflate"), ("accept-encoding", "gzip"))  # repeated: counts as one list
    replies = []
    for _ in range(2):
        call = stubs.subs.ListSubscriptionsJson(request, metadata=wanted)
        replies.append((await call, dict(await call.initial_metadata())))
    (built, built_md), (kept, kept_md) = replies
    assert "content-encoding" not in built_md
    assert (kept_md["content-encoding"], kept_md["vary"]) == ("gzip", "accept-encoding")
    assert kept.content_type == "application/json" and gzip.decompress(kept.data) == built.data


@pytest.mark.integration
async def test_json_list_needs_a_token(stubs: Stubs) -> None:
    err = await rpc_error(stubs.subs.ListSubscriptionsJson(pb.ListSubscriptionsRequest(follower_proxy=FOLLOWER)))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.integration
async def test_a_row_changed_between_the_two_page_queries_is_printed_from_one_snapshot(
        stubs: Stubs, db_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    subs = [await _create(stubs, leader_proxy=leader(i), label=f"s{i}") for i in range(1, 4)]
    async with use_cases_racing_a_write(db_url, redis_url, monkeypatch, subs[1].id) as uc:
        body = await uc.list_page_json(follower_proxy=FOLLOWER, leader_proxy="", state=0, page_size=2,
                                       page_token="")
    page = orjson.loads(body.data)
    assert [s["label"] for s in page["subscriptions"]] == ["s1", "raced"] and page["nextPageToken"]
    assert page["subscriptions"][0] == transcoder_dict(subs[0])
