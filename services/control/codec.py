"""Conversion between database rows and protobuf messages (pure).

Enums are stored as their short names (``ACTIVE``, ``TAKE_PROFIT``); config sub-messages as the
proto3 JSON of the message; money as numeric.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.types.json import Jsonb

from common.decimals import fmt
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb
from tradingtools.control.v1 import trigger_pb2 as tpb

Row = dict[str, Any]


def short(enum_type: Any, value: int) -> str:
    """``SUBSCRIPTION_STATE_ACTIVE`` → ``ACTIVE`` (the stored form)."""
    name: str = enum_type.Name(value)
    prefix = enum_type.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    return name.removeprefix(prefix)


def short_mode(mode: int) -> str:
    """An ``ExecutionMode`` as stored: ``LIVE`` / ``PAPER``."""
    return short(cpb.ExecutionMode, mode)


def full(enum_type: Any, stored: str) -> int:
    """``ACTIVE`` → ``SUBSCRIPTION_STATE_ACTIVE``'s number."""
    prefix = enum_type.DESCRIPTOR.values[0].name.removesuffix("UNSPECIFIED")
    return int(enum_type.Value(prefix + stored))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp_of(ts: datetime) -> Timestamp:
    """A protobuf Timestamp, exact to the microsecond (cheaper than ``FromDatetime``)."""
    delta = ts - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds, nanos=delta.microseconds * 1000)


def timestamp(ts: datetime | None) -> Timestamp | None:
    """Like :func:`timestamp_of`; None stays None."""
    return None if ts is None else timestamp_of(ts)


_DEC_CACHE: dict[Decimal | int | str, str] = {}


def dec(value: Decimal | int | str | None) -> str:
    """A numeric column as a canonical decimal string ("0" for NULL or zero); memoized (hot path)."""
    if not value:
        return "0"
    text = _DEC_CACHE.get(value)
    if text is None:
        if len(_DEC_CACHE) > 50_000:
            _DEC_CACHE.clear()
        text = _DEC_CACHE[value] = fmt(Decimal(value))
    return text


def _set_time(target: Timestamp, ts: datetime) -> None:
    delta = ts - _EPOCH
    target.seconds = delta.days * 86_400 + delta.seconds
    target.nanos = delta.microseconds * 1000


def to_json(msg: Message) -> dict[str, Any]:
    """The proto3 JSON object of a message (lowerCamelCase names)."""
    return json_format.MessageToDict(msg)


CONFIG_MESSAGES = ("sizing", "filters", "risk", "exits", "perf")


def config_bytes(sub: spb.Subscription) -> bytes:
    """The ``config_pb`` column: a Subscription holding only the config sub-messages."""
    cfg = spb.Subscription()
    for name in CONFIG_MESSAGES:
        getattr(cfg, name).CopyFrom(getattr(sub, name))
    cfg.perf.ClearField("applied_multiplier")
    return cfg.SerializeToString(deterministic=True)


_SUB_STATES = {short(spb.SubscriptionState, v): v for v in spb.SubscriptionState.values() if v}
_MODES = {short(cpb.ExecutionMode, v): v for v in cpb.ExecutionMode.values() if v}


def subscription_from_row(row: Row, into: spb.Subscription | None = None) -> spb.Subscription:
    """A Subscription (with live stats when the row carries them), decoded into ``into`` (a fresh
    message, e.g. ``response.subscriptions.add()``) when given. Hot path of the 500-row list."""
    sub = spb.Subscription() if into is None else into
    raw = row.get("config_pb")
    if raw is not None:
        sub.MergeFromString(raw)
    else:  # written before migration 0006: read the JSONB mirror
        config = row.get("config_json") or row
        for name in CONFIG_MESSAGES:
            json_format.ParseDict(config[name], getattr(sub, name), ignore_unknown_fields=True)
    sub.id = row["id"]
    sub.follower_user_id = row["follower_user_id"]
    sub.follower_wallet_id = row["follower_wallet_id"]
    sub.follower_proxy = row["follower_proxy"]
    sub.leader_proxy = row["leader_proxy"]
    sub.label = row["label"]
    sub.state = _SUB_STATES[row["state"]]  # type: ignore[assignment]
    sub.mode = _MODES[row["mode"]]  # type: ignore[assignment]
    sub.paused_reason = row["paused_reason"]
    _set_time(sub.create_time, row["create_time"])
    _set_time(sub.update_time, row["update_time"])
    if row.get("active_time") is not None:
        _set_time(sub.active_time, row["active_time"])
    sub.perf.applied_multiplier = dec(row["applied_multiplier"])
    stats = sub.stats
    stats.copied = row.get("copied") or 0
    stats.skipped = row.get("skipped") or 0
    stats.exposure_usd = dec(row.get("exposure_usd"))
    stats.realized_pnl_usd = dec(row.get("realized_pnl_usd"))
    stats.unrealized_pnl_usd = dec(row.get("unrealized_pnl_usd"))
    return sub


def zero_stats(sub: spb.Subscription) -> spb.Subscription:
    """``sub`` with the stats a subscription without a stats row reads back with (in place)."""
    sub.stats.CopyFrom(spb.Stats(exposure_usd="0", realized_pnl_usd="0", unrealized_pnl_usd="0"))
    return sub


def jsonb(value: Any) -> Jsonb:
    """A JSONB parameter, dumped with orjson."""
    return Jsonb(value, dumps=orjson.dumps)


def subscription_params(sub: spb.Subscription, doc: dict[str, Any] | None = None) -> Row:
    """Column values of a subscription (times included); ``doc`` is its :func:`audit_subscription`
    when the caller has it already (the JSONB mirrors are taken from it)."""
    if doc is None:
        doc = audit_subscription(sub)
    perf = {k: v for k, v in doc.get("perf", {}).items() if k != "appliedMultiplier"}
    return {
        "id": sub.id, "follower_user_id": sub.follower_user_id, "follower_wallet_id": sub.follower_wallet_id,
        "follower_proxy": sub.follower_proxy, "leader_proxy": sub.leader_proxy, "label": sub.label,
        "state": short(spb.SubscriptionState, sub.state), "mode": short(cpb.ExecutionMode, sub.mode),
        "sizing": jsonb(doc.get("sizing", {})), "filters": jsonb(doc.get("filters", {})),
        "risk": jsonb(doc.get("risk", {})), "exits": jsonb(doc.get("exits", {})), "perf": jsonb(perf),
        "config_pb": config_bytes(sub),
        "applied_multiplier": Decimal(sub.perf.applied_multiplier or "1"),
        "paused_reason": sub.paused_reason,
        "create_time": sub.create_time.ToDatetime(tzinfo=UTC),
        "update_time": sub.update_time.ToDatetime(tzinfo=UTC),
        "active_time": sub.active_time.ToDatetime(tzinfo=UTC) if sub.HasField("active_time") else None,
    }


def audit_subscription(sub: spb.Subscription) -> dict[str, Any]:
    """What the audit log keeps of a subscription: everything but the live stats (the proto3 JSON
    object of the hot-index copy, too: ``index_json`` of it equals ``hotindex.encode``)."""
    copy = spb.Subscription()
    copy.CopyFrom(sub)
    copy.ClearField("stats")
    return to_json(copy)


def trigger_from_row(row: Row, into: tpb.Trigger | None = None) -> tpb.Trigger:
    """A Trigger (decoded into ``into`` when given)."""
    t = tpb.Trigger(
        id=row["id"], wallet=row["wallet"], follower_wallet_id=row["follower_wallet_id"],
        subscription_id=row["subscription_id"] or "", asset_id=row["asset_id"],
        kind=full(tpb.TriggerKind, row["kind"]),  # type: ignore[arg-type]
        trigger_price=dec(row["trigger_price"]), trail_pct=dec(row["trail_pct"]),
        activation_price=dec(row["activation_price"]), size=dec(row["size"]),
        sell_fraction=dec(row["sell_fraction"]), oco_group=row["oco_group"],
        price_source=full(tpb.PriceSource, row["price_source"]),  # type: ignore[arg-type]
        state=full(tpb.TriggerState, row["state"]),  # type: ignore[arg-type]
        high_water_mark=dec(row["high_water_mark"]),
        source=full(tpb.TriggerSource, row["source"]),  # type: ignore[arg-type]
        create_time=timestamp(row["create_time"]), update_time=timestamp(row["update_time"]),
        fired_time=timestamp(row["fired_time"]), order_id=row["order_id"], state_reason=row["state_reason"],
    )
    if into is None:
        return t
    into.CopyFrom(t)
    return into


def trigger_params(t: tpb.Trigger) -> Row:
    """Column values of a trigger (times included)."""
    return {
        "id": t.id, "wallet": t.wallet, "follower_wallet_id": t.follower_wallet_id,
        "subscription_id": t.subscription_id or None, "asset_id": t.asset_id,
        "kind": short(tpb.TriggerKind, t.kind), "trigger_price": Decimal(t.trigger_price or "0"),
        "trail_pct": Decimal(t.trail_pct or "0"), "activation_price": Decimal(t.activation_price or "0"),
        "size": Decimal(t.size or "0"), "sell_fraction": Decimal(t.sell_fraction or "0"),
        "oco_group": t.oco_group, "price_source": short(tpb.PriceSource, t.price_source),
        "state": short(tpb.TriggerState, t.state), "state_reason": t.state_reason,
        "high_water_mark": Decimal(t.high_water_mark or "0"), "source": short(tpb.TriggerSource, t.source),
        "create_time": t.create_time.ToDatetime(tzinfo=UTC), "update_time": t.update_time.ToDatetime(tzinfo=UTC),
    }


def fill_from_row(row: Row, into: spb.Fill | None = None) -> spb.Fill:
    """A Fill (decoded into ``into`` when given)."""
    fill = spb.Fill(
        id=row["id"], subscription_id=row["subscription_id"] or "", order_id=row["order_id"],
        leader_trade_id=row["leader_trade_id"], leader_tx_hash=row["leader_tx_hash"],
        asset_id=row["asset_id"], condition_id=row["condition_id"], outcome=row["outcome"],
        side=full(cpb.Side, row["side"]),  # type: ignore[arg-type]
        size=dec(row["size"]), price=dec(row["price"]), notional_usd=dec(row["notional_usd"]),
        venue=full(cpb.Venue, row["venue"]),  # type: ignore[arg-type]
        fill_time=timestamp(row["fill_time"]), leader_trade_time=timestamp(row["leader_trade_time"]),
        copy_latency_ms="" if row["copy_latency_ms"] is None else dec(row["copy_latency_ms"]),
    )
    if into is None:
        return fill
    into.CopyFrom(fill)
    return into


def index_json(doc: dict[str, Any]) -> str:
    """The hot-index string of a subscription from its :func:`audit_subscription` object: exactly what
    ``common.hotindex.encode`` prints (``json_format.MessageToJson`` is ``json.dumps`` of that object),
    so the resync's string comparison still finds nothing to fix."""
    return json.dumps(doc)
