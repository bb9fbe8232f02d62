"""A RoutedTrade too big for one message is split into parts and joined back (pure)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from common.routed import expand, shared_fields
from services.router.outbound import MAX_PART_BYTES, _split_messages, join_parts, split_routed
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

TRADE = mpb.LeaderTradeEvent(id="lt_big", tx_hash="0x" + "ab" * 32, wallet="0x" + "f5" * 20, asset_id="7" * 77,
                             condition_id="0x" + "c" * 64, side=cpb.SIDE_BUY, price="0.4", size="250",
                             title="Will it rain?" * 3)


COMMON = epb.Order(origin=epb.ORDER_ORIGIN_COPY, asset_id=TRADE.asset_id, condition_id=TRADE.condition_id,
                   outcome="Yes", side=TRADE.side, order_type=epb.ORDER_TYPE_FAK, reference_price="0.4",
                   tick_size="0.01", min_order_size="5", leader_trade_id=TRADE.id, leader_tx_hash=TRADE.tx_hash,
                   leader_venue_time_ms=1_790_000_000_000, received_time_ns=1_790_000_000_000_000_000,
                   routed_time_ns=1_790_000_000_000_100_000,
                   trace=cpb.TraceContext(traceparent="00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"))


def routed(orders: int, skips: int = 0, *, compact: bool = False) -> epb.RoutedTrade:
    """A RoutedTrade as the router writes it (``compact``: the shared fields once, in ``common``) or as
    entries written before ``common`` existed (whole orders)."""
    out = epb.RoutedTrade(trade=TRADE)
    if compact:
        out.common.CopyFrom(COMMON)
    for i in range(orders):
        o = out.orders.add(client_order_id=f"co_{i:030d}", subscription_id=f"sub_{i:026d}", follower_user_id=f"u_{i}",
                           follower_wallet_id=f"w_{i}", follower_proxy="0x" + f"{i:040x}", amount_usd="25",
                           max_slippage_bps=200, mode=cpb.EXECUTION_MODE_LIVE)
        if not compact:
            o.MergeFrom(COMMON)
    for i in range(skips):
        out.skips.add(subscription_id=f"sub_s{i}", follower_wallet_id=f"w_s{i}", reason="PRICE_ABOVE_MAX",
                      detail="leader price 0.4 above max 0.3")
    return out


@pytest.mark.parametrize(("orders", "skips", "max_bytes", "parts"), [
    (0, 0, 1000, 1),        # nothing to split
    (3, 2, 100_000, 1),     # fits: the payload itself, untouched
    (100, 0, 4_000, 15),    # orders only
    (0, 100, 4_000, 2),     # skips only
    (60, 60, 4_000, 10),    # orders then skips, sharing the part at the seam
    (1, 0, 10, 1),          # one order bigger than the bound still goes (alone)
])
def test_split_sizes(orders: int, skips: int, max_bytes: int, parts: int) -> None:
    whole = routed(orders, skips)
    payload = whole.SerializeToString()
    out = split_routed(whole, payload, max_bytes)
    assert len(out) == parts
    if parts == 1:
        assert out == [payload]
        return
    decoded = [epb.RoutedTrade.FromString(p) for p in out]
    assert [(p.part, p.parts) for p in decoded] == [(i, parts) for i in range(parts)]
    assert all(p.trade == TRADE for p in decoded)
    assert all(len(p) <= max_bytes for p in out)
    assert join_parts(decoded) == whole


def test_ten_thousand_followers_fit_in_parts_far_below_the_grpc_limit() -> None:
    whole = routed(10_000, 500)
    payload = whole.SerializeToString()
    assert len(payload) > 4 * 1024 * 1024  # over gRPC's message limit: this wedged every copy once
    out = split_routed(whole, payload)
    assert len(out) > 1 and all(len(p) <= MAX_PART_BYTES for p in out)
    assert split_routed(whole, payload) == out  # deterministic: a re-emit appends the same parts
    assert join_parts([epb.RoutedTrade.FromString(p) for p in out]) == whole


def test_join_of_a_whole_trade_is_itself() -> None:
    whole = routed(3)
    assert join_parts([whole]) is whole


@settings(max_examples=60, deadline=None)
@given(orders=st.integers(0, 300), skips=st.integers(0, 300), max_bytes=st.integers(200, 20_000),
       compact=st.booleans())
def test_parts_keep_every_order_and_skip_in_order(orders: int, skips: int, max_bytes: int, compact: bool) -> None:
    whole = routed(orders, skips, compact=compact)
    out = [epb.RoutedTrade.FromString(p) for p in split_routed(whole, whole.SerializeToString(), max_bytes)]
    assert join_parts(out) == whole
    if len(out) > 1:  # a part is within the bound unless one order or skip alone is bigger
        assert all(len(p.SerializeToString()) <= max_bytes or len(p.orders) + len(p.skips) == 1 for p in out)


@settings(max_examples=60, deadline=None)
@given(orders=st.integers(0, 300), skips=st.integers(0, 300), max_bytes=st.integers(200, 20_000),
       compact=st.booleans())
@example(orders=2, skips=0, max_bytes=938, compact=True)  # exactly max_bytes: one entry both ways
def test_parts_cut_from_the_bytes_are_the_parts_serialized_one_by_one(orders: int, skips: int,
                                                                      max_bytes: int, compact: bool) -> None:
    """The same bytes as serializing each part: a trade split before an upgrade is split the same after it."""
    whole = routed(orders, skips, compact=compact)
    payload = whole.SerializeToString()
    assert split_routed(whole, payload, max_bytes) == _split_messages(whole, payload, max_bytes)


@pytest.mark.parametrize("extra", [
    epb.RoutedTrade(part=1, parts=2),  # already a part
    epb.RoutedTrade(),  # no trade
])
def test_a_payload_that_is_not_a_plain_whole_trade_is_split_through_the_messages(extra: epb.RoutedTrade) -> None:
    whole = routed(50)
    if extra.parts:
        whole.part, whole.parts = extra.part, extra.parts
    else:
        whole.ClearField("trade")
    payload = whole.SerializeToString()
    assert split_routed(whole, payload, 4_000) == _split_messages(whole, payload, 4_000)


@pytest.mark.parametrize(("orders", "skips", "max_bytes"), [(100, 0, 4_000), (60, 60, 4_000), (3, 2, 100_000)])
def test_every_part_of_a_compact_trade_carries_the_common_fields(orders: int, skips: int, max_bytes: int) -> None:
    whole = routed(orders, skips, compact=True)
    parts = [epb.RoutedTrade.FromString(p) for p in split_routed(whole, whole.SerializeToString(), max_bytes)]
    assert all(p.common == COMMON for p in parts)
    assert [o for p in parts for o in expand(p).orders] == list(routed(orders, skips).orders)


def test_ten_thousand_compact_orders_take_under_a_third_of_the_bytes() -> None:
    """What sending the shared fields once buys a 10,000-follower fan-out: two parts instead of five."""
    compact = routed(10_000, compact=True)
    whole = routed(10_000)
    assert len(compact.SerializeToString()) < len(whole.SerializeToString()) / 3
    assert len(split_routed(compact, compact.SerializeToString())) == 2
    assert len(split_routed(whole, whole.SerializeToString())) == 5


@pytest.mark.parametrize("compact", [True, False])
def test_expand_makes_the_orders_whole_either_way(compact: bool) -> None:
    """An entry written before ``common`` existed holds whole orders: expanding it changes nothing."""
    got = expand(epb.RoutedTrade.FromString(routed(5, 2, compact=compact).SerializeToString()))
    assert got == routed(5, 2) and not got.HasField("common")
    assert shared_fields(routed(5, compact=compact)).asset_id == TRADE.asset_id
    assert shared_fields(routed(0)) is None
