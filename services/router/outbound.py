"""Domain decisions → the ``RoutedTrade`` proto, and the reservations an emitted RoutedTrade makes.

Order fields the router fills (the executor relies on them). Each order: client_order_id, subscription_id,
follower_user_id, follower_wallet_id, follower_proxy, amount_usd (BUY only), size (SELL only; or sell_fraction
when the executor sizes the SELL after the wallet's copy BUY in flight), max_slippage_bps, mode, sizing_note.
Once, in ``RoutedTrade.common`` (:func:`order_template`; readers merge it into every order with
``common.routed.expand``): origin COPY, asset_id, condition_id, outcome, side, order_type FAK,
reference_price (the leader's price), tick_size, min_order_size, taker_fee_rate / taker_fee_exponent (the market's
taker fee, "" when none is known), neg_risk, leader_trade_id, leader_tx_hash, leader_venue_time_ms,
received_time_ns, routed_time_ns, trace. limit_price stays "" (the executor derives it
from the book).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from opentelemetry import trace

from common import reservations
from common.decimals import fmt, fmt_memo, parse_decimal
from common.protowire import read_varint, varint
from common.routed import shared_fields
from services.router.adapters.store import RoutedRow
from services.router.domain.model import Decision, Follower, LeaderTrade, MarketRules, OrderIntent, Reason, Skip
from services.router.domain.positions import leader_delta
from tradingtools.common.v1 import common_pb2
from tradingtools.execution.v1 import execution_pb2 as epb
from tradingtools.market.v1 import market_pb2 as mpb

_MODE = {"LIVE": common_pb2.EXECUTION_MODE_LIVE, "PAPER": common_pb2.EXECUTION_MODE_PAPER}


def market_of(condition_id: str, asset_id: str) -> str:
    """The market an exposure is counted against: the condition id (the asset id when unknown)."""
    return condition_id or asset_id


def trace_context(span: trace.Span, fallback: common_pb2.TraceContext) -> common_pb2.TraceContext:
    """The W3C context of ``span`` (what ``common.telemetry.inject`` writes inside it, without making it
    current), or ``fallback`` when tracing is off."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return fallback
    ctx = common_pb2.TraceContext(traceparent=f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}")
    if sc.trace_state:
        ctx.tracestate = sc.trace_state.to_header()
    return ctx


def order_template(event: mpb.LeaderTradeEvent, market: MarketRules | None, routed_time_ns: int,
                   trace: common_pb2.TraceContext) -> epb.Order:
    """The fields every copy order of one leader trade shares (the condition id of the token's market when the trade
    came without one: the executor books the copies' positions under it)."""
    return epb.Order(
        origin=epb.ORDER_ORIGIN_COPY, asset_id=event.asset_id,
        condition_id=event.condition_id.lower() or (market.condition_id.lower() if market else ""),
        outcome=event.outcome, side=event.side, order_type=epb.ORDER_TYPE_FAK,
        reference_price=event.price,
        tick_size=fmt_memo(market.tick_size) if market else "",
        min_order_size=fmt_memo(market.min_order_size) if market else "",
        taker_fee_rate=fmt_memo(market.taker_fee.rate) if market and market.taker_fee else "",
        taker_fee_exponent=fmt_memo(market.taker_fee.exponent) if market and market.taker_fee else "",
        neg_risk=market.neg_risk if market else False,
        leader_trade_id=event.id, leader_tx_hash=event.tx_hash,
        leader_venue_time_ms=event.venue_time_ms, received_time_ns=event.received_time_ns,
        routed_time_ns=routed_time_ns, trace=trace,
    )


def build_routed(event: mpb.LeaderTradeEvent, decisions: Sequence[Decision],
                 followers: Mapping[str, Follower], template: epb.Order) -> epb.RoutedTrade:
    """One RoutedTrade: the trade, one Order per intent (its follower's own fields) with ``template`` as their
    common fields, one Skip per skip (followers keyed by subscription id)."""
    routed = epb.RoutedTrade(trade=event)
    orders = routed.orders
    skips = routed.skips
    for d in decisions:
        if isinstance(d, OrderIntent):
            f = followers[d.subscription_id]
            orders.add(client_order_id=d.client_order_id, subscription_id=d.subscription_id,
                       follower_user_id=f.follower_user_id, follower_wallet_id=d.follower_wallet_id,
                       follower_proxy=f.follower_proxy,
                       amount_usd=fmt(d.amount_usd) if d.amount_usd is not None else "",
                       size=fmt(d.size) if d.size is not None else "",
                       sell_fraction=fmt(d.sell_fraction) if d.sell_fraction is not None else "",
                       max_slippage_bps=d.max_slippage_bps, mode=_MODE[f.mode],
                       sizing_note=d.note)
        elif isinstance(d, Skip):
            skips.add(subscription_id=d.subscription_id, follower_wallet_id=d.follower_wallet_id,
                      reason=d.reason.value, detail=d.detail)
    if orders:
        routed.common.CopyFrom(template)
    return routed


def routed_row(routed: epb.RoutedTrade, payload: bytes, trade: LeaderTrade | None,
               cursor: str | None) -> RoutedRow:
    """The PostgreSQL rows of one RoutedTrade as emitted (``trade`` parsed from ``routed.trade``, None when
    invalid; ``cursor`` where it was appended)."""
    event = routed.trade
    row = RoutedRow(leader_trade_id=event.id, leader_wallet=event.wallet.lower(), asset_id=event.asset_id,
                    condition_id=event.condition_id.lower(), side=trade.side.value if trade else "UNKNOWN",
                    payload=payload, leader_delta=leader_delta(trade.side, trade.size) if trade else None,
                    orders=len(routed.orders), appended_cursor=cursor)
    for k in routed.skips:
        row.skip_subs.append(k.subscription_id)
        row.skip_wallets.append(k.follower_wallet_id)
        row.skip_reasons.append(k.reason)
        row.skip_details.append(k.detail)
    return row


def _micro(text: str) -> int:
    """Micro-units an order reserves: a SELL sized by the executor later (``sell_fraction``) reserves none."""
    return reservations.to_micro(parse_decimal(text)) if text else 0


def reservations_of(routed: epb.RoutedTrade) -> list[reservations.Reservation]:
    """What each order of a RoutedTrade reserves (derived from the orders alone, so a re-emit after a
    crash reserves exactly the same)."""
    out: list[reservations.Reservation] = []
    first = shared_fields(routed)
    if first is None or not routed.orders:
        return out
    buy = first.side == common_pb2.SIDE_BUY  # every order of a RoutedTrade has the leader trade's side
    kind = reservations.USD if buy else reservations.SHARES
    key = market_of(first.condition_id, first.asset_id) if buy else first.asset_id
    owner = first.leader_trade_id
    for o in routed.orders:
        out.append(reservations.Reservation(o.client_order_id, o.follower_wallet_id, kind, key,
                                            _micro(o.amount_usd if buy else o.size),
                                            owner))
    return out


def reservation_lines(routed: epb.RoutedTrade) -> str:
    """:func:`reservations_of` as the emit script's argument (``reservations.lines`` of it), built without
    an object per order."""
    first = shared_fields(routed)
    if first is None or not routed.orders:
        return ""
    buy = first.side == common_pb2.SIDE_BUY
    micros: dict[str, int] = {}  # followers of one trade mostly share a few amounts

    def rows() -> Iterator[tuple[str, str, int]]:
        for o in routed.orders:
            text = o.amount_usd if buy else o.size
            micro = micros.get(text)
            if micro is None:
                micro = micros[text] = _micro(text)
            yield o.client_order_id, o.follower_wallet_id, micro

    return reservations.lines_for(reservations.USD if buy else reservations.SHARES,
                                  market_of(first.condition_id, first.asset_id) if buy else first.asset_id,
                                  first.leader_trade_id, rows())


def sell_subscriptions(routed: epb.RoutedTrade) -> str:
    """The subscription of each order of a SELL RoutedTrade, one per line in the order of
    :func:`reservation_lines` (the SELL index keeps them); "" for a BUY."""
    first = shared_fields(routed)
    if first is None or first.side == common_pb2.SIDE_BUY:
        return ""
    return "\n".join(o.subscription_id for o in routed.orders)


def drop_orders(routed: epb.RoutedTrade, indexes: Sequence[int], detail: str) -> epb.RoutedTrade:
    """A copy of ``routed`` without the orders at ``indexes``, each turned into a DUPLICATE_ORDER skip."""
    gone = set(indexes)
    out = epb.RoutedTrade(trade=routed.trade)
    if routed.HasField("common"):
        out.common.CopyFrom(routed.common)
    out.skips.extend(routed.skips)
    for i, o in enumerate(routed.orders):
        if i in gone:
            out.skips.add(subscription_id=o.subscription_id, follower_wallet_id=o.follower_wallet_id,
                          reason=Reason.DUPLICATE_ORDER.value, detail=f"{o.client_order_id}: {detail}")
        else:
            out.orders.append(o)
    return out


MAX_PART_BYTES = 1 << 20  # a RoutedTrade part stays far below gRPC's 4 MiB message limit, whatever the fan-out


def _field_bytes(n: int) -> int:
    """Bytes a length-delimited field of ``n`` bytes takes in its parent (tag, length, body)."""
    return 1 + (n.bit_length() + 6) // 7 + n if n else 2


def _top_fields(payload: bytes) -> tuple[bytes, list[bytes], list[bytes], bytes] | None:
    """A serialized RoutedTrade cut into its fields as they are on the wire (the trade's, each order's, each
    skip's, the orders' common fields: tag, length and body); None when it has no trade or holds anything else
    (a part number, an unknown field)."""
    trade = common = b""
    orders: list[bytes] = []
    skips: list[bytes] = []
    pos, end = 0, len(payload)
    while pos < end:
        start = pos
        tag, pos = read_varint(payload, pos)
        if tag & 7 != 2:
            return None
        size, pos = read_varint(payload, pos)
        pos += size
        if pos > end:
            return None
        field = payload[start:pos]
        if tag == 0x0A and not trade:
            trade = field
        elif tag == 0x12:
            orders.append(field)
        elif tag == 0x1A:
            skips.append(field)
        elif tag == 0x32 and not common:
            common = field
        else:
            return None
    return (trade, orders, skips, common) if trade else None


def split_routed(routed: epb.RoutedTrade, payload: bytes, max_bytes: int = MAX_PART_BYTES) -> list[bytes]:
    """The durable-log entries of one routed trade: ``[payload]`` when it fits in ``max_bytes``, else parts of at
    most about ``max_bytes`` each (the trade, a run of the orders, then of the skips, ``part`` / ``parts`` set), in
    order. Deterministic: the same RoutedTrade always splits the same way (a re-emit appends the same parts).

    The parts are cut from ``payload``'s bytes (what serializing each part would give, field by field, for a
    tenth of the CPU: a 10,000-follower fan-out took 20 ms to serialize its parts again)."""
    if len(payload) <= max_bytes:
        return [payload]
    fields = _top_fields(payload)
    if fields is None:
        return _split_messages(routed, payload, max_bytes)
    trade, orders, skips, common = fields
    room = max(max_bytes - len(trade) - len(common) - 12, 1)  # the trade, common fields, part / parts
    groups: list[tuple[list[bytes], list[bytes]]] = [([], [])]
    used = 0
    for kind, items in ((0, orders), (1, skips)):
        for item in items:
            if used and used + len(item) > room:
                groups.append(([], []))
                used = 0
            groups[-1][kind].append(item)
            used += len(item)
    if len(groups) == 1:
        return [payload]
    count = b"\x28" + varint(len(groups))
    return [b"".join((trade, *group_orders, *group_skips, b"\x20" + varint(i) if i else b"", count, common))
            for i, (group_orders, group_skips) in enumerate(groups)]


def _split_messages(routed: epb.RoutedTrade, payload: bytes, max_bytes: int) -> list[bytes]:
    """:func:`split_routed` through the messages (a payload that is not a plain whole RoutedTrade)."""
    if len(payload) <= max_bytes:
        return [payload]
    base = _field_bytes(routed.trade.ByteSize()) + 12  # the trade, and room for part / parts
    if routed.HasField("common"):
        base += _field_bytes(routed.common.ByteSize())
    room = max(max_bytes - base, 1)
    groups: list[tuple[list[epb.Order], list[epb.Skip]]] = [([], [])]
    used = 0
    for o in routed.orders:
        n = _field_bytes(o.ByteSize())
        if used and used + n > room:
            groups.append(([], []))
            used = 0
        groups[-1][0].append(o)
        used += n
    for k in routed.skips:
        n = _field_bytes(k.ByteSize())
        if used and used + n > room:
            groups.append(([], []))
            used = 0
        groups[-1][1].append(k)
        used += n
    if len(groups) == 1:
        return [payload]
    out: list[bytes] = []
    for i, (orders, skips) in enumerate(groups):
        part = epb.RoutedTrade(trade=routed.trade, part=i, parts=len(groups))
        if routed.HasField("common"):
            part.common.CopyFrom(routed.common)
        part.orders.extend(orders)
        part.skips.extend(skips)
        out.append(part.SerializeToString())
    return out


def join_parts(parts: Sequence[epb.RoutedTrade]) -> epb.RoutedTrade:
    """The whole RoutedTrade from its parts in order (a whole one is returned as it is; every part carries the
    same common fields)."""
    if len(parts) == 1 and parts[0].parts <= 1:
        return parts[0]
    whole = epb.RoutedTrade(trade=parts[0].trade)
    if parts[0].HasField("common"):
        whole.common.CopyFrom(parts[0].common)
    for p in parts:
        whole.orders.extend(p.orders)
        whole.skips.extend(p.skips)
    return whole
