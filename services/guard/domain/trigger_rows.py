"""Trigger rows as guard reads them from PostgreSQL, and their mapping to engine specs and protos (pure)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from common.decimals import ZERO, fmt
from common.ids import hash_id
from services.guard.domain.trigger_model import Kind, Origin, Source, State, TriggerSpec, is_closing, live_mark
from tradingtools.control.v1 import trigger_pb2 as tpb
from tradingtools.guard.v1 import guard_pb2 as gpb

SPEC_COLUMNS = ("id", "asset_id", "kind", "price_source", "trigger_price", "trail_pct", "activation_price",
                "high_water_mark", "oco_group", "size", "sell_fraction", "wallet", "follower_wallet_id")


@dataclass(frozen=True, slots=True)
class TriggerRow:
    """One row of the ``triggers`` table (control's columns plus guard's)."""

    id: str
    wallet: str
    follower_wallet_id: str
    subscription_id: str
    asset_id: str
    kind: Kind
    trigger_price: Decimal
    trail_pct: Decimal
    activation_price: Decimal
    size: Decimal
    sell_fraction: Decimal
    oco_group: str
    price_source: Source
    state: State
    state_reason: str
    high_water_mark: Decimal
    source: Origin
    order_id: str
    fire_count: int
    version: int
    create_time: datetime | None
    update_time: datetime | None
    fired_time: datetime | None
    fire_price: Decimal = ZERO
    fire_size: Decimal = ZERO
    filled_size: Decimal = ZERO
    submitted_at: datetime | None = None
    fire_order: bytes | None = None

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> TriggerRow:
        """From a ``SELECT *`` dict row."""
        return cls(
            id=r["id"], wallet=r["wallet"], follower_wallet_id=r["follower_wallet_id"],
            subscription_id=r["subscription_id"] or "", asset_id=r["asset_id"], kind=Kind(r["kind"]),
            trigger_price=r["trigger_price"], trail_pct=r["trail_pct"], activation_price=r["activation_price"],
            size=r["size"], sell_fraction=r["sell_fraction"], oco_group=r["oco_group"],
            price_source=Source(r["price_source"]), state=State(r["state"]), state_reason=r["state_reason"],
            high_water_mark=r["high_water_mark"], source=Origin(r["source"]), order_id=r["order_id"],
            fire_count=r["fire_count"], version=r["version"], create_time=r["create_time"],
            update_time=r["update_time"], fired_time=r["fired_time"],
            fire_price=r.get("fire_price", ZERO), fire_size=r.get("fire_size", ZERO),
            filled_size=r.get("filled_size", ZERO), submitted_at=r.get("submitted_at"),
            fire_order=r.get("fire_order"),
        )

    def spec(self) -> TriggerSpec:
        """What the engine watches (a stored mark below the activation price is no mark: :func:`live_mark`)."""
        mark = live_mark(self.high_water_mark, self.activation_price)
        return TriggerSpec(self.id, self.asset_id, self.kind, self.price_source, self.trigger_price,
                           self.trail_pct, self.activation_price, mark, self.oco_group,
                           is_closing(self.size, self.sell_fraction), self.wallet, self.follower_wallet_id)


_KIND_OF = {k.value: k for k in Kind}
_SOURCE_OF = {s.value: s for s in Source}


def spec_from_tuple(t: tuple[Any, ...]) -> TriggerSpec:
    """A spec from a tuple row in ``SPEC_COLUMNS`` order (the bulk start-up load).

    Asset ids, wallets and OCO groups are interned and zero decimals shared: 100,000 specs hold far fewer objects.
    A mark below the activation price is no mark (:func:`live_mark`). A row without the wallet columns is on no
    wallet.
    """
    tid, asset, kind, source, price, trail, activation, mark, group, size, fraction = t[:11]
    wallet, wallet_id = t[11:] or ("", "")
    activation = activation or ZERO
    mark = mark if mark and mark >= activation else ZERO  # live_mark, inline: the hot loop of the load
    return TriggerSpec(tid, sys.intern(asset), _KIND_OF[kind], _SOURCE_OF[source], price or ZERO, trail or ZERO,
                       activation, mark, sys.intern(group) if group else "", size > 0 or fraction >= 1,
                       sys.intern(wallet), sys.intern(wallet_id))


def client_order_id(trigger_id: str, fire_no: int) -> str:
    """The SELL's client order id: the same for the same fire, whoever sends it and how often."""
    return hash_id("co", trigger_id, str(fire_no))


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    out = Timestamp()
    out.FromDatetime(value)
    return out


_KINDS = {Kind.TAKE_PROFIT: tpb.TRIGGER_KIND_TAKE_PROFIT, Kind.STOP_LOSS: tpb.TRIGGER_KIND_STOP_LOSS,
          Kind.TRAILING_STOP: tpb.TRIGGER_KIND_TRAILING_STOP}
_SOURCES = {Source.BEST_BID: tpb.PRICE_SOURCE_BEST_BID, Source.MID: tpb.PRICE_SOURCE_MID,
            Source.LAST_TRADE: tpb.PRICE_SOURCE_LAST_TRADE}
_STATES = {State.ARMED: tpb.TRIGGER_STATE_ARMED, State.FIRED: tpb.TRIGGER_STATE_FIRED,
           State.DONE: tpb.TRIGGER_STATE_DONE, State.FAILED: tpb.TRIGGER_STATE_FAILED,
           State.CANCELLED: tpb.TRIGGER_STATE_CANCELLED}
_ORIGINS = {Origin.MANUAL: tpb.TRIGGER_SOURCE_MANUAL, Origin.COPY: tpb.TRIGGER_SOURCE_COPY}


def to_proto(row: TriggerRow) -> tpb.Trigger:
    """The Trigger message of a row."""
    return tpb.Trigger(
        id=row.id, wallet=row.wallet, follower_wallet_id=row.follower_wallet_id,
        subscription_id=row.subscription_id, asset_id=row.asset_id, kind=_KINDS[row.kind],
        trigger_price=fmt(row.trigger_price), trail_pct=fmt(row.trail_pct),
        activation_price=fmt(row.activation_price), size=fmt(row.size), sell_fraction=fmt(row.sell_fraction),
        oco_group=row.oco_group, price_source=_SOURCES[row.price_source], state=_STATES[row.state],
        high_water_mark=fmt(row.high_water_mark), source=_ORIGINS[row.source],
        create_time=_ts(row.create_time), update_time=_ts(row.update_time), fired_time=_ts(row.fired_time),
        order_id=row.order_id, state_reason=row.state_reason,
    )


EVENT_TYPES = {
    "ARMED": gpb.TRIGGER_EVENT_TYPE_ARMED, "UPDATED": gpb.TRIGGER_EVENT_TYPE_UPDATED,
    "FIRED": gpb.TRIGGER_EVENT_TYPE_FIRED, "DONE": gpb.TRIGGER_EVENT_TYPE_DONE,
    "FAILED": gpb.TRIGGER_EVENT_TYPE_FAILED, "CANCELLED": gpb.TRIGGER_EVENT_TYPE_CANCELLED,
    "HELD_STALE": gpb.TRIGGER_EVENT_TYPE_HELD_STALE,
}


def event(row: TriggerRow, kind: str, *, reason: str, price: Decimal | None = None, venue_time_ms: int = 0,
          received_time_ns: int = 0) -> gpb.TriggerEvent:
    """The TriggerEvent for a change; its id is derived from (trigger, type, row version) so a replay dedupes."""
    return gpb.TriggerEvent(
        event_id=hash_id("tev", row.id, kind, str(row.version)), type=EVENT_TYPES[kind], trigger=to_proto(row),
        price=fmt(price) if price is not None else "", reason=reason, venue_time_ms=venue_time_ms,
        received_time_ns=received_time_ns,
    )
